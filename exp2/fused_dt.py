"""One-off (GPU): Mamba-1's dt_proj inside the Gluon scan (delta_proj=) against F.linear + the scan.

1. correctness: fused vs unfused Gluon scan, and both vs the float64 reference, at small shapes
   (a tail of n_tokens % 16, ranks 160 = 128 + 32, 48 = 32 + 16, 64 = 64 + 0);
2. per layer at Mamba-2.8B shapes (5120 channels, d_state 16, rank 160), alternating rounds:
   F.linear alone, the default scan alone, F.linear + default scan, F.linear + scan at unroll 16,
   the fused scan (unroll 16);
3. the whole Mamba-2.8B forward (random init, bf16), prepared as extraction runs it, against the
   same model with every mixer's scan fused, alternating rounds, at 32 x 2048 and 16 x 4096.

    PYTHONPATH=$PWD:benchmarks python exp2/fused_dt.py
"""
import functools
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, "benchmarks")
from reprflow.kernels.selective_scan import selective_scan_reference  # noqa: E402
import reprflow.kernels.selective_scan_gluon as sg  # noqa: E402
from reprflow.kernels.selective_scan_gluon import _fused_delta_layouts, selective_scan_gluon  # noqa: E402

dev = "cuda"
torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = True


def inputs(batch, n_tokens, channels, rank, d_state=16, seed=0):
    g = torch.Generator(dev).manual_seed(seed)
    r = lambda *s, scale=1.0: (scale * torch.randn(*s, device=dev, generator=g)).to(torch.bfloat16)  # noqa: E731
    xz = r(batch, n_tokens, 2 * channels)
    u, z = xz[..., :channels], xz[..., channels:]
    dbl = r(batch, n_tokens, rank + 2 * d_state)
    dt_low, B, C = dbl[..., :rank], dbl[..., rank : rank + d_state], dbl[..., rank + d_state :]
    W = r(channels, rank, scale=rank**-0.5)
    A = -torch.exp(torch.rand(channels, d_state, device=dev, generator=g) * 2.7)
    D = torch.ones(channels, device=dev)
    bias = torch.log(torch.expm1(torch.empty(channels, device=dev).uniform_(1e-3, 0.1, generator=g)))
    return u, z, dt_low, B, C, W, A, D, bias


FUSED = {  # name -> (config, extra launch options)
    "fused w1": ((1, 1, 16, True, 2), {}),
    "fused w1 maxnreg 168": ((1, 1, 16, True, 2), {"maxnreg": 168}),
    "fused w2": ((1, 2, 16, True, 2), {}),
    "fused w2 maxnreg 168": ((1, 2, 16, True, 2), {"maxnreg": 168}),
    "fused w4 maxnreg 128": ((1, 4, 16, True, 2), {"maxnreg": 128}),
    "fused w4 maxnreg 168": ((1, 4, 16, True, 2), {"maxnreg": 168}),
}


class _Launch:
    """The Gluon kernel with extra launch options (maxnreg) for the calls made inside ``with``."""

    def __init__(self, kernel, extra):
        self.kernel, self.extra = kernel, extra

    def __getitem__(self, grid):
        launch = self.kernel[grid]
        return lambda *a, **kw: launch(*a, **kw, **self.extra)


def launch_fused(cfg, extra, u, dt_low, A, B, C, D, z, W, **kw):
    orig = sg._selective_scan_gluon_kernel
    sg._selective_scan_gluon_kernel = _Launch(orig, extra)
    try:
        return selective_scan_gluon(u, dt_low, A, B, C, D, z, config=cfg, delta_proj=W, **kw)
    finally:
        sg._selective_scan_gluon_kernel = orig


def check(batch, n_tokens, channels, rank):
    u, z, dt_low, B, C, W, A, D, bias = inputs(batch, n_tokens, channels, rank)
    assert _fused_delta_layouts(u, dt_low, W, 1, 16, 2), "fused form not applicable"
    dt = F.linear(dt_low, W)
    kw = dict(delta_bias=bias, delta_softplus=True)
    ref = selective_scan_reference(u.double(), dt.double(), A.double(), B.double(), C.double(), D.double(), z.double(),
                                   delta_bias=bias.double(), delta_softplus=True).float()
    unf = selective_scan_gluon(u, dt, A, B, C, D, z, config=(1, 1, 16, True, 2), **kw).float()
    fus = selective_scan_gluon(u, dt_low, A, B, C, D, z, config=(1, 1, 16, True, 2), delta_proj=W, **kw).float()
    for name, (cfg, extra) in FUSED.items():  # every variant measured gives the same values
        other = launch_fused(cfg, extra, u, dt_low, A, B, C, D, z, W, **kw).float()
        assert torch.equal(other, fus), name
    scale = ref.abs().max().item()
    e_unf = (unf - ref).abs().max().item() / scale
    e_fus = (fus - ref).abs().max().item() / scale
    e_uf = (fus - unf).abs().max().item() / scale
    same = (fus == unf).float().mean().item()
    print(f"check B={batch} T={n_tokens} D={channels} R={rank}: max|unfused-ref|/max|ref| {e_unf:.2e}, "
          f"fused {e_fus:.2e}, fused-unfused {e_uf:.2e}, identical {100 * same:.2f}%", flush=True)
    assert e_fus < 3 * e_unf + 1e-3, "fused scan less accurate than the unfused one"


def per_layer(batch, n_tokens, rounds=5, calls=20):
    u, z, dt_low, B, C, W, A, D, bias = inputs(batch, n_tokens, 5120, 160)
    kw = dict(delta_bias=bias, delta_softplus=True)
    dt = F.linear(dt_low, W)
    variants = {
        "F.linear (dt_proj)": lambda: F.linear(dt_low, W),
        "scan (default, unroll 8)": lambda: selective_scan_gluon(u, dt, A, B, C, D, z, **kw),
        "dt_proj + scan (today)": lambda: selective_scan_gluon(u, F.linear(dt_low, W), A, B, C, D, z, **kw),
        "dt_proj + scan unroll 16": lambda: selective_scan_gluon(u, F.linear(dt_low, W), A, B, C, D, z, config=(1, 1, 16, True, 2), **kw),
    }
    for name, (cfg, extra) in FUSED.items():
        variants[name] = functools.partial(launch_fused, cfg, extra, u, dt_low, A, B, C, D, z, W, **kw)
    ms = {k: [] for k in variants}
    for fn in variants.values():
        fn()
    torch.cuda.synchronize()
    for r in range(rounds):
        for name in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            for _ in range(calls):
                variants[name]()
            e.record()
            torch.cuda.synchronize()
            ms[name].append(s.elapsed_time(e) / calls)
    print(f"\nper layer, B={batch} T={n_tokens} (ms, median of {rounds} rounds x {calls} calls; min-max)")
    for k, v in ms.items():
        print(f"| {k} | {statistics.median(v):.3f} | {min(v):.3f}-{max(v):.3f} |", flush=True)
    return ms


def forward(shapes, best, rounds=4, calls=3):
    from kernels import full_size_forward, random_ids
    from transformers.models.mamba.modeling_mamba import MambaMixer

    from reprflow.kernels.mamba_mixers import mamba_mixer_forward, patch_forward

    config, run = full_size_forward("mamba-2.8b")
    model = run.__closure__[0].cell_contents
    mixers = [m for m in model.modules() if isinstance(m, MambaMixer)]
    fast0 = mixers[0]._reprflow_fast.__func__
    cells = dict(zip(fast0.__code__.co_freevars, (c.cell_contents for c in fast0.__closure__)))
    print("\nprepared forward's kernels:", {k: getattr(v, "chosen", v) for k, v in cells.items()}, flush=True)
    originals = {id(m): (m.forward, m._reprflow_fast) for m in mixers}

    def fused_scan(u, dt_low, A, B, C, D=None, z=None, *, delta_bias=None, delta_softplus=False, delta_proj=None):
        cfg, extra = FUSED[best]
        return launch_fused(cfg, extra, u, dt_low, A, B, C, D, z, delta_proj, delta_bias=delta_bias, delta_softplus=delta_softplus)

    fused_scan.fuses_delta_proj = True

    def set_fused(on):
        for m in mixers:
            if on:
                def fast(self, h, mask, residual=None):
                    return mamba_mixer_forward(self, h, mask, scan_impl=fused_scan, conv_impl=cells["conv_impl"], residual=residual)
                patch_forward(m, fast)
            else:
                m.forward, m._reprflow_fast = originals[id(m)]

    ids = random_ids(config.vocab_size, shapes, dev)
    for (t, b), x in ids.items():
        set_fused(False); ref = run(x).float()
        set_fused(True); got = run(x).float()
        rel = ((got - ref).norm() / ref.norm()).item()
        print(f"forward {b}x{t}: last-token states fused vs prepared, relative L2 {rel:.2e}", flush=True)
        res = {False: [], True: []}
        for r in range(rounds):
            for on in ((False, True) if r % 2 == 0 else (True, False)):
                set_fused(on)
                run(x); torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(calls):
                    run(x)
                torch.cuda.synchronize()
                res[on].append(1e3 * (time.perf_counter() - t0) / calls)
        a, f = statistics.median(res[False]), statistics.median(res[True])
        print(f"| {b} x {t} | prepared {a:.1f} ms ({min(res[False]):.1f}-{max(res[False]):.1f}) | fused {f:.1f} ms "
              f"({min(res[True]):.1f}-{max(res[True]):.1f}) | {a / f:.4f}x |", flush=True)


if __name__ == "__main__":
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    import triton
    print("triton", triton.__version__, flush=True)
    for args in ((2, 1000, 256, 160), (2, 777, 256, 48), (1, 512, 128, 64), (2, 2048, 512, 160)):
        check(*args)
    ms = per_layer(32, 2048)
    per_layer(16, 4096)
    best = min(FUSED, key=lambda k: statistics.median(ms[k]))
    print("forward with", best, flush=True)
    forward([(2048, 32), (4096, 16)], best)
