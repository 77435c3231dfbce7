"""Where the GPU time of one fast-path forward goes: top kernels by CUDA time.

Builds a full-size random-init model (the configs of ``benchmarks/extract.py``), applies
:func:`reprflow.fastpath.prepare_model`, runs one warm-up, ``--repeats`` forwards of
``reprflow.capture.forward_states`` at (batch, T) without the profiler (their wall time, and the
share of it the kernels fill: what is left is the GPU idle between them) and ``--repeats``
profiled ones, and prints a table of the kernels that take the most CUDA time, grouped into
matmul / scan / attention / norm / elementwise so that the distance to the matmul roofline is
visible.

The batch is the paper config's by default (``execution.extraction.batch_tokens`` // T for the
model's family: 32 prompts at T=2048 for the SSMs), and the roofline's matmul rate is measured at
the start (``kernels.measure_peak_tflops``) unless ``--peak-tflops`` gives it.

Usage (GPU machine, repo root on PYTHONPATH)::

    python benchmarks/profile_forward.py --models mamba-2.8b,mamba2-2.7b [--batch-size 32] [--tokens 2048]
"""

from __future__ import annotations

import argparse
import functools
import sys
import time

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from extract import build_model, full_configs  # noqa: E402
from kernels import cuda_tokens_per_s, measure_peak_tflops  # noqa: E402

from reprflow.config import load_configs  # noqa: E402
from reprflow.pipeline.extract_stage import batch_size_for  # noqa: E402

ROOT = __file__.rsplit("/", 2)[0]

GROUPS = (
    ("matmul", ("gemm", "sm90_xmma", "cutlass", "nvjet", "matmul", "cublas")),
    ("scan/ssd", ("selective_scan", "chunk_", "_state_passing", "bmm_chunk", "ssd")),
    ("attention", ("flash", "fmha", "attention", "softmax")),
    ("conv", ("conv",)),
    ("norm", ("rms", "norm")),
)


def group_of(name: str) -> str:
    low = name.lower()
    for group, keys in GROUPS:
        if any(k in low for k in keys):
            return group
    return "other (elementwise, copies)"


def profile_model(name: str, args) -> str:
    from reprflow.capture import forward_states
    from reprflow.fastpath import prepare_model

    config, _ = full_configs(False)[name]
    batch = args.batch_size or batch_size_for(
        load_configs([f"{ROOT}/config/config.yaml"]).execution("extraction"), args.tokens, config.model_type
    )
    model = build_model(config, dtype=torch.bfloat16, seed=0, device="cuda")
    kernels = prepare_model(model)
    g = torch.Generator(device="cuda").manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (batch, args.tokens), device="cuda", generator=g)
    mask = torch.ones_like(ids)
    forward_states(model, ids, mask)  # warm-up: Triton compilation, autotuning
    tokens = batch * args.tokens
    run = functools.partial(forward_states, model, ids, mask, check_padding=False)
    bare = tokens / cuda_tokens_per_s(run, tokens, args.repeats)  # s per forward, without the profiler
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        wall = tokens / cuda_tokens_per_s(run, tokens, args.repeats)
    del run
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    total = sum(e.device_time_total for e in events) / args.repeats / 1e3  # ms per forward
    groups: dict[str, float] = {}
    for e in events:
        groups[group_of(e.key)] = groups.get(group_of(e.key), 0.0) + e.device_time_total / args.repeats / 1e3
    params = sum(p.numel() for p in model.parameters())
    roof_ms = 2 * params * tokens / (args.peak_tflops * 1e12) * 1e3
    lines = [
        f"### {name}: batch {batch} x T {args.tokens}, kernels {kernels}",
        "",
        f"wall {wall * 1e3:.1f} ms per forward ({tokens / wall / 1e3:.1f}K tok/s, profiler on), "
        f"{bare * 1e3:.1f} ms without it ({tokens / bare / 1e3:.1f}K tok/s, {100 * roof_ms / (bare * 1e3):.1f}% "
        f"of the roofline); CUDA kernel time {total:.1f} ms ({100 * total / (bare * 1e3):.1f}% of the "
        f"unprofiled wall); matmul roofline {roof_ms:.1f} ms (2 x {params / 1e9:.2f}B params "
        f"x tokens at {args.peak_tflops:.0f} TFLOP/s)",
        "",
        "| group | ms per forward | share of kernel time |",
        "|---|---|---|",
    ]
    for grp, ms in sorted(groups.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {grp} | {ms:.1f} | {100 * ms / total:.0f}% |")
    lines += ["", "| kernel | group | calls per forward | ms per forward |", "|---|---|---|---|"]
    for e in sorted(events, key=lambda e: -e.device_time_total)[: args.top]:
        lines.append(
            f"| `{e.key[:90]}` | {group_of(e.key)} | {e.count // args.repeats} | "
            f"{e.device_time_total / args.repeats / 1e3:.2f} |"
        )
    del model
    torch.cuda.empty_cache()
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="mamba-2.8b,mamba2-2.7b")
    p.add_argument("--batch-size", type=int, default=None, help="default: the paper config's for the family")
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--peak-tflops", type=float, default=None, help="default: measured at the start")
    args = p.parse_args(argv)
    args.peak_tflops = args.peak_tflops or measure_peak_tflops("cuda", False)
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    for name in args.models.split(","):
        print(profile_model(name, args), flush=True)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
