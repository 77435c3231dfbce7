"""Mamba-1's dt_proj (K = rank 160, a write-bound GEMM) by a Triton kernel against F.linear, and in_proj
as one GEMM against two halves; then the whole Mamba-2.8B forward with the Triton dt_proj.

Usage (repository root, after `source benchmarks/gpu_site.sh`; PYTHONPATH with benchmarks/):
    python exp2/dtproj.py            # GEMM tables, then the forward (batch_tokens.py's timing)
"""

import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]


@triton.jit
def _skinny_gemm(
    a_ptr,
    w_ptr,
    c_ptr,
    M,
    s_am,
    s_wn,
    s_cm,
    K: tl.constexpr,
    BK: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    N_FAST: tl.constexpr,
):
    # C [M, N] = A [M, K] @ W [N, K]^T, K small (a few BK blocks, all loaded up front), fp32 accumulate
    if N_FAST:
        pid_n = tl.program_id(0)
        pid_m = tl.program_id(1)
    else:
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    mm = rm < M
    acc = tl.zeros([BM, BN], tl.float32)
    for k in tl.static_range(0, K, BK):
        rk = k + tl.arange(0, BK)
        a = tl.load(a_ptr + rm[:, None].to(tl.int64) * s_am + rk[None, :], mask=mm[:, None], other=0.0)
        w = tl.load(w_ptr + rn[:, None] * s_wn + rk[None, :])
        acc = tl.dot(a, tl.trans(w), acc)
    tl.store(c_ptr + rm[:, None].to(tl.int64) * s_cm + rn[None, :], acc.to(c_ptr.dtype.element_ty), mask=mm[:, None])


def skinny_linear(x, w, cfg):
    """F.linear(x, w) for x (..., K) with unit last stride, w (N, K) contiguous; cfg = (BM, BN, BK, warps, stages, n_fast)."""
    BM, BN, BK, nw, ns, nf = cfg
    K = x.shape[-1]
    N = w.shape[0]
    x2 = x.reshape(-1, K) if x.dim() != 2 else x
    M = x2.shape[0]
    out = torch.empty(*x.shape[:-1], N, device=x.device, dtype=x.dtype)
    grid = (N // BN, triton.cdiv(M, BM)) if nf else (triton.cdiv(M, BM), N // BN)
    _skinny_gemm[grid](
        x2, w, out, M, x2.stride(0), w.stride(0), N, K=K, BK=BK, BM=BM, BN=BN, N_FAST=nf, num_warps=nw, num_stages=ns
    )
    return out


CONFIGS = [
    (128, 256, 32, 8, 1, True),
    (128, 128, 32, 4, 1, True),
    (128, 128, 32, 8, 1, True),
    (64, 256, 32, 4, 1, True),
    (128, 256, 32, 8, 1, False),
    (256, 128, 32, 8, 1, True),
    (128, 64, 32, 4, 1, True),
    (64, 128, 32, 4, 1, True),
]


def bench(fns: dict, rounds=5, calls=20):
    times = {n: [] for n in fns}
    for r in range(rounds):
        for n in list(fns) if r % 2 == 0 else list(fns)[::-1]:
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            for _ in range(calls):
                fns[n]()
            e1.record()
            e1.synchronize()
            times[n].append(e0.elapsed_time(e1) / calls)
    return {n: (statistics.median(t), min(t), max(t)) for n, t in times.items()}


def gemm_tables():
    from kernels import copy_bytes_per_s

    dev = "cuda"
    g = torch.Generator(dev).manual_seed(0)
    M, rank, N, d = 65536, 160, 5120, 2560
    x_dbl = torch.randn(M, rank + 32, device=dev, generator=g).to(torch.bfloat16)
    dt_raw = x_dbl[:, :rank]
    w = (torch.randn(N, rank, device=dev, generator=g) / rank**0.5).to(torch.bfloat16)
    want = F.linear(dt_raw, w)
    fns = {"F.linear (the mixer)": lambda: F.linear(dt_raw, w)}
    for cfg in CONFIGS:
        try:
            got = skinny_linear(dt_raw, w, cfg)
        except Exception as e:
            print(f"# {cfg}: {type(e).__name__}: {str(e)[:200]}")
            continue
        diff = (got.float() - want.float()).abs().max().item()
        same = torch.equal(got, want)
        fns[f"triton {cfg} ({'bit-identical' if same else f'max diff {diff:.2e}'})"] = lambda c=cfg: skinny_linear(
            dt_raw, w, c
        )
    res = bench(fns)
    rate = copy_bytes_per_s("cuda")
    bound = 1e3 * (M * N * 2 + M * rank * 2) / rate
    print(
        f"{torch.cuda.get_device_name()} {time.strftime('%Y-%m-%d %H:%M %Z')}; dt_proj {M} x {rank} -> {N}; "
        f"memory bound {bound:.3f} ms (output write + input read at a copy's {rate / 1e12:.2f} TB/s)\n"
    )
    print("| dt_proj | ms median (min-max) | x memory bound |\n|---|---:|---:|")
    for n, (m, lo, hi) in res.items():
        print(f"| {n} | {m:.3f} ({lo:.3f}-{hi:.3f}) | {m / bound:.2f} |")
    best = min(
        (n for n in res if n.startswith("triton") and "bit-identical" in n), key=lambda n: res[n][0], default=None
    )
    # in_proj: one GEMM into [M, 2 d_inner] against two halves (each its own contiguous output)
    h = torch.randn(M, d, device=dev, generator=g).to(torch.bfloat16)
    wi = (torch.randn(2 * N, d, device=dev, generator=g) / d**0.5).to(torch.bfloat16)
    w0, w1 = wi[:N], wi[N:]
    ref = F.linear(h, wi)
    same = torch.equal(torch.cat([F.linear(h, w0), F.linear(h, w1)], -1), ref)
    res = bench(
        {
            "in_proj one GEMM (the mixer)": lambda: F.linear(h, wi),
            f"in_proj two halves ({'bit-identical' if same else 'differs'})": lambda: (
                F.linear(h, w0),
                F.linear(h, w1),
            ),
        }
    )
    print("\n| in_proj 65536 x 2560 -> 10240 | ms median (min-max) | TFLOP/s |\n|---|---:|---:|")
    for n, (m, lo, hi) in res.items():
        print(f"| {n} | {m:.3f} ({lo:.3f}-{hi:.3f}) | {2 * M * d * 2 * N / m / 1e9:.0f} |")
    return best and eval(best.split(" (", 1)[0].removeprefix("triton "))  # the config tuple


def forward(cfg):
    import batch_tokens
    from reprflow.kernels import mamba_mixers

    class _F:
        on = False

        def __getattr__(self, name):
            return getattr(F, name)

        def linear(self, x, w, b=None):
            if self.on and b is None and w.shape[1] == 160 and x.stride(-1) == 1:
                return skinny_linear(x, w, cfg)
            return F.linear(x, w, b)

    proxy = _F()
    mamba_mixers.F = proxy

    @contextlib.contextmanager
    def variant(c):
        proxy.on = c is not None
        try:
            yield
        finally:
            proxy.on = False

    batch_tokens.parse_gluon_config = lambda t: None if t == "default" else t
    batch_tokens.gluon_scan_config = variant
    return batch_tokens.main(
        [
            "--families",
            "mamba",
            "--shapes",
            "2048x32",
            "--batches",
            "3",
            "--gluon-configs",
            "default",
            f"dt_proj by triton {cfg}",
        ]
    )


if __name__ == "__main__":
    cfg = gemm_tables()
    print(f"\nforward with dt_proj by {cfg}", flush=True)
    if cfg:
        forward(cfg)
