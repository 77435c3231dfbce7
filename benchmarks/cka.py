"""Benchmark: K x K linear CKA matrix, reprflow.metrics.cka_matrix vs the pairwise loop.

The baseline is the loop a user writes with Kornblith's notebook functions or
torch-cka: for every pair of states (k, l), build both linear Grams, centre them and
take three HSICs (k-l, k-k, l-l); nothing is shared between pairs. It runs in float64
with torch on the same device as ours, over the K (K + 1) / 2 pairs of the upper
triangle (torch-cka loops over all K^2; that is 2x slower still). Where timing every
pair would take too long, ``--baseline-pairs`` pairs are timed and the total is
extrapolated (pairs cost the same); the table says so.

Ours: one centred Gram per state and one matrix product per row block
(``cka_matrix``), and both biased + debiased from the same pass (``cka_matrices``).
Both contestants start from the float16 states already on the device; the column
"from host numpy" times ``cka_matrix(numpy_array, device=...)``, transfer included.
The values of the timed baseline pairs are checked against our matrix.

Usage::

    python benchmarks/cka.py                                  # CPU, reduced sizes
    python benchmarks/cka.py --device cuda --sizes 65,2048,2560 65,4096,2560
    python benchmarks/cka.py --markdown benchmarks/out/cka_cpu.md

Sizes are ``K,n,d`` (n_states, n_tokens, hidden). Input is float16, as stored.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from collections.abc import Callable

import numpy as np
import torch

from reprflow.metrics import cka_matrices, cka_matrix


def naive_pair_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """One pair, the way the notebook / torch-cka do it: two Grams, centre, three HSICs."""

    def centre(g: torch.Tensor) -> torch.Tensor:
        means = g.mean(dim=0)
        means = means - means.mean() / 2
        return g - means[:, None] - means[None, :]

    gx = centre(x @ x.T)
    gy = centre(y @ y.T)
    return float((gx * gy).sum() / torch.sqrt((gx * gx).sum() * (gy * gy).sum()))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, object]:
    """Best wall time of ``repeats`` runs (after the first, which warms up on CUDA)."""
    out = fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def make_states(k: int, n: int, d: int, *, seed: int) -> np.ndarray:
    """A random walk over states (neighbours similar, like a residual stream), float16."""
    rng = np.random.default_rng(seed)
    h = np.empty((k, n, d), dtype=np.float16)
    state = rng.standard_normal((n, d), dtype=np.float32)
    for i in range(k):
        state += 0.3 * rng.standard_normal((n, d), dtype=np.float32)
        h[i] = state
    return h


def run_size(
    k: int,
    n: int,
    d: int,
    *,
    device: torch.device,
    baseline_pairs: int | None,
    seed: int,
    repeats: int,
) -> dict:
    h = make_states(k, n, d, seed=seed)
    states = torch.from_numpy(h).to(device)  # both contestants start from the device copy
    t_ours, mat = _timed(lambda: cka_matrix(states), device, repeats)
    t_both, _ = _timed(lambda: cka_matrices(states), device, repeats)
    t_host, _ = _timed(lambda: cka_matrix(h, device=device), device, repeats)
    row = {"K": k, "n": n, "d": d, "ours_s": t_ours, "ours_both_s": t_both, "ours_host_s": t_host}
    if baseline_pairs == 0:
        return row
    pairs = [(a, b) for a in range(k) for b in range(a, k)]
    rng = np.random.default_rng(seed)
    timed = (
        pairs
        if baseline_pairs is None or baseline_pairs >= len(pairs)
        else [pairs[i] for i in rng.choice(len(pairs), size=baseline_pairs, replace=False)]
    )
    naive_pair_cka(states[0].double(), states[1].double())  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    values = [naive_pair_cka(states[a].double(), states[b].double()) for a, b in timed]
    _sync(device)
    per_pair = (time.perf_counter() - t0) / len(timed)
    err = max(abs(v - mat[a, b]) for v, (a, b) in zip(values, timed))
    row.update(
        naive_s=per_pair * len(pairs),
        naive_timed_pairs=len(timed),
        n_pairs=len(pairs),
        speedup=per_pair * len(pairs) / t_ours,
        max_abs_diff=err,
    )
    return row


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores "
        f"(torch threads {torch.get_num_threads()}), torch {torch.__version__}"
    )


def format_table(rows: list[dict]) -> str:
    head = (
        "| K | n | d | pairwise loop (s) | timed pairs | cka_matrix (s) | speedup | "
        "biased+debiased (s) | from host numpy (s) | max abs diff |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        if "naive_s" in r:
            note = (
                "all"
                if r["naive_timed_pairs"] == r["n_pairs"]
                else (f"{r['naive_timed_pairs']} of {r['n_pairs']}, extrapolated")
            )
            naive, speed, diff = f"{r['naive_s']:.2f}", f"{r['speedup']:.0f}x", f"{r['max_abs_diff']:.1e}"
        else:
            note, naive, speed, diff = "not run", "-", "-", "-"
        lines.append(
            f"| {r['K']} | {r['n']} | {r['d']} | {naive} | {note} | {r['ours_s']:.3f} | "
            f"{speed} | {r['ours_both_s']:.3f} | {r['ours_host_s']:.3f} | {diff} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--sizes", nargs="+", default=["65,512,256", "25,2048,2560"], help="K,n,d triples")
    parser.add_argument(
        "--baseline-pairs", type=int, default=64, help="pairs of the pairwise loop to time (0: skip; -1: all)"
    )
    parser.add_argument(
        "--ours-only", nargs="*", default=[], help="K,n,d triples timed for cka_matrix only (e.g. the paper size)"
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (1 gives stable ratios on a shared, loaded CPU)"
    )
    parser.add_argument("--markdown", help="also write the table (with machine/date) here")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False  # exact float64 anyway; be explicit

    rows = []
    for spec, pairs in [(s, args.baseline_pairs) for s in args.sizes] + [(s, 0) for s in args.ours_only]:
        k, n, d = (int(v) for v in spec.split(","))
        rows.append(
            run_size(
                k,
                n,
                d,
                device=device,
                seed=args.seed,
                repeats=args.repeats,
                baseline_pairs=None if pairs == -1 else pairs,
            )
        )
        print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    table = format_table(rows)
    print()
    print(table)
    if args.markdown:
        stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        command = "python benchmarks/cka.py " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(v) if isinstance(v, list) else v}"
            for k, v in vars(args).items()
            if v not in (None, []) and k != "markdown"
        )
        text = f"Machine: {_machine(device)}\n\nDate: {stamp}\n\nCommand: `{command}`\n\n{table}\n"
        os.makedirs(os.path.dirname(os.path.abspath(args.markdown)), exist_ok=True)
        with open(args.markdown, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
