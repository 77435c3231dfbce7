r"""Mamba-2's SSD at 16 x 2048 tokens when its autotuning happened at the first, tiny call.

``mamba_ssm``'s SSD kernels (the five behind ``mamba_chunk_scan_combined``) are
``triton.autotune``\ d on the chunk size, head dim and state size only (``key=['chunk_size',
'hdim', 'dstate', ...]`` in ``mamba_ssm/ops/triton/ssd_*.py``), not on batch or length: each
tunes at its first call in the process and keeps that configuration for every size. Under
reprflow the first call is small (the 4-token warm-up forward, or the kernel chooser's check on
at most 2 x 300 tokens), so the 16 x 2048 forwards run with configurations tuned on a problem
thousands of times smaller, where every configuration costs about one launch.

Each scenario runs in a fresh process, at Mamba2-2.7B's shapes (``benchmarks/ssd_chunks.py``'s
inputs, bf16, chunk 256), the scenarios taking turns (so that a drift of the GPU's clock over the
run does not fall on one scenario):

* ``tiny first``: ``mamba_ssm``'s function as is, first called at 1 x 4 tokens, then timed at
  16 x 2048: what reprflow ran before the fix;
* ``large first``: as is, first called at 16 x 2048;
* ``by size, tiny first``: reprflow's loader's function
  (:class:`reprflow.kernels.autotune_by_size.AutotuneBySize` around ``mamba_ssm``'s), first called
  at 1 x 4: the autotuners' caches kept per size class, so the large call tunes at its own size.

Per row: median ms per layer (CUDA events, 20 calls), the SM clock read through NVML after the
timing, and the configuration each of the two largest kernels ended with.

Usage (GPU)::

    PYTHONPATH=$PWD python benchmarks/ssd_autotune.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

SCENARIOS = ("tiny first", "large first", "by size, tiny first")


def _sm_clock_mhz() -> int | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetClockInfo(pynvml.nvmlDeviceGetHandleByIndex(0), pynvml.NVML_CLOCK_SM)
    except Exception:  # NVML absent: the column stays empty
        return None


def _worker(scenario: str) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from microbench import median_ms
    from ssd_chunks import best_configs, inputs

    from reprflow.kernels.optional import load_mamba_ssm_triton

    by_size = load_mamba_ssm_triton().chunk_scan_combined  # reprflow's: an AutotuneBySize
    fn = by_size if scenario.startswith("by size") else by_size.fn  # .fn: mamba_ssm's own
    big = inputs(16, 2048)
    if "tiny first" in scenario:
        fn(chunk_size=256, **inputs(1, 4))
    ms = median_ms(lambda: fn(chunk_size=256, **big), 20)
    configs = {k: v for k, v in best_configs().items() if k in ("_chunk_scan_fwd_kernel", "_chunk_state_fwd_kernel")}
    return {"scenario": scenario, "ms": ms, "sm_mhz": _sm_clock_mhz(), "configs": configs}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per scenario")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker)))
        return 0
    rows = []
    for _ in range(args.repeats):
        for scenario in SCENARIOS:
            out = subprocess.run(
                [sys.executable, __file__, "--worker", scenario], capture_output=True, text=True, check=True
            ).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(f"{scenario}: {rows[-1]['ms']:.3f} ms", flush=True)
    print(
        "\n| scenario (fresh process each, in run order) | ms per layer, 16 x 2048 | SM MHz | configurations chosen |"
    )
    print("|---|---:|---:|---|")
    for r in rows:
        cfg = "; ".join(f"`{k}` {v}" for k, v in sorted(r["configs"].items()))
        print(f"| {r['scenario']} | {r['ms']:.3f} | {r['sm_mhz'] or ''} | {cfg} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
