"""Training throughput of the matched suite (config/matched.yaml) on one GPU, against the bf16
roofline, with the Mamba-1 training paths side by side.

One command, one table. For each family (GPT-Neo, GPT-NeoX, Mamba, Mamba2 built by
``reprflow.training.loop.build_config`` from the recipe of config/matched.yaml: width 384,
8 Transformer layers / 15 SSM blocks, ~33.5M parameters, context 1024, batch 64) it runs
the training loop's own step, :func:`reprflow.training.loop.train_step` (bf16 autocast on
CUDA, full-vocabulary cross-entropy, backward, clipping, fused AdamW from ``_optimizer``), on
the loop's batches (``_windows`` / ``_batch``), ``--warmup`` untimed steps (each synchronised)
then ``--steps`` timed ones back to back, as the loop runs them (ms/step = their mean). Each
family first runs the naive step a user would write (transformers' forward and attention, full
logits, ``F.cross_entropy``; ``--no-naive`` skips it), then ``train_model``'s (GPT-Neo through the
project's SDPA attention, the chunked head of :mod:`reprflow.training.head_loss`). Model
preparation is ``train_model``'s,
:func:`reprflow.training.kernels.prepare_training`; for Mamba-1 every path of
:data:`~reprflow.training.kernels.MAMBA1_PATHS` that this machine has:

* ``hf-mamba_ssm``: transformers' forward with mamba_ssm's fused compiled ``mamba_inner_fn``
  (only where ``selective_scan_cuda`` and ``causal_conv1d`` import);
* ``reprflow-mamba_ssm-scan``: the project's mixer forward with mamba_ssm's compiled
  ``selective_scan_fn`` and the torch conv (only where ``selective_scan_cuda`` imports);
* ``reprflow-autograd``: the project's mixer forward with ``selective_scan_autograd``
  (time-major torch, a loop over the tokens with ``unbind``);
* ``hf-torch``: transformers' own torch fallback, in a subprocess whose imports refuse the
  compiled packages (as benchmarks/kernels.py). It is slow (its backward is O(context^2)), so
  it runs first at ``batch / 16`` (``--quick``: the full batch) for one warm-up and one timed
  step, and at the full batch only if that extrapolates to at most ``--hf-limit-s`` s per step.

A row that runs out of GPU memory is retried at half the batch (the table gives the batch).

Roofline: FLOPs per token = ``6 * N_mm + 12 * L_attn * context * width``
(:func:`reprflow.training.sizing.train_flops_per_token`: ``N_mm`` = non-embedding parameters +
the ``vocab x width`` output head; attention over the full context for every Transformer
layer; SSM scans not counted), against ``--peak-tflops`` (default 782, the bf16 matmul rate
measured on the H200; on the CPU the float32 matmul rate measured at the start). % roofline
= tokens/s x FLOPs per token / peak.

Data: the gcide token cache (data/corpus/tokens/gcide_gpt-neox-20b_val0.01.npz, train split)
when present, else synthetic token ids drawn from a Zipf(1) law over the GPT-NeoX vocabulary
(so that the loss can fall within a few steps). Learning rate: the recipe's peak from the first
step (``warmup_steps=1``, the rest of the schedule as the loop's), so the sanity check, loss
at the last step below the first step's (rows of at least 3 steps), sees learning. ``train_model`` itself is not
changed by any of this.

Usage (repository root)::

    PYTHONPATH=$PWD python benchmarks/train_gpu.py --out benchmarks/results/train_gpu   # H200, target <= 150 s
    PYTHONPATH=$PWD python benchmarks/train_gpu.py --quick --device cpu                 # toy sizes, seconds
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("gpt_neo", "gpt_neox", "mamba", "mamba2")  # Mamba2 last: its first step autotunes Triton kernels
VOCAB_TOKENS = 50277  # GPT-NeoX-20B tokenizer; the embedding has padded_vocab(50277) = 50304 rows
QUICK_VOCAB_TOKENS = 1000  # --quick: synthetic ids over a small vocabulary (the test runs in seconds)
HF_PROBE_DIVISOR = 16


def _bench_kernels():
    """benchmarks/kernels.py, loaded by path under its own name (``kernels`` is also the name of
    a hub package that transformers probes, so the benchmarks folder stays off sys.path)."""
    spec = importlib.util.spec_from_file_location("reprflow_bench_kernels", Path(__file__).with_name("kernels.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def recipe(args):
    """The TrainSpec of config/matched.yaml (``--quick``: a toy shape), peak lr from step 1."""
    import yaml

    from reprflow.training.recipe import TrainSpec

    block = yaml.safe_load((ROOT / "config" / "matched.yaml").read_text())["models"][0]["train"]
    block = {**block, "warmup_steps": 1, "device": args.device}
    if args.quick:  # the CPU micro recipe's learning rate (docs/training.md), so 4 steps show learning
        block.update(width=64, depth=2, context=64, batch_size=4, lr=0.03, tokens=200 * 256)
    if args.batch:
        block["batch_size"] = args.batch
    return TrainSpec.from_dict(block)


def token_windows(spec, n_windows: int, n_tokens: int) -> tuple[np.ndarray, str]:
    """(windows of context + 1 tokens, a description of their source): the gcide token cache
    if present (``n_tokens`` = the GPT-NeoX vocabulary), else Zipf(1) ids over ``n_tokens``."""
    from reprflow.training.loop import TOKEN_CACHE, _windows

    cache = TOKEN_CACHE / f"{spec.corpus}_gpt-neox-20b_val{spec.val_fraction}.npz"
    if cache.is_file() and n_tokens == VOCAB_TOKENS:
        with np.load(cache) as data:
            return _windows(data["train"], spec.context), f"{cache.name} (train split)"
    rng = np.random.default_rng(0)
    p = 1.0 / np.arange(1, n_tokens + 1)
    ids = rng.permutation(n_tokens)[rng.choice(n_tokens, size=n_windows * (spec.context + 1), p=p / p.sum())]
    return _windows(ids.astype(np.int32), spec.context), f"synthetic Zipf(1) ids over {n_tokens} tokens"


def vocab_tokens(args) -> int:
    return QUICK_VOCAB_TOKENS if args.quick else VOCAB_TOKENS


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _run(
    family: str,
    path: str | None,
    spec,
    config,
    windows: np.ndarray,
    *,
    batch: int,
    warmup: int,
    steps: int,
    slow_s: float,
    device: torch.device,
    fused_head: bool = True,
) -> dict:
    """Build, prepare and step one model: ``warmup`` steps each synchronised (the second one
    decides whether the path is slow), then ``steps`` back to back as the training loop runs
    them (batches copied from pinned memory, no sync until the end): ms/step = their mean."""
    from reprflow.training.kernels import describe_kernels, prepare_training
    from reprflow.training.loop import _batch, _lr_at, _optimizer, initial_model, train_step
    from reprflow.transfer import to_device

    model = initial_model(config, spec, device)
    chosen = prepare_training(model, family, device, path=path)
    kernels = describe_kernels(model, family, chosen)
    model.train()
    optimizer = _optimizer(model, spec)
    n_steps = spec.steps()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step(s: int) -> torch.Tensor:
        x = to_device(torch.from_numpy(_batch(windows, s, batch, spec.data_seed)).long(), device)
        return train_step(
            model, optimizer, x, device, lr=_lr_at(s, spec, n_steps), grad_clip=spec.grad_clip, fused_head=fused_head
        )

    losses, first, s = [], [], 0
    while s < warmup:
        _sync(device)
        t0 = time.perf_counter()
        losses.append(float(step(s)))
        first.append(time.perf_counter() - t0)
        if s == 1 and first[1] > slow_s:  # a slow path (the 2nd step, past compiles): <= 2 timed steps
            steps = min(steps, 2)
        s += 1
    _sync(device)
    t0 = time.perf_counter()
    timed = [step(s + k) for k in range(steps)]
    _sync(device)
    ms = 1e3 * (time.perf_counter() - t0) / steps
    losses += [float(v) for v in timed]
    note = (
        f"first step {first[0]:.0f} s (compiles, autotuning)"
        if first and first[0] > 5 and first[0] > 3 * ms / 1e3
        else ""
    )
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return {
        "family": family,
        "path": chosen,
        "head": "fused" if fused_head else "naive",
        "kernels": kernels,
        "batch": batch,
        "timed_steps": steps,
        "ms_per_step": ms,
        "first_step_ms": 1e3 * first[0] if first else None,
        "losses": losses,
        "peak_gib": peak,
        "note": note,
    }


def family_config(family: str, spec, args):
    """The model config ``train_model`` would build for ``family`` under ``spec``."""
    from reprflow.training.loop import build_config
    from reprflow.training.sizing import padded_vocab

    return build_config(family, spec, vocab_size=padded_vocab(vocab_tokens(args)), positions=spec.context)


def unmeasured_row(
    family: str, path: str | None, note: str, *, batch: int | None = None, fused_head: bool = True
) -> dict:
    """A table row without a measurement (not available, failed, out of memory, skipped): ``note`` says why."""
    return {
        "family": family,
        "path": path or "transformers",
        "head": "fused" if fused_head else "naive",
        "kernels": "",
        "batch": batch,
        "ms_per_step": None,
        "losses": [],
        "peak_gib": None,
        "note": note,
    }


def measure(
    family: str,
    path: str | None,
    spec,
    config,
    windows,
    args,
    *,
    batch: int | None = None,
    steps: int | None = None,
    warmup: int | None = None,
    fused_head: bool = True,
) -> dict:
    """One row: :func:`_run`, retried at half the batch after running out of GPU memory; any
    other error becomes the row's note (with the traceback on stderr), so one broken path does
    not cost the other rows."""
    device = torch.device(args.device)
    batch = batch or spec.batch_size
    notes = []
    while True:
        oom = failed = None
        try:
            row = _run(
                family,
                path,
                spec,
                config,
                windows,
                batch=batch,
                warmup=args.warmup if warmup is None else warmup,
                steps=args.steps if steps is None else steps,
                slow_s=args.slow_s,
                device=device,
                fused_head=fused_head,
            )
        except Exception as exc:  # noqa: BLE001 - reported in the table
            if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc):
                oom = True
            else:
                traceback.print_exc()
                failed = f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
            del exc
        _free(device)
        if failed:
            return unmeasured_row(family, path, "; ".join(notes + [failed]), batch=batch, fused_head=fused_head)
        if not oom:
            row["note"] = "; ".join(notes + ([row["note"]] if row["note"] else []))
            return row
        notes.append(f"out of memory at batch {batch}")
        if batch <= 1:
            return unmeasured_row(family, path, "; ".join(notes), batch=batch, fused_head=fused_head)
        batch //= 2


def hf_torch_row(spec, config, windows, args) -> dict:
    """transformers' torch fallback for Mamba-1 (run in the hidden worker): one warm-up and one
    timed step at ``batch / 16``, then the same at the full batch if the timed step
    extrapolates to <= ``--hf-limit-s``."""
    from transformers.models.mamba import modeling_mamba

    from reprflow.training.kernels import hf_resolved_module

    bound = hf_resolved_module(modeling_mamba.mamba_inner_fn)
    if not bound.startswith("transformers"):
        raise RuntimeError(f"hidden worker: transformers bound mamba_inner_fn to {bound}, not its torch fallback")
    probe = spec.batch_size if args.quick else max(1, spec.batch_size // HF_PROBE_DIVISOR)
    row = measure("mamba", "hf-torch", spec, config, windows, args, batch=probe, steps=1, warmup=1)
    if row["ms_per_step"] is None:
        return row
    estimate = row["ms_per_step"] / 1e3 * spec.batch_size / probe
    if probe < spec.batch_size and estimate <= args.hf_limit_s:
        row = measure("mamba", "hf-torch", spec, config, windows, args, steps=1, warmup=1)
    elif probe < spec.batch_size:
        row["note"] = (
            f"batch {probe} only: one step at batch {spec.batch_size} extrapolates to {estimate:.0f} s "
            f"(> {args.hf_limit_s:.0f} s, not run)"
        )
    return row


def worker(args) -> int:
    """The ``hf-torch`` row in a process whose imports refuse the compiled packages."""
    sys.meta_path.insert(0, _bench_kernels()._Refuse())  # before transformers binds its kernels
    spec = recipe(args)
    windows, _ = token_windows(spec, spec.batch_size * 4, vocab_tokens(args))
    row = hf_torch_row(spec, family_config("mamba", spec, args), windows, args)
    Path(args.json).write_text(json.dumps(row))
    return 0


def _hidden_row(args, argv: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        cmd = [sys.executable, __file__, *argv, "--worker", "--json", str(out)]
        try:
            rc = subprocess.run(cmd, timeout=args.hf_timeout_s).returncode
        except subprocess.TimeoutExpired:
            return unmeasured_row("mamba", "hf-torch", f"worker killed after {args.hf_timeout_s:.0f} s")
        if rc != 0 or not out.is_file():
            return unmeasured_row("mamba", "hf-torch", f"FAILED: worker exit {rc} (its traceback above)")
        return json.loads(out.read_text())


def finish_row(row: dict, spec, flops_per_token: float, peak_tflops: float) -> dict:
    tokens = (row["batch"] or 0) * spec.context
    ms = row.get("ms_per_step")
    row["tokens_per_s"] = tokens / (ms / 1e3) if ms else None
    row["tflops"] = row["tokens_per_s"] * flops_per_token / 1e12 if ms else None
    row["pct_roofline"] = 100 * row["tflops"] / peak_tflops if ms else None
    losses = row.get("losses") or []
    row["loss_decreased"] = (losses[-1] < losses[0]) if len(losses) >= 3 else None  # >= 2 updates
    return row


def _fmt(v, spec: str, empty: str = "-") -> str:
    return empty if v is None else format(v, spec)


def table(rows: list[dict], info: dict) -> str:
    lines = [
        f"Training step throughput, {info['device']}, {info['date']}; recipe {info['recipe']}; data: {info['data']}; "
        f"roofline {info['peak_tflops']:.3g} TFLOP/s ({info['peak_what']}), FLOPs/token = 6 N_mm + 12 L_attn T d "
        f"(reprflow.training.sizing.train_flops_per_token); ms/step: mean of the timed steps, run back to back "
        f"after the warm-up as the training loop runs them; head: naive = full logits + F.cross_entropy, "
        f"fused = reprflow.training.head_loss (chunked)",
        "",
        "| family | path | head | batch | ms/step | tokens/s | TFLOP/s | % roofline | peak GiB | loss first -> last | note |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        losses = r.get("losses") or []
        loss = f"{losses[0]:.3f} -> {losses[-1]:.3f}" if len(losses) >= 2 else ""
        if r.get("loss_decreased") is False:
            loss += " (NOT decreasing)"
        lines.append(
            f"| {r['family']} | {r['path']} | {r.get('head', 'fused')} | {_fmt(r['batch'], 'd')} | {_fmt(r.get('ms_per_step'), ',.0f')} | "
            f"{_fmt(r.get('tokens_per_s'), ',.0f')} | {_fmt(r.get('tflops'), '.3g')} | "
            f"{_fmt(r.get('pct_roofline'), '.1f')} | {_fmt(r.get('peak_gib'), '.1f')} | {loss} | {r['note']} |"
        )
    return "\n".join(lines)


def recommendation(rows: list[dict], picked: str, spec) -> list[str]:
    mamba = [r for r in rows if r["family"] == "mamba" and r.get("head", "fused") == "fused" and r.get("tokens_per_s")]
    full = [r for r in mamba if r["batch"] == spec.batch_size]
    any_ = mamba
    best = max(full or any_, key=lambda r: r["tokens_per_s"]) if any_ else None
    out = []
    if best is None:
        out.append("Recommendation: no Mamba-1 path ran.")
    else:
        others = ", ".join(
            f"{r['path']} {best['tokens_per_s'] / r['tokens_per_s']:.1f}x slower" for r in any_ if r is not best
        )
        out.append(
            f"Recommendation: train Mamba-1 with {best['path']}, the fastest path measured ({best['tokens_per_s']:,.0f} tokens/s"
            f"{'; ' + others if others else ''}); train_model picks {picked} on this machine"
            f"{'' if picked == best['path'] else ' (NOT the fastest measured)'}."
        )
    budget = []
    for fam in FAMILIES:
        path = {"mamba": picked, "gpt_neo": "reprflow-sdpa"}.get(fam, "transformers")
        rate = next(
            (
                r["tokens_per_s"]
                for r in rows
                if r["family"] == fam
                and r["path"] == path
                and r.get("head", "fused") == "fused"
                and r.get("tokens_per_s")
            ),
            None,
        )
        naive = next(
            (
                r["tokens_per_s"]
                for r in rows
                if r["family"] == fam and r.get("head") == "naive" and r.get("tokens_per_s")
            ),
            None,
        )
        if rate:
            budget.append((fam, spec.tokens / rate / 60))
        if rate and naive:
            out.append(f"{fam}: train_model's step ({path}, fused head) is {rate / naive:.2f}x the naive step.")
    if budget:
        out.append(
            f"At these rates {spec.tokens:,} tokens per model (train_model's paths, validation "
            f"and checkpoints not counted) take: "
            + ", ".join(f"{f} {m:.1f} min" for f, m in budget)
            + f"; {sum(m for _, m in budget):.1f} min in all."
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    p.add_argument("--quick", action="store_true", help="toy shape (width 64, 2 layers, context 64, batch 4)")
    p.add_argument(
        "--families",
        nargs="+",
        default=list(FAMILIES),
        choices=list(FAMILIES),
        help="in this order; default all four, Mamba2 last (its first step autotunes Triton kernels)",
    )
    p.add_argument("--batch", type=int, default=None, help="override the recipe's batch size (64)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps (kernel compiles, autotuning)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 5; 2 with --quick)")
    p.add_argument(
        "--slow-s",
        type=float,
        default=2.0,
        help="a second step slower than this marks a slow path: 1 warm-up, <= 2 timed steps",
    )
    p.add_argument(
        "--hf-limit-s",
        type=float,
        default=20.0,
        help="run transformers' torch fallback at the full batch only if a step extrapolates to <= this",
    )
    p.add_argument("--hf-timeout-s", type=float, default=90.0, help="kill the fallback's worker after this")
    p.add_argument(
        "--budget-s",
        type=float,
        default=90.0,
        help="skip transformers' torch fallback if the other rows took longer than this",
    )
    p.add_argument("--no-hf-torch", action="store_true", help="skip transformers' torch fallback (its subprocess)")
    p.add_argument("--no-naive", action="store_true", help="skip the naive rows (full logits, transformers' attention)")
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="roofline; default 782 (H200 bf16, measured) on CUDA, the float32 matmul rate on the CPU",
    )
    p.add_argument("--out", type=Path, default=None, help="also write train_gpu.md and train_gpu.json here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", help=argparse.SUPPRESS)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    args.steps = args.steps or (2 if args.quick else 5)
    if args.worker:
        return worker(args)

    import logging

    logging.basicConfig(level=logging.WARNING)
    from reprflow.training.kernels import MAMBA1_PATHS, mamba1_path_availability, mamba1_train_path
    from reprflow.training.sizing import count_params, train_flops_per_token

    t_start = time.perf_counter()
    device = torch.device(args.device)
    spec = recipe(args)
    bench = _bench_kernels()
    if args.peak_tflops:
        peak, peak_what = args.peak_tflops, "given"
    elif device.type == "cuda":
        peak, peak_what = bench.H200_BF16_TFLOPS, "bf16 matmul rate measured on the H200"
    else:
        peak, peak_what = bench.measure_peak_tflops("cpu", True), "float32 matmul rate measured now"
    windows, data = token_windows(spec, spec.batch_size * (args.warmup + args.steps + 1), vocab_tokens(args))
    picked = mamba1_train_path(device)
    info = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "data": data,
        "peak_tflops": peak,
        "peak_what": peak_what,
        "torch": torch.__version__,
        "recipe": f"width {spec.width}, depth {spec.depth}, context {spec.context}, batch {spec.batch_size}, "
        f"lr {spec.lr}" + (" (quick)" if args.quick else ""),
    }
    print(f"{info['device']}: {info['recipe']}; data {data}; train_model's Mamba-1 path here: {picked}", flush=True)
    rows = []
    for family in args.families:
        config = family_config(family, spec, args)
        fpt = train_flops_per_token(config, spec.context)
        n_params = count_params(config)[0]
        print(f"== {family}: {n_params / 1e6:.1f}M params, {fpt / 1e6:.0f} MFLOP/token", flush=True)
        # (path, fused head, why not available): first the naive step a user would write
        # (transformers' forward and attention, full logits, F.cross_entropy), then train_model's
        if family == "mamba":  # hf-torch runs in its own process, below
            available = mamba1_path_availability(device)
            todo = [(picked, False, available[picked])] + [
                (p, True, available[p]) for p in MAMBA1_PATHS if p != "hf-torch"
            ]
        elif family == "gpt_neo":
            todo = [("hf-eager", False, ""), ("reprflow-sdpa", True, "")]
        else:
            todo = [(None, False, ""), (None, True, "")]
        if args.no_naive:
            todo = [t for t in todo if t[1]]
        for path, fused, skip in todo:
            if skip:
                row = unmeasured_row(family, path, f"not available: {skip}", fused_head=fused)
            else:
                row = measure(family, path, spec, config, windows, args, fused_head=fused)
            rows.append(finish_row(row, spec, fpt, peak))
            print(
                f"  {row['path']:24s} {row.get('head', 'fused'):5s} batch {_fmt(row['batch'], 'd'):>3s}  {_fmt(row.get('ms_per_step'), '8.0f')} ms/step"
                f"  {_fmt(row.get('tokens_per_s'), '9.0f')} tok/s  {_fmt(row.get('pct_roofline'), '5.1f')}% roofline"
                f"  {row['note']}  [{row['kernels']}]",
                flush=True,
            )
        if family == "mamba" and not args.no_hf_torch and time.perf_counter() - t_start > args.budget_s:
            rows.append(
                finish_row(
                    unmeasured_row(family, "hf-torch", f"skipped: past --budget-s {args.budget_s:.0f} s"),
                    spec,
                    fpt,
                    peak,
                )
            )
        elif family == "mamba" and not args.no_hf_torch:
            _free(device)
            row = finish_row(_hidden_row(args, argv), spec, fpt, peak)
            rows.append(row)
            print(
                f"  {row['path']:24s} batch {_fmt(row['batch'], 'd'):>3s}  {_fmt(row.get('ms_per_step'), '8.0f')} ms/step"
                f"  {row['note']}",
                flush=True,
            )
    text = "\n".join([table(rows, info), "", *recommendation(rows, picked, spec)])
    bad = [r for r in rows if r.get("loss_decreased") is False or "FAILED" in r["note"]]
    elapsed = time.perf_counter() - t_start
    text += (
        f"\n\nSanity: no row failed, and the loss fell in each row of >= 3 steps: "
        f"{'NO (' + ', '.join(r['family'] + ' ' + r['path'] for r in bad) + ')' if bad else 'yes'}. "
        f"Benchmark wall time {elapsed:.0f} s."
    )
    print("\n" + text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "train_gpu.md").write_text(text + "\n")
        (args.out / "train_gpu.json").write_text(json.dumps({"info": info, "rows": rows}, indent=1) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
