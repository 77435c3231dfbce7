"""Tokens per forward pass: reprflow's forward rate at several (tokens, batch) shapes, side by side.

The paper config forwards ``execution.extraction.batch_tokens`` tokens per pass (32768: 8 prompts
at 4K, 16 at 2K, 32 at 1K). That is an execution key: changing it changes no stored value and
reruns nothing, so it should be whatever runs fastest. Mamba-1's scan is parallel over batch x
channels only (one warp per 32 channels of one sequence), so 8 prompts at 4K give it half the
warps of 16 at 2K. For each family this builds one full-size random-init model (as
``benchmarks/kernels.py``: bf16, ``prepare_model``, a forward returning every layer's last-token
state, as extraction), then times every shape in the same process, in the given order and then in
reverse (two passes; the range is printed): tokens/s and % of the bf16 roofline (2 x parameters
FLOPs per token at the matmul rate measured at the start). With ``mamba`` among the families it
also times Mamba-1's scan and conv candidates per layer at each shape against the scan's exp bound
(``kernels.py``'s ``bench_mamba_scan``). With ``--gluon-configs`` every shape is also timed with
each given launch configuration of the Gluon Mamba-1 scan in place of its default (one row per
shape and configuration, the same two passes), so a configuration found by
``benchmarks/scan_sweep.py`` is judged by the whole forward, side by side with the default.

Usage (repository root)::

    PYTHONPATH=$PWD python benchmarks/batch_tokens.py [--families mamba mamba2] \\
        [--shapes 4096x8 4096x16 2048x16 2048x32] [--batches 2] [--out DIR]      # H200: ~3 min
    PYTHONPATH=$PWD python benchmarks/batch_tokens.py --models mamba2-130m --shapes 2048x32 2048x128
    PYTHONPATH=$PWD python benchmarks/batch_tokens.py --families mamba --shapes 2048x32 \
        --gluon-configs default 1,4,4,1,3        # lanes/channel, warps, unroll, prefetch, stages
    PYTHONPATH=$PWD python benchmarks/batch_tokens.py --quick --device cpu      # toy sizes, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kernels  # noqa: E402  benchmarks/kernels.py: the model rows and the scan rows are its


def parse_shape(text: str) -> tuple[int, int]:
    """``"4096x8"`` -> (tokens per prompt, prompts per pass)."""
    try:
        tokens, batch = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape {text!r}: write TOKENSxBATCH, e.g. 4096x8") from None
    if tokens < 1 or batch < 1:
        raise argparse.ArgumentTypeError(f"shape {text!r}: tokens and batch must be positive")
    return tokens, batch


def parse_gluon_config(text: str):
    """``"default"`` -> None; ``"1,4,4,1,3"`` -> that ``GluonScanConfig``."""
    if text == "default":
        return None
    from reprflow.kernels.selective_scan_gluon import GluonScanConfig

    try:
        return GluonScanConfig(*(int(v) for v in text.split(",")))
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"Gluon scan config {text!r}: write default or LANES,WARPS,UNROLL[,PREFETCH[,STAGES]], e.g. 1,1,8,1,2"
        ) from None


def add_gpu_family_args(p: argparse.ArgumentParser, *, out_name: str, calls_help: str) -> None:
    """The options of a per-family GPU comparison (``cuda_graphs.py``, ``streams.py``): --families,
    --shapes (TOKENSxBATCH), --rounds, --calls and --out."""
    p.add_argument("--families", nargs="+", default=["mamba", "mamba2"], choices=list(kernels.FAMILIES))
    p.add_argument("--shapes", nargs="+", type=parse_shape, default=[(2048, 32), (4096, 16)])
    p.add_argument("--rounds", type=int, default=3, help="rounds, alternating the order of what is compared")
    p.add_argument("--calls", type=int, default=2, help=calls_help)
    p.add_argument("--out", type=Path, default=None, help=f"also write the table here ({out_name})")
    p.set_defaults(out_name=out_name)


@contextlib.contextmanager
def gluon_scan_config(config):
    """Within the block the Gluon Mamba-1 scan launches with ``config`` (None: its default)."""
    from reprflow.kernels import selective_scan_gluon as module

    default = module.default_gluon_config
    if config is not None:
        module.default_gluon_config = lambda channels, batch: config
    try:
        yield
    finally:
        module.default_gluon_config = default


def time_shapes(name: str, args, peak: float) -> list[dict]:
    """One model (a name of ``extract.full_configs``), every shape timed twice (given order, then reversed).

    Returns one dict per shape and Gluon scan configuration: model, tokens, batch, scan_config
    ("default" or the configuration), tokens_per_s (list of the two passes), pct_roofline (same),
    kernels (the chooser's picks, as kernels.py names them).
    """
    from extract import build_model, full_configs, n_params  # benchmarks/extract.py

    from reprflow.fastpath import prepare_model

    config, _ = full_configs(args.quick)[name]
    model = build_model(config, dtype=kernels.compute_dtype_on(args.device), seed=0, device=args.device)
    ceiling = peak * 1e12 / (2 * n_params(model))
    report = prepare_model(model)
    run = kernels.reprflow_forward(model)
    ids = kernels.random_ids(config.vocab_size, args.shapes, args.device)
    configs = args.gluon_configs if report.get("family") == "mamba" else [None]
    rates: dict[tuple, list[float]] = {(shape, cfg): [] for shape in args.shapes for cfg in configs}
    for order in (args.shapes, args.shapes[::-1]):
        for shape in order:
            for cfg in configs:
                with gluon_scan_config(cfg):
                    rate = kernels.time_batches(
                        run, ids[shape], batch=shape[1], n_batches=args.batches, device=args.device
                    )
                rates[shape, cfg].append(rate)
                label = "" if len(configs) == 1 else f"  scan {cfg or 'default'}"
                print(f"  {name:12s} {shape[0]:5d} x {shape[1]:<4d} {rate:10.0f} tok/s{label}", flush=True)
    del model, run
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return [
        {
            "model": name,
            "tokens": shape[0],
            "batch": shape[1],
            "scan_config": repr(cfg) if cfg is not None else "default",
            "tokens_per_s": rates[shape, cfg],
            "pct_roofline": [100 * r / ceiling for r in rates[shape, cfg]],
            "kernels": kernels.chosen_kernels(report),
        }
        for shape in args.shapes
        for cfg in configs
    ]


def scan_rows(args) -> list[dict]:
    """Mamba-1's scan and conv candidates per layer at every shape (kernels.py's rows, tagged)."""
    rows = []
    for tokens, batch in args.shapes:
        at = copy.copy(args)
        at.tokens, at.batch_size = tokens, batch
        rows += [{**r, "tokens": tokens, "batch": batch} for r in kernels.bench_mamba_scan(at)]
    return rows


def _span(values: list[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{format(lo, fmt)}-{format(hi, fmt)}"


def table(rows: list[dict], scan: list[dict], *, device: str, peak: float, exp_rate: float, copy_rate: float) -> str:
    by_config = len({r["scan_config"] for r in rows}) > 1
    lines = [
        f"reprflow forward by tokens per pass, {device}, random init; roofline = {peak:.3g} TFLOP/s "
        "(measured here) / (2 x params) per token; two passes per shape (given order, then reversed)",
        "",
        "| model | tokens per prompt | prompts per pass | tokens per pass | "
        + ("Gluon scan config | " if by_config else "")
        + "tokens/s | % roofline | kernels |",
        "|---|---:|---:|---:|" + ("---|" if by_config else "") + "---:|---:|---|",
    ]
    lines += [
        f"| {r['model']} | {r['tokens']} | {r['batch']} | {r['tokens'] * r['batch']:,} | "
        + (f"{r['scan_config']} | " if by_config else "")
        + f"{_span(r['tokens_per_s'], ',.0f')} | {_span(r['pct_roofline'], '.1f')} | {r['kernels']} |"
        for r in rows
    ]
    if scan:
        lines += [
            "",
            f"Mamba-1 per layer at each shape; exp bound = 1 exp per token x channel x state at "
            f"{exp_rate / 1e12:.2f} T exp/s; memory bound = bytes / {copy_rate / 1e12:.2f} TB/s (a copy's rate here)",
            "",
            *kernels.scan_table(scan, shapes=True),
        ]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    p.add_argument("--quick", action="store_true", help="toy model sizes (2 layers, width 512)")
    p.add_argument(
        "--families",
        nargs="*",
        default=None,
        choices=list(kernels.FAMILIES),
        help="default mamba mamba2 (none with --models)",
    )
    p.add_argument(
        "--models", nargs="+", default=[], help="more models by name (benchmarks/extract.py), e.g. mamba2-130m"
    )
    p.add_argument(
        "--shapes",
        nargs="+",
        type=parse_shape,
        default=None,
        help="TOKENSxBATCH each (default 4096x8 4096x16 2048x16 2048x32; with --quick 64x2 32x4)",
    )
    p.add_argument(
        "--gluon-configs",
        nargs="+",
        type=parse_gluon_config,
        default=[None],
        metavar="CONFIG",
        help="Mamba-1 only: time each shape with each of these Gluon scan configurations "
        "(default, or LANES,WARPS,UNROLL[,PREFETCH[,STAGES]]; default: default only)",
    )
    p.add_argument("--batches", type=int, default=2, help="timed batches per shape and pass")
    p.add_argument("--out", type=Path, default=None, help="also write the table here (batch_tokens.md)")
    args = p.parse_args(argv)
    if args.families is None:
        args.families = [] if args.models else ["mamba", "mamba2"]
    from extract import full_configs  # benchmarks/extract.py

    unknown = [m for m in args.models if m not in full_configs(args.quick)]
    if unknown:
        p.error(f"--models: unknown {unknown}; known: {sorted(full_configs(args.quick))}")
    args.shapes = args.shapes or ([(64, 2), (32, 4)] if args.quick else [(4096, 8), (4096, 16), (2048, 16), (2048, 32)])
    peak = kernels.measure_peak_tflops(args.device, args.quick)
    args.exp_rate = kernels.SFU_EXP_PER_S
    if args.device == "cuda" and "mamba" in args.families:
        from sfu_rate import measure_exp_rate  # benchmarks/sfu_rate.py

        args.exp_rate = measure_exp_rate()
    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    names = [kernels.FAMILIES[f] for f in args.families]
    names += [m for m in args.models if m not in names]
    rows = [r for name in names for r in time_shapes(name, args, peak)]
    scan = scan_rows(args) if "mamba" in args.families else []
    copy_rate = kernels.copy_bytes_per_s(args.device)
    text = table(rows, scan, device=device, peak=peak, exp_rate=args.exp_rate, copy_rate=copy_rate)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "batch_tokens.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
