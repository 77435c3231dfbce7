"""Mamba-2's SSD scan: ``mamba_ssm``'s Triton ``mamba_chunk_scan_combined`` by chunk size, and
reprflow's output kernel (``reprflow.kernels.ssd_scan.chunk_scan``) against ``mamba_ssm``'s.

The chunk size is a choice of the algorithm, not of the model: every chunk size computes the
same recurrence (the state is passed between chunks exactly), so a smaller chunk trades the
quadratic work inside a chunk for more states passed between chunks. For Mamba2-2.7B's shapes
(80 heads x 64, one group, 128 states; x, B, C strided views of the conv output as in the
mixer), bf16, one GPU, per chunk size: median ms per layer (CUDA events), the time of each
of its kernels (torch profiler), the autotuned configs, and the relative error against the
float64 recurrence (``reprflow.kernels.ssd.ssd_reference``) on the first 512 tokens of one
sequence. Then, at ``--chunk`` (the model's 256), the output kernel alone: ``mamba_ssm``'s
``_chunk_scan_fwd`` against ``chunk_scan`` at each launch configuration of ``--configs`` (same
inputs; the largest difference from ``mamba_ssm``'s output), and the whole forward
(``reprflow.kernels.ssd_scan.ssd_combined``) at the fastest configuration.

Usage (GPU)::

    PYTHONPATH=$PWD python benchmarks/ssd_chunks.py [--shapes 16x2048 8x4096] [--chunks 64 128 256]
"""

from __future__ import annotations

import argparse
import math

import torch

from reprflow.kernels.optional import load_mamba_ssm_triton
from reprflow.kernels.ssd import ssd_reference
from reprflow.kernels.ssd_scan import CHUNK_SCAN_CONFIG, chunk_scan, ssd_combined

HEADS, HEAD_DIM, GROUPS, STATES = 80, 64, 1, 128


def _time_ms(fn, repeats: int) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def inputs(batch: int, n_tokens: int, seed: int = 0) -> dict:
    """The mixer's SSD arguments at Mamba2-2.7B's sizes (x, B, C views into one conv output)."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    d_inner = HEADS * HEAD_DIM
    xbc = torch.randn(batch, n_tokens, d_inner + 2 * GROUPS * STATES, device="cuda", generator=g).bfloat16()
    dt = torch.randn(batch, n_tokens, HEADS, device="cuda", generator=g).bfloat16()
    a_log = torch.log(torch.empty(HEADS, device="cuda").uniform_(1, 16, generator=g))
    dt0 = torch.exp(torch.empty(HEADS, device="cuda").uniform_(math.log(1e-3), math.log(1e-1), generator=g))
    return dict(
        x=xbc[..., :d_inner].view(batch, n_tokens, HEADS, HEAD_DIM),
        dt=dt,
        A=-torch.exp(a_log),
        B=xbc[..., d_inner : d_inner + GROUPS * STATES].view(batch, n_tokens, GROUPS, STATES),
        C=xbc[..., d_inner + GROUPS * STATES :].view(batch, n_tokens, GROUPS, STATES),
        D=torch.ones(HEADS, device="cuda"),
        dt_bias=(dt0 + torch.log(-torch.expm1(-dt0))),  # inverse softplus
        dt_softplus=True,
        dt_limit=(0.0, float("inf")),
    )


def _sub(args: dict, n_tokens: int) -> dict:
    out = dict(args)
    for k in ("x", "dt", "B", "C"):
        out[k] = args[k][:1, :n_tokens]
    return out


def kernel_times(fn, repeats: int = 3) -> list[tuple[str, float]]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            fn()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    events.sort(key=lambda e: -e.device_time_total)
    return [(e.key, e.device_time_total / 1e3 / repeats) for e in events[:8]]


def best_configs() -> dict[str, str]:
    import importlib

    out = {}
    for mod_name in ("ssd_chunk_scan", "ssd_chunk_state", "ssd_state_passing", "ssd_bmm"):
        mod = importlib.import_module(f"mamba_ssm.ops.triton.{mod_name}")
        for name in dir(mod):
            obj = getattr(mod, name)
            cfg = getattr(obj, "best_config", None)
            if name.endswith("_fwd_kernel") and cfg is not None:
                out[name] = str(cfg)
    return out


#: BM, BK, HB, num_warps, num_stages
CONFIGS = (
    "64,64,2,4,2 64,64,1,4,2 64,32,2,4,2 64,64,2,4,3 64,64,2,8,2 128,64,2,8,2 128,64,1,8,2 "
    "128,32,2,8,2 128,64,1,4,2 32,64,2,4,2 32,32,2,4,3 64,64,1,4,3"
).split()


def _config(text: str) -> dict:
    bm, bk, hb, warps, stages = (int(v) for v in text.split(","))
    return {"BM": bm, "BK": bk, "HB": hb, "num_warps": warps, "num_stages": stages}


def output_kernels(a: dict, chunk: int, configs: list[str], repeats: int) -> tuple[list, dict]:
    """ms of mamba_ssm's _chunk_scan_fwd and of chunk_scan per config, on the same inputs."""
    from mamba_ssm.ops.triton.ssd_bmm import _bmm_chunk_fwd
    from mamba_ssm.ops.triton.ssd_chunk_scan import _chunk_scan_fwd
    from mamba_ssm.ops.triton.ssd_chunk_state import _chunk_cumsum_fwd, _chunk_state_fwd
    from mamba_ssm.ops.triton.ssd_state_passing import _state_passing_fwd

    x, B, C = a["x"], a["B"].contiguous(), a["C"].contiguous()
    batch, n_tokens, heads, head_dim = x.shape
    dA, dt = _chunk_cumsum_fwd(a["dt"], a["A"], chunk, dt_bias=a["dt_bias"], dt_softplus=True)
    st = _chunk_state_fwd(B, x, dt, dA, states_in_fp32=True)
    n_chunks = st.shape[1]
    st, _ = _state_passing_fwd(st.view(batch, n_chunks, heads, -1), dA[:, :, :, -1], out_dtype=C.dtype)
    st = st.view(batch, n_chunks, heads, head_dim, STATES)
    cb = _bmm_chunk_fwd(C, B, chunk, output_dtype=torch.float32)
    want = _chunk_scan_fwd(cb, x, dt, dA, C, st, D=a["D"])[0]
    rows = [
        ("mamba_ssm _chunk_scan_fwd", _time_ms(lambda: _chunk_scan_fwd(cb, x, dt, dA, C, st, D=a["D"]), repeats), 0.0)
    ]
    best = None
    for text in configs:
        cfg = _config(text)
        try:
            got = chunk_scan(cb, x, dt, dA, C, st, a["D"], config=cfg)
            ms = _time_ms(lambda cfg=cfg: chunk_scan(cb, x, dt, dA, C, st, a["D"], config=cfg), repeats)
        except Exception as exc:  # noqa: BLE001 - a config that does not compile (shared memory) is reported
            rows.append((f"chunk_scan {text}", float("nan"), float("nan")))
            print(f"config {text} failed: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
            continue
        diff = float((got.float() - want.float()).norm() / want.float().norm())
        rows.append((f"chunk_scan {text}", ms, diff))
        if best is None or ms < best[1]:
            best = (cfg, ms)
        print(f"chunk_scan {text}: {ms:.3f} ms, rel diff from mamba_ssm {diff:.2e}", flush=True)
    return rows, (best[0] if best else dict(CHUNK_SCAN_CONFIG))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", nargs="+", default=["16x2048", "8x4096"])
    p.add_argument("--chunks", nargs="+", type=int, default=[64, 128, 256])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--chunk", type=int, default=256)
    p.add_argument("--configs", nargs="*", default=CONFIGS, help="BM,BK,HB,num_warps,num_stages each")
    args = p.parse_args()
    kernels = load_mamba_ssm_triton()
    if kernels is None:
        raise SystemExit("mamba_ssm's Triton kernels are not importable here")
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | mamba_ssm {kernels.version}")
    rows = []
    for shape in args.shapes:
        batch, n_tokens = (int(v) for v in shape.split("x"))
        a = inputs(batch, n_tokens)
        small = _sub(a, 512)
        want = ssd_reference(**{k: (v.double() if torch.is_tensor(v) else v) for k, v in small.items()}, chunk_size=0)
        for chunk in args.chunks:

            def run(a=a, chunk=chunk):
                return kernels.chunk_scan_combined(chunk_size=chunk, **a)

            ms = _time_ms(run, args.repeats)
            got = kernels.chunk_scan_combined(chunk_size=chunk, **small).double()
            err = float((got - want).norm() / want.norm())
            parts = kernel_times(run)
            rows.append((shape, chunk, ms, err, parts, best_configs()))
            print(f"{shape} chunk {chunk}: {ms:.3f} ms, rel err {err:.2e}", flush=True)
    print("\n| batch x tokens | chunk | ms per layer | rel err vs float64 | kernels (ms) |")
    print("|---|---:|---:|---:|---|")
    for shape, chunk, ms, err, parts, _ in rows:
        ks = "; ".join(f"`{k.split('(')[0][:40]}` {v:.3f}" for k, v in parts)
        print(f"| {shape} | {chunk} | {ms:.3f} | {err:.2e} | {ks} |")
    print("\nautotuned configs (last shape, last chunk):")
    for k, v in rows[-1][5].items():
        print(f"  {k}: {v}")

    for shape in args.shapes:
        batch, n_tokens = (int(v) for v in shape.split("x"))
        a = inputs(batch, n_tokens)
        kernel_rows, best = output_kernels(a, args.chunk, args.configs, args.repeats)
        print(f"\n{shape}, chunk {args.chunk}: the output kernel alone (BM,BK,HB,warps,stages)\n")
        print("| kernel | ms | rel diff from mamba_ssm's |")
        print("|---|---:|---:|")
        for name, ms, diff in kernel_rows:
            print(f"| {name} | {ms:.3f} | {diff:.1e} |")
        small = _sub(a, 512)
        want = ssd_reference(**{k: (v.double() if torch.is_tensor(v) else v) for k, v in small.items()}, chunk_size=0)
        got = ssd_combined(chunk_size=args.chunk, config=best, **small).double()
        err = float((got - want).norm() / want.norm())
        ms_r = _time_ms(lambda a=a, best=best: ssd_combined(chunk_size=args.chunk, config=best, **a), args.repeats)
        ms_m = _time_ms(lambda a=a: kernels.chunk_scan_combined(chunk_size=args.chunk, **a), args.repeats)
        print(f"\nwhole SSD forward, {shape}: mamba_ssm {ms_m:.3f} ms, reprflow ssd_combined {ms_r:.3f} ms "
              f"({ms_m / ms_r:.2f}x) with {best}; rel err vs float64 {err:.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
