"""Workloads for ncu: each variant once inside cudaProfilerStart/Stop after warm-up."""
import sys
from pathlib import Path
import torch
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "exp")]
from scan_variants import VARIANTS, scan_inputs, _call  # noqa

names = sys.argv[1].split(",")
t, b = map(int, sys.argv[2].split("x"))
x = scan_inputs(b, t, torch.bfloat16, "cuda", seed=1)
for n in names:
    fn = VARIANTS[n]
    for _ in range(3):
        _call(fn, x)
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStart()
    _call(fn, x)
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStop()
    print("profiled", n, flush=True)
