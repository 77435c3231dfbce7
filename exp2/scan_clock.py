"""Experiment: the Gluon Mamba-1 scan timed alone (back to back) and right after in_proj GEMMs (as in a forward)."""
import statistics, sys, time
import torch
from reprflow.kernels.ops import mamba_scan_op

dev = torch.device("cuda")
batch, T, ch, ds = 32, 2048, 5120, 16
g = torch.Generator("cuda").manual_seed(0)
def rnd(*s, scale=1.0):
    return (scale * torch.randn(*s, device=dev, generator=g)).to(torch.bfloat16)
xz = rnd(batch, T, 2 * ch); u, z = xz[..., :ch], xz[..., ch:]
dbl = rnd(batch, T, 160 + 2 * ds); B, C = dbl[..., 160:160 + ds], dbl[..., 160 + ds:]
delta = rnd(batch, T, ch, scale=0.5)
A = -torch.exp(torch.rand(ch, ds, device=dev, generator=g) * 2.7)
D, dtb = torch.ones(ch, device=dev), torch.full((ch,), -3.0, device=dev)
op = mamba_scan_op(dev, report={})
scan = next(c for c in op.candidates if c.name == "gluon").fn
h = rnd(batch * T, 2560); W = rnd(10240, 2560, scale=0.02); W2 = rnd(2560, 5120, scale=0.02); y2 = rnd(batch * T, 5120)
def s():
    return scan(u, delta, A, B, C, D, z, delta_bias=dtb, delta_softplus=True)
def gemms(k):
    for _ in range(k):
        torch.nn.functional.linear(h, W)
        torch.nn.functional.linear(y2, W2)
def ev_time(pre, n=12):
    ts = []
    for _ in range(n):
        pre()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); s(); b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    return ts
with torch.no_grad():
    s(); gemms(1); torch.cuda.synchronize()
    variants = {
        "scan back to back (no GEMM between)": lambda: None,
        "scan after 1 in_proj + 1 out_proj GEMM (~7 ms, as in a layer)": lambda: gemms(1),
        "scan after 4 of each (~29 ms)": lambda: gemms(4),
        "scan after 1 s idle": lambda: (torch.cuda.synchronize(), time.sleep(1.0)),
    }
    res = {k: [] for k in variants}
    for r in range(4):
        for k in (list(variants) if r % 2 == 0 else list(reversed(variants))):
            res[k] += ev_time(variants[k], n=6 if "idle" in k else 12)
    print(torch.cuda.get_device_name(), time.strftime("%F %T %Z"))
    print("| scan timed | median ms | min | max | n |\n|---|---:|---:|---:|---:|")
    for k, ts in res.items():
        print(f"| {k} | {statistics.median(ts):.3f} | {min(ts):.3f} | {max(ts):.3f} | {len(ts)} |", flush=True)
