"""Sweep of the Mamba-1 scan's launch configurations against the exp bound.

For each variant (the ``triton`` kernel of :mod:`reprflow.kernels.selective_scan` at the
launch configurations in ``TRITON_CONFIGS``, the ``gluon`` kernel of
:mod:`reprflow.kernels.selective_scan_gluon` at ``GLUON_CONFIGS`` when Gluon imports, and
``mamba_ssm``'s compiled ``selective_scan_fn`` behind its layout transposes when it imports)
one table row; the Gluon default configuration also with ``fma_exps`` 0 and 2 (``FMA_EXPS_COMPARED``:
how many of every 16 decays go to the FMA pipe's polynomial instead of ``MUFU.EX2``; default 1):

* ms per layer at Mamba-2.8B shapes (5120 channels, d_state 16, bf16; ``u`` and ``z`` views
  of one in_proj output, ``B`` and ``C`` views of one x_proj output, as the mixer passes
  them), at two shapes (``--shapes``; default B=16, T=2048 and B=8, T=4096, 32K tokens each;
  the paper config's passes are 64K tokens: ``--shapes 2048x32 4096x16``), the median of
  ``--reps`` timed calls after a warm-up that compiles;
* x exp bound: that time over one ``exp`` per token x channel x state of its shape at the
  ``ex2`` rate measured on this GPU (``benchmarks/sfu_rate.py``; on a CPU the H200's
  :data:`benchmarks.kernels.SFU_EXP_PER_S`);
* relative error ``||y - y64|| / ||y64||`` against :func:`selective_scan_reference` in
  float64 on the same inputs: for the bf16 run (batch row 0, all 2048 tokens; mostly the
  bf16 rounding of the output, ~2e-3) and for a float32 run (1 x 2048 x 5120), which
  shows the kernel's own arithmetic (filled in after all timings, while ``--budget-s``
  lasts; ``-`` where it did not).

Then the kernel the chooser (:func:`reprflow.kernels.ops.mamba_scan_op`) picks at the first
shape, and its reason. Under a minute on an H200, most of it Triton compiles.

Usage (repository root)::

    PYTHONPATH=$PWD python benchmarks/scan_sweep.py [--shapes 2048x32 4096x16] [--out DIR] [--budget-s S] [--match TEXT ...]

With ``--out`` it also writes ``scan_sweep.json``: one record per row (kernel, config as given
to the kernel, ms per shape), for a script that takes the fastest configuration further
(``benchmarks/batch_tokens.py --gluon-configs``).

The decays' split side by side: ``--shapes 2048x32 4096x16 --match "channel=1 warps=1 unroll=8
shared x2"`` (the default configuration and its ``fma_exps`` variants). Last runs:
benchmarks/results/scan_sweep_h100_2026-12-06_64k.md (``--shapes 2048x32 4096x16 --match shared``:
the paper config's 64K tokens per pass; before ``fma_exps``); at 32K tokens
benchmarks/results/scan_sweep_h200_2026-12-04_shared.md and ``..._shared2.md`` (the
Gluon scan with its inputs staged in shared memory; ``--match shared "unroll=2 prefetch"
"BLOCK_D=32 warps=1 unroll=4"``); the register configurations in scan_sweep_h200_2026-12-04.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batch_tokens import parse_shape  # noqa: E402
from kernels import SFU_EXP_PER_S  # noqa: E402  (benchmarks/kernels.py)
from microbench import rel_err  # noqa: E402

from reprflow.kernels.selective_scan import selective_scan_reference, selective_scan_triton  # noqa: E402
from reprflow.kernels.selective_scan_gluon import (  # noqa: E402
    GluonScanConfig,
    default_gluon_config,
    gluon_available,
    selective_scan_gluon,
)

CHANNELS, D_STATE, DT_RANK = 5120, 16, 160
SHAPES = ((16, 2048), (8, 4096))
#: (block_d, num_warps, unroll) of the Triton kernel; its default first
TRITON_CONFIGS = ((32, 1, 4), (64, 2, 4), (32, 1, 8), (32, 1, 2))
#: (lanes per channel, num_warps, unroll, prefetch[, stages]) of the Gluon kernel; its default first
GLUON_CONFIGS = (
    (1, 1, 8, True, 2),
    (1, 2, 8, True, 2),
    (1, 4, 8, True, 2),
    (1, 1, 16, True, 2),
    (1, 4, 16, True, 2),
    (1, 1, 4, True, 2),
    (1, 4, 4, True, 2),
    (1, 1, 8, True, 3),
    (1, 4, 8, True, 3),
    (1, 4, 4, True, 3),
    (1, 2, 8, True, 3),
    (1, 2, 4, True, 3),
    (1, 1, 16, True, 3),
    (1, 2, 16, True, 2),
    (1, 1, 4, True, 4),
    (1, 2, 4, True, 4),
    (2, 1, 8, True, 2),
    (2, 4, 2, True),
    (2, 4, 1, True),
    (2, 4, 4, True),
    (2, 4, 2, False),
    (2, 8, 2, True),
    (2, 2, 2, True),
    (2, 1, 4, True),
    (1, 4, 1, True),
    (1, 4, 2, True),
    (1, 8, 1, True),
    (1, 2, 2, True),
    (4, 4, 2, True),
    (4, 4, 1, True),
    (4, 8, 2, True),
)


#: other values of the Gluon scan's ``fma_exps`` (decays of every 16 on the FMA pipe; default 1) timed at its default config
FMA_EXPS_COMPARED = (0, 2)


def scan_inputs(
    batch: int, n_tokens: int, dtype: torch.dtype, device: str, seed: int = 0, channels: int = CHANNELS
) -> dict:
    """Mixer-like inputs of the scan: ``u``/``z`` and ``B``/``C`` are views of fused projections."""
    g = torch.Generator(device).manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (scale * torch.randn(*shape, device=device, generator=g)).to(dtype)

    xz = rnd(batch, n_tokens, 2 * channels)
    dbl = rnd(batch, n_tokens, DT_RANK + 2 * D_STATE)
    return {
        "u": xz[..., :channels],
        "delta": rnd(batch, n_tokens, channels, scale=0.5),
        "A": -torch.exp(torch.rand(channels, D_STATE, device=device, generator=g) * 2.7),
        "B": dbl[..., DT_RANK : DT_RANK + D_STATE],
        "C": dbl[..., DT_RANK + D_STATE :],
        "D": torch.ones(channels, device=device),
        "z": xz[..., channels:],
        "delta_bias": torch.full((channels,), -3.0, device=device),
        "delta_softplus": True,
    }


def _call(fn, x: dict, rows: slice = slice(None)):
    t = {k: (v[rows] if isinstance(v, torch.Tensor) and v.dim() == 3 else v) for k, v in x.items()}
    return fn(
        t["u"],
        t["delta"],
        t["A"],
        t["B"],
        t["C"],
        t["D"],
        t["z"],
        delta_bias=t["delta_bias"],
        delta_softplus=t["delta_softplus"],
    )


def _reference(x: dict, rows: slice) -> torch.Tensor:
    def f64(v):
        return v.double() if isinstance(v, torch.Tensor) else v

    t = {k: f64(v[rows] if isinstance(v, torch.Tensor) and v.dim() == 3 else v) for k, v in x.items()}
    return selective_scan_reference(
        t["u"],
        t["delta"],
        t["A"],
        t["B"],
        t["C"],
        t["D"],
        t["z"],
        delta_bias=t["delta_bias"],
        delta_softplus=True,
        compute_dtype=torch.float64,
    )


def _ms(fn, device: str, reps: int) -> float:
    fn()  # warm-up: compiles
    times = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def variants() -> list[tuple[str, str, object, list | None]]:
    """(kernel, config label, fn with the signature of selective_scan_reference, config as the
    kernel takes it or None) for every row."""
    from functools import partial

    out = [
        (
            "triton",
            f"BLOCK_D={bd} warps={nw} unroll={un}",
            partial(selective_scan_triton, block_d=bd, num_warps=nw, unroll=un),
            [bd, nw, un],
        )
        for bd, nw, un in TRITON_CONFIGS
    ]
    if gluon_available():
        out += [
            (
                "gluon",
                repr(GluonScanConfig(*cfg)),
                partial(selective_scan_gluon, config=cfg),
                list(GluonScanConfig(*cfg)),
            )
            for cfg in GLUON_CONFIGS
        ]
        default = default_gluon_config(CHANNELS, SHAPES[0][0])
        out += [  # the default's decays split otherwise between MUFU.EX2 and the FMA pipe's polynomial
            (
                "gluon",
                f"{default!r} fma_exps={k}",
                partial(selective_scan_gluon, config=default, fma_exps=k),
                list(default),
            )
            for k in FMA_EXPS_COMPARED
        ]
    from reprflow.kernels.ops import compiled_scan_time_major
    from reprflow.kernels.optional import compiled_selective_scan

    compiled = compiled_selective_scan()
    if compiled is not None:
        out.append(("mamba_ssm", "selective_scan_fn + transposes", compiled_scan_time_major(compiled), None))
    return out


def sweep(args) -> tuple[str, list[dict]]:
    """The table (markdown) and one record per row: kernel, label, config, ms (per shape)."""
    t_start = time.perf_counter()
    dev = args.device
    shapes, channels = (((2, 12), (1, 24)), 64) if args.quick else (args.shapes, CHANNELS)
    inputs = [scan_inputs(b, t, torch.bfloat16, dev, seed=i, channels=channels) for i, (b, t) in enumerate(shapes)]
    want16 = _reference(inputs[0], slice(0, 1))
    x32 = scan_inputs(1, shapes[0][1], torch.float32, dev, seed=7, channels=channels)
    want32 = _reference(x32, slice(None))
    exp_rate = SFU_EXP_PER_S
    if dev == "cuda":
        from sfu_rate import measure_exp_rate  # benchmarks/sfu_rate.py

        exp_rate = measure_exp_rate()
    exp_ms = [1e3 * b * t * channels * D_STATE / exp_rate for b, t in shapes]
    gpu = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    (b1, t1), (b2, t2) = shapes
    lines = [
        f"Mamba-1 scan sweep, {gpu}, torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M %Z')}; "
        f"{channels} channels, d_state {D_STATE}, bf16 in/out; exp bound {exp_ms[0]:.3f} ms at B={b1} T={t1}, "
        f"{exp_ms[1]:.3f} ms at B={b2} T={t2} (1 exp per token x channel x state at "
        f"{exp_rate / 1e12:.2f} T exp/s, {'measured here by benchmarks/sfu_rate.py' if dev == 'cuda' else 'an H200 (no GPU here)'})",
        "",
        f"| kernel | config | ms B={b1} T={t1} | x exp bound | ms B={b2} T={t2} | x exp bound | "
        f"rel err bf16 | rel err fp32 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    # pass 1: times and the bf16 error of every variant; pass 2, while the time budget
    # lasts: the float32 error (one more compile per variant)
    rows, records = [], []
    for kernel, label, fn, config in variants():
        if args.match and not any(m in f"{kernel} {label}" for m in args.match):
            continue
        try:
            ms = [_ms(lambda x=x: _call(fn, x), dev, args.reps) for x in inputs]
            e16 = rel_err(_call(fn, inputs[0], slice(0, 1)), want16)
            rows.append(
                [
                    kernel,
                    label,
                    fn,
                    f"{ms[0]:.3f} | {ms[0] / exp_ms[0]:.2f} | {ms[1]:.3f} | {ms[1] / exp_ms[1]:.2f} | {e16:.1e}",
                    "-",
                ]
            )
            records.append({"kernel": kernel, "label": label, "config": config, "ms": ms, "shapes": shapes})
        except Exception as exc:  # a configuration the compiler or the GPU rejects
            rows.append([kernel, label, None, f"failed: {type(exc).__name__}: {str(exc)[:100]} | | | |", ""])
        print(f"| {rows[-1][0]} | {rows[-1][1]} | {rows[-1][3]} |", flush=True)
    for row in rows:
        if row[2] is not None and time.perf_counter() - t_start < args.budget_s:
            row[4] = f"{rel_err(_call(row[2], x32), want32):.1e}"
    lines += [f"| {kernel} | {label} | {cells} | {e32} |" for kernel, label, _, cells, e32 in rows]
    from reprflow.kernels.ops import mamba_scan_op

    report: dict = {}
    op = mamba_scan_op(torch.device(dev), report=report)
    _call(op, inputs[0])
    entry = next(iter(report["mamba_scan"].values()))
    lines += [
        "",
        f"Chooser at B={b1} T={t1}: {entry['kernel']} ({entry['reason']}); check errors {entry['check_rel_err']}",
        f"Sweep time {time.perf_counter() - t_start:.0f} s.",
    ]
    return "\n".join(lines), records


def _batch_by_tokens(text: str) -> tuple[int, int]:
    """``"2048x32"`` (tokens x prompts, as ``batch_tokens.py`` writes shapes) -> (32, 2048)."""
    tokens, batch = parse_shape(text)
    return batch, tokens


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (cpu only with TRITON_INTERPRET=1 and --quick)")
    p.add_argument("--quick", action="store_true", help="toy token counts (interpreter smoke run)")
    p.add_argument("--reps", type=int, default=7, help="timed calls per cell (median)")
    p.add_argument(
        "--budget-s",
        type=float,
        default=65.0,
        help="start no float32 check (one compile each) after this many seconds ('-' in the table)",
    )
    p.add_argument(
        "--match", nargs="*", default=None, help="only rows whose 'kernel config' contains one of these texts"
    )
    p.add_argument(
        "--shapes",
        nargs=2,
        type=_batch_by_tokens,
        default=list(SHAPES),
        metavar="TOKENSxBATCH",
        help="the two shapes timed (default 2048x16 4096x8)",
    )
    p.add_argument("--out", type=Path, default=None, help="also write scan_sweep.md and scan_sweep.json here")
    args = p.parse_args(argv)
    text, records = sweep(args)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "scan_sweep.md").write_text(text + "\n")
        (args.out / "scan_sweep.json").write_text(json.dumps(records, indent=1) + "\n")
    print()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
