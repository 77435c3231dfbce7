"""Mamba-2's SSD at 16 x 2048 tokens when its autotuning happened at the first, tiny call.

``mamba_ssm``'s SSD kernels autotune once per process on keys without batch or length
(reprflow/kernels/autotune_by_size.py). Each scenario runs in a fresh process, at Mamba2-2.7B's
shapes (``benchmarks/ssd_chunks.py``'s inputs, bf16, chunk 256):

* ``tiny first``: ``mamba_ssm``'s function as is, first called at 1 x 4 tokens (reprflow's
  warm-up forward), then timed at 16 x 2048: what reprflow ran before;
* ``large first``: as is, first called at 16 x 2048;
* ``by size, tiny first``: reprflow's :class:`AutotuneBySize` wrapper, first called at 1 x 4.

Per row: median ms per layer (CUDA events, 20 calls) and the configuration each of the two
largest kernels ended with.

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


def _worker(scenario: str) -> dict:

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from microbench import median_ms
    from ssd_chunks import inputs

    from reprflow.kernels.optional import load_mamba_ssm_triton

    wrapped = load_mamba_ssm_triton().chunk_scan_combined
    fn = wrapped if scenario.startswith("by size") else wrapped.fn
    big = inputs(16, 2048)
    if "tiny first" in scenario:
        fn(chunk_size=256, **inputs(1, 4))
    ms = median_ms(lambda: fn(chunk_size=256, **big), 20)
    configs = {
        t.base_fn.__name__: str(t.best_config)
        for t in wrapped.autotuners
        if t.base_fn.__name__ in ("_chunk_scan_fwd_kernel", "_chunk_state_fwd_kernel")
        and getattr(t, "best_config", None) is not None
    }
    return {"scenario": scenario, "ms": ms, "configs": configs}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per scenario")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker)))
        return 0
    rows = []
    for scenario in SCENARIOS:
        for _ in range(args.repeats):
            out = subprocess.run(
                [sys.executable, __file__, "--worker", scenario], capture_output=True, text=True, check=True
            ).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(f"{scenario}: {rows[-1]['ms']:.3f} ms", flush=True)
    print("\n| scenario (fresh process each) | ms per layer, 16 x 2048 | configurations chosen |")
    print("|---|---:|---|")
    for r in rows:
        cfg = "; ".join(f"`{k}` {v}" for k, v in sorted(r["configs"].items()))
        print(f"| {r['scenario']} | {r['ms']:.3f} | {cfg} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
