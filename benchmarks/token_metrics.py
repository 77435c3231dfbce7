"""Benchmark: token metrics. (1) inter-token cosine, O(n d) identity vs the O(n^2 d) pairwise
definition a user would write; (2) throughput of the whole stage
(reprflow.pipeline.token_metrics.compute_token_metrics) on a synthetic store.

(1) The baseline normalises the tokens of each state, forms the n x n cosine matrix
U U^T and averages its upper triangle (float64, same device). Ours:
``inter_token_cosine`` (|sum u|^2 - n) / (n (n - 1)).

(2) Writes a contract-shaped store (docs/CONTRACTS.md; uncompressed, float16) with
``--prompts`` prompts of n tokens and K_all = K + 1 states, then times the stage for
both views (hf, residual; biased + debiased CKA) and reports tokens/s.

Usage::

    python benchmarks/token_metrics.py                           # CPU, reduced sizes
    python benchmarks/token_metrics.py --device cuda --sizes 65,2048,2560 \
        --stage-size 65,2048,2560 --prompts 4
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr

from reprflow import __version__
from reprflow.metrics import inter_token_cosine
from reprflow.pipeline.token_metrics import compute_token_metrics


def naive_inter_token(h: torch.Tensor) -> torch.Tensor:
    """Mean cos(h_i, h_j) over i < j per state, from the full n x n cosine matrix."""
    out = []
    n = h.shape[1]
    iu = torch.triu_indices(n, n, offset=1, device=h.device)
    for state in h:
        u = torch.nn.functional.normalize(state.double(), dim=1)
        cos = u @ u.T
        out.append(cos[iu[0], iu[1]].mean())
    return torch.stack(out)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device) -> tuple[float, object]:
    fn()  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def make_states(k: int, n: int, d: int, *, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = np.empty((k, n, d), dtype=np.float16)
    state = rng.standard_normal((n, d), dtype=np.float32) + 1.0
    for i in range(k):
        state += 0.3 * rng.standard_normal((n, d), dtype=np.float32)
        h[i] = state
    return h


def bench_inter_token(k: int, n: int, d: int, device: torch.device) -> dict:
    h = torch.from_numpy(make_states(k, n, d, seed=0)).to(device)
    t_naive, ref = _time(lambda: naive_inter_token(h), device)
    t_ours, ours = _time(lambda: inter_token_cosine(h), device)
    diff = float(np.max(np.abs(ours - ref.cpu().numpy())))
    return {
        "K": k,
        "n": n,
        "d": d,
        "naive_s": t_naive,
        "ours_s": t_ours,
        "speedup": t_naive / t_ours,
        "max_abs_diff": diff,
    }


def write_store(path: Path, k_all: int, n_prompts: int, n: int, d: int) -> None:
    """Contract-shaped store: residual view = states 0..K_all-2, hf = 0..K_all-3 + final."""
    group = zarr.create_group(store=str(path), zarr_format=3)
    tokens = group.create_array(
        "tokens",
        shape=(k_all, n_prompts, n, d),
        dtype="float16",
        chunks=(1, 1, min(n, 1024), d),
        compressors=None,
        dimension_names=("n_states", "n_prompts", "n_tokens", "hidden"),
    )
    for i in range(n_prompts):
        tokens[:, i] = make_states(k_all, n, d, seed=i)
    small = {
        "last": (np.zeros((k_all, 1, d), np.float16), ("n_states", "n_samples", "hidden")),
        "labels": (np.zeros(1, np.int64), ("n_samples",)),
        "n_tokens": (np.full(1, n, np.int64), ("n_samples",)),
        "lengths": (np.full(n_prompts, n, np.int64), ("n_prompts",)),
    }
    for name, (data, dims) in small.items():
        group.create_array(name, data=data, dimension_names=dims)
    names = ["embed", *[f"block_{i}" for i in range(1, k_all - 1)], "final_norm"]
    group.attrs.update(
        {
            "model": "synthetic",
            "model_id": "synthetic",
            "revision": None,
            "family": "gpt_neo",
            "init": {"scheme": "gaussian"},
            "dtype": "float16",
            "task": "kvpr",
            "length": n,
            "tokenizer": "none",
            "prompt_file": "none",
            "prompt_sha256": "0" * 64,
            "reprflow_version": __version__,
            "state_names": names,
            "views": {"residual": list(range(k_all - 1)), "hf": [*range(k_all - 2), k_all - 1]},
            "token_prompt_ids": list(range(n_prompts)),
            "complete": True,
        }
    )


def bench_stage(k: int, n: int, d: int, n_prompts: int, device: torch.device) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "bench.zarr"
        write_store(store, k + 1, n_prompts, n, d)
        t0 = time.perf_counter()
        compute_token_metrics(store, Path(tmp) / "out", device=device)
        elapsed = time.perf_counter() - t0
    return {
        "K": k,
        "n": n,
        "d": d,
        "prompts": n_prompts,
        "stage_s": elapsed,
        "s_per_prompt": elapsed / n_prompts,
        "tokens_per_s": n * n_prompts / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", nargs="+", default=["25,1024,512"], help="K,n,d for (1)")
    parser.add_argument("--stage-size", default="13,512,256", help="K,n,d for (2); '' skips")
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--markdown", help="also write the tables (with machine/date) here")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    lines = [
        "Inter-token cosine (all K states of one prompt):",
        "",
        "| K | n | d | pairwise n x n (s) | O(n d) identity (s) | speedup | max abs diff |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec in args.sizes:
        r = bench_inter_token(*(int(v) for v in spec.split(",")), device)
        lines.append(
            f"| {r['K']} | {r['n']} | {r['d']} | {r['naive_s']:.3f} | {r['ours_s']:.4f} | "
            f"{r['speedup']:.0f}x | {r['max_abs_diff']:.1e} |"
        )
        print(lines[-1], flush=True)
    if args.stage_size:
        k, n, d = (int(v) for v in args.stage_size.split(","))
        r = bench_stage(k, n, d, args.prompts, device)
        lines += [
            "",
            "Whole stage (2 views, all metrics incl. biased + debiased CKA; read included):",
            "",
            "| K | n | d | prompts | total (s) | s / prompt | tokens / s |",
            "|---|---|---|---|---|---|---|",
            f"| {k} | {n} | {d} | {r['prompts']} | {r['stage_s']:.2f} | {r['s_per_prompt']:.2f} | "
            f"{r['tokens_per_s']:.0f} |",
        ]
    table = "\n".join(lines)
    print()
    print(table)
    if args.markdown:
        machine = (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else f"{platform.machine()}, {os.cpu_count()} CPU cores"
        )
        stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        os.makedirs(os.path.dirname(os.path.abspath(args.markdown)), exist_ok=True)
        with open(args.markdown, "w") as fh:
            fh.write(
                f"Machine: {machine}, torch {torch.__version__}\n\nDate: {stamp}\n\n"
                f"Command: `python benchmarks/token_metrics.py --device {args.device} --sizes "
                f"{' '.join(args.sizes)} --stage-size '{args.stage_size}' --prompts {args.prompts}"
                f"{f' --threads {args.threads}' if args.threads else ''}`\n\n"
                f"{table}\n"
            )


if __name__ == "__main__":
    main()
