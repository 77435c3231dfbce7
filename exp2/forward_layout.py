"""Experiment: Mamba-2.8B forward with chosen projections' weights stored column-major (same values)."""
import sys, time, statistics
from pathlib import Path
import torch
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from extract import build_model, full_configs
from kernels import measure_peak_tflops
from reprflow.capture import forward_states
from reprflow.fastpath import prepare_model

def relayout(model, names, col):
    n = 0
    for mod_name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and mod_name.split(".")[-1] in names:
            w = mod.weight.data
            is_col = w.stride(0) == 1
            if col and not is_col:
                mod.weight.data = w.t().contiguous().t()
            elif not col and is_col:
                mod.weight.data = w.contiguous()
            n += 1
    torch.cuda.empty_cache()
    return n

def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "mamba-2.8b"
    tokens, batch = int(sys.argv[2]), int(sys.argv[3])
    peak = measure_peak_tflops("cuda", False)
    config, _ = full_configs(False)[name]
    model = build_model(config, dtype=torch.bfloat16, seed=0, device="cuda")
    prepare_model(model)
    params = sum(p.numel() for p in model.parameters())
    g = torch.Generator(device="cuda").manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (batch, tokens), device="cuda", generator=g)
    mask = torch.ones_like(ids)
    forward_states(model, ids, mask); torch.cuda.synchronize()
    ref = forward_states(model, ids, mask)
    names_all = sys.argv[4].split(",")
    variants = {"row (today)": ("cublas", ()), **{f"col {n}": ("cublas", tuple(n.split("+"))) for n in names_all},
                "cublaslt row": ("cublaslt", ())}
    res = {v: [] for v in variants}
    print(torch.cuda.get_device_name(), time.strftime("%F %T %Z"), f"{name} {batch}x{tokens}, roofline {peak:.0f}", flush=True)
    for r in range(4):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for v in order:
            lib, names = variants[v]
            torch.backends.cuda.preferred_blas_library(lib)
            relayout(model, set(sum((n.split("+") for n in names_all), [])), False)
            relayout(model, set(names), True)
            forward_states(model, ids, mask, check_padding=False); torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(3):
                out = forward_states(model, ids, mask, check_padding=False)
            torch.cuda.synchronize()
            res[v].append((time.perf_counter() - t0) / 3)
            if r == 0:
                d = (out.last.float() - ref.last.float()).norm() / ref.last.float().norm()
                print(f"{v}: rel. diff of the last-token states vs today's {d.item():.2e}", flush=True)
    roof = 2 * params * batch * tokens / (peak * 1e12)
    for v, ts in res.items():
        print(f"| {v} | {1e3*min(ts):.1f}-{1e3*max(ts):.1f} ms | {100*roof/max(ts):.1f}-{100*roof/min(ts):.1f}% |", flush=True)

if __name__ == "__main__":
    main()
