"""Experiment: the paper models' projections with the weight row- or column-major, under cuBLAS and cuBLASLt."""
import sys, time, statistics
from pathlib import Path
import torch, torch.nn.functional as F
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from gemm_shapes import MODELS
from kernels import measure_peak_tflops

def events_ms(fn, calls=10):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(calls):
        fn()
    e.record(); torch.cuda.synchronize()
    return s.elapsed_time(e) / calls

def main():
    peak = measure_peak_tflops("cuda", False)
    print(torch.cuda.get_device_name(), torch.__version__, time.strftime("%F %T %Z"), f"roofline {peak:.0f} TFLOP/s", flush=True)
    print("| model | proj | M x K -> N | variant | ms (median of 5 rounds) | min | TFLOP/s | % roofline |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for model, (tokens, projs) in MODELS.items():
        for name, k, n in projs:
            x = torch.randn(tokens, k, device="cuda", dtype=torch.bfloat16)
            w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k**0.5
            wc = w.t().contiguous().t()
            variants = {}
            for lib in ("cublas", "cublaslt"):
                for lay, ww in (("row", w), ("col", wc)):
                    variants[f"{lib}/{lay}"] = (lib, ww)
            times = {v: [] for v in variants}
            ref = F.linear(x, w).float()
            errs = {}
            for r in range(5):
                order = list(variants) if r % 2 == 0 else list(reversed(variants))
                for v in order:
                    lib, ww = variants[v]
                    torch.backends.cuda.preferred_blas_library(lib)
                    fn = lambda: F.linear(x, ww)
                    fn(); torch.cuda.synchronize()
                    times[v].append(events_ms(fn))
                    if r == 0:
                        errs[v] = (F.linear(x, ww).float() - ref).abs().max().item()
            flops = 2 * tokens * k * n
            for v, ts in times.items():
                med = statistics.median(ts)
                tf = flops / med / 1e9
                print(f"| {model} | {name} | {tokens} x {k} -> {n} | {v} (max diff {errs[v]:.2g}) | {med:.3f} | {min(ts):.3f} | {tf:.0f} | {100*tf/peak:.0f}% |", flush=True)
            del x, w, wc
    torch.backends.cuda.preferred_blas_library("cublas")

if __name__ == "__main__":
    main()
