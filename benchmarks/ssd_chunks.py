"""Mamba-2's SSD scan (``mamba_ssm``'s Triton ``mamba_chunk_scan_combined``) by chunk size.

The chunk size is a choice of the algorithm, not of the model: every chunk size computes the
same recurrence (the state is passed between chunks exactly), so a smaller chunk trades the
quadratic work inside a chunk for more states passed between chunks. For Mamba2-2.7B's shapes
(80 heads x 64, one group, 128 states; x, B, C strided views of the conv output as in the
mixer), bf16, one GPU, per chunk size: median ms per layer (CUDA events), the time of each
of its kernels (torch profiler), the autotuned configs, and the relative error against the
float64 recurrence (``reprflow.kernels.ssd.ssd_reference``) on the first 512 tokens of one
sequence.

With ``--output-kernel``, instead, at the model's chunk (256): the chunk states and their
passing, ``mamba_ssm``'s two kernels against reprflow's fused ``chunk_states_passed``
(:mod:`reprflow.kernels.ssd_states`) at six launch configurations; the output kernel alone,
``mamba_ssm``'s ``_chunk_scan_fwd`` against reprflow's Gluon ``chunk_scan_gluon``
(:mod:`reprflow.kernels.ssd_chunk_scan_gluon`; with and without ``prefetch_cb``, ``row_loop`` and ``head_pair``,
and reading ``C B^T`` in float32 or rounded to bf16)
on the same inputs (ms, CUDA events; their
relative difference; tensor-core and memory bounds), then the whole forward
(``mamba_chunk_scan_combined`` against reprflow's ``ssd_combined``, with and without the fused
states) and each against the float64 recurrence.

Usage (GPU)::

    PYTHONPATH=$PWD python benchmarks/ssd_chunks.py [--shapes 32x2048 16x4096] [--chunks 64 128 256]
    PYTHONPATH=$PWD python benchmarks/ssd_chunks.py --output-kernel [--shapes 32x2048 16x4096]
"""

from __future__ import annotations

import argparse
import math
import sys

import torch

from reprflow.kernels.autotune_by_size import ssd_autotuners
from reprflow.kernels.optional import load_mamba_ssm_triton
from reprflow.kernels.ssd import ssd_reference

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from microbench import median_ms, rel_err  # noqa: E402

HEADS, HEAD_DIM, GROUPS, STATES = 80, 64, 1, 128


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
    """The configuration each forward SSD kernel's autotuner last chose, by kernel name."""
    return {
        t.base_fn.__name__: str(t.best_config)
        for t in ssd_autotuners()
        if t.base_fn.__name__.endswith("_fwd_kernel") and getattr(t, "best_config", None) is not None
    }


def output_kernel(a: dict, kernels, chunk: int, repeats: int, peak_tflops: float, hbm_bytes_per_s: float) -> None:
    """Print mamba_ssm's _chunk_scan_fwd against chunk_scan_gluon on the same inputs, then the whole SSD."""
    from mamba_ssm.ops.triton.ssd_chunk_scan import _chunk_scan_fwd

    from reprflow.kernels.ssd_chunk_scan_gluon import chunk_scan_gluon
    from reprflow.kernels.ops import GLUON_SSD_SHAPES
    from reprflow.kernels.ssd_pipeline import ssd_stages, tuned_ssd_combined

    x, C, cb, dt, dA, st = ssd_stages(
        a["x"], a["dt"], a["A"], a["B"], a["C"], chunk, dt_bias=a["dt_bias"], dt_softplus=True, fused_states=False
    )
    batch, n_tokens, heads, head_dim = x.shape
    n_chunks = st.shape[1]
    theirs = _chunk_scan_fwd(cb, x, dt, dA, C, st, D=a["D"])[0]
    ms_t = median_ms(lambda: _chunk_scan_fwd(cb, x, dt, dA, C, st, D=a["D"]), repeats)
    cb16 = cb.to(x.dtype)  # what ssd_combined(..., rounded_cb=True) hands the kernel
    ours = {}  # variant -> (ms, rel diff from mamba_ssm's)
    for kw in (
        {"prefetch_cb": True},
        {"prefetch_cb": False},
        {"prefetch_cb": True, "row_loop": True},
        {"prefetch_cb": False, "row_loop": True},
        {"prefetch_cb": True, "head_pair": True},
        {"prefetch_cb": False, "head_pair": True},
        {"prefetch_cb": False, "row_loop": True, "head_pair": True},
        {"rounded_cb": True, "prefetch_cb": False, "row_loop": True},
        {"rounded_cb": True, "prefetch_cb": True, "row_loop": True},
        {"rounded_cb": True, "prefetch_cb": False, "row_loop": True, "head_pair": True},
    ):
        kw = dict(kw)
        tiles = cb16 if kw.pop("rounded_cb", False) else cb
        label = ("C B^T in bf16, " if tiles is cb16 else "") + ", ".join(f"{k}={v}" for k, v in kw.items())
        got = chunk_scan_gluon(tiles, x, dt, dA, C, st, a["D"], **kw)
        diff = float((got.float() - theirs.float()).norm() / theirs.float().norm())
        ours[label] = (
            median_ms(lambda kw=kw, tiles=tiles: chunk_scan_gluon(tiles, x, dt, dA, C, st, a["D"], **kw), repeats),
            diff,
        )
    # lower triangle of each chunk x head_dim, plus C S^T; bytes: cb once per group, x, C, states, out
    flops = 2 * batch * n_chunks * heads * head_dim * (chunk * (chunk + 1) / 2 + chunk * STATES)
    nbytes = cb.numel() * 4 + 2 * x.numel() * 2 + C.numel() * 2 + st.numel() * 2  # float32 C B^T
    print(f"\n{batch}x{n_tokens}, chunk {chunk}: the output kernel alone (tensor-core bound "
          f"{1e3 * flops / (peak_tflops * 1e12):.3f} ms, memory bound {1e3 * nbytes / hbm_bytes_per_s:.3f} ms)\n")  # fmt: skip
    print("| kernel | ms | rel diff from mamba_ssm's |")
    print("|---|---:|---:|")
    print(f"| mamba_ssm `_chunk_scan_fwd` | {ms_t:.3f} | 0 |")
    for variant, (ms_o, diff) in ours.items():
        print(f"| reprflow `chunk_scan_gluon`, {variant} | {ms_o:.3f} | {diff:.1e} |")

    # each candidate as the chooser runs it: mamba_ssm's stages tuned per size class. Unwrapped,
    # they would keep the configurations of whichever call tuned them first (on 2026-12-05, a
    # 512-token check's, which made the fused_states and unfused rows slower than their kernels)
    candidates = {  # name -> the forward, with the chooser's names for its candidates
        "mamba_ssm": kernels.chunk_scan_combined,
        **{name: tuned_ssd_combined(**shape) for name, shape in GLUON_SSD_SHAPES.items()},
        "fused_states (+ mamba_ssm's output)": tuned_ssd_combined(output="mamba_ssm"),
        "Gluon output without the fused states": tuned_ssd_combined(fused_states=False),
    }
    small = _sub(a, 512)
    want = ssd_reference(**{k: (v.double() if torch.is_tensor(v) else v) for k, v in small.items()}, chunk_size=0)
    parts = []
    for name, forward in candidates.items():
        err = rel_err(forward(chunk_size=chunk, **small), want)
        ms = median_ms(lambda forward=forward: forward(chunk_size=chunk, **a), repeats)
        parts.append(f"{name} {ms:.3f} ms ({err:.2e})")
    print("\nwhole SSD forward (ms; rel err vs float64): " + "; ".join(parts), flush=True)


def states_kernels(a: dict, chunk: int, repeats: int, hbm_bytes_per_s: float) -> None:
    """Print mamba_ssm's chunk-state + state-passing kernels against reprflow's fused one."""
    from mamba_ssm.ops.triton.ssd_chunk_state import _chunk_cumsum_fwd, _chunk_state_fwd
    from mamba_ssm.ops.triton.ssd_state_passing import _state_passing_fwd

    from reprflow.kernels.ssd_states import chunk_states_passed

    x, B = a["x"], a["B"]
    batch, n_tokens, heads, head_dim = x.shape
    dA, dt = _chunk_cumsum_fwd(a["dt"], a["A"], chunk, dt_bias=a["dt_bias"], dt_softplus=True)
    Bc = B.contiguous()

    def theirs():
        st = _chunk_state_fwd(Bc, x, dt, dA, states_in_fp32=True)
        out, _ = _state_passing_fwd(st.view(batch, st.shape[1], heads, -1), dA[:, :, :, -1], out_dtype=x.dtype)
        return out.view(batch, st.shape[1], heads, head_dim, STATES)

    ref = theirs().float()
    ms_state = median_ms(lambda: _chunk_state_fwd(Bc, x, dt, dA, states_in_fp32=True), repeats)
    ms_both = median_ms(theirs, repeats)
    # read x and (per head, from L2 after the first) B once, write the bf16 entering states
    nbytes = 2 * x.numel() + 2 * Bc.numel() + 2 * ref.numel()
    print(f"\n{batch}x{n_tokens}, chunk {chunk}: chunk states and their passing (memory bound "
          f"{1e3 * nbytes / hbm_bytes_per_s:.3f} ms)\n")  # fmt: skip
    print("| kernel | ms | rel diff from mamba_ssm's |")
    print("|---|---:|---:|")
    print(
        f"| mamba_ssm `_chunk_state_fwd` + `_state_passing_fwd` | {ms_both:.3f} ({ms_state:.3f} + {ms_both - ms_state:.3f}) | 0 |"
    )
    for block_k, warps, stages in ((32, 8, 2), (32, 8, 3), (64, 8, 2), (32, 4, 2), (64, 4, 3), (16, 8, 3)):
        cfg = dict(block_k=block_k, num_warps=warps, num_stages=stages)
        try:
            got = chunk_states_passed(x, B, dt, dA, **cfg).float()
            ms = median_ms(lambda cfg=cfg: chunk_states_passed(x, B, dt, dA, **cfg), repeats)
        except Exception as exc:  # noqa: BLE001 - a configuration that does not compile here
            print(f"| reprflow `chunk_states_passed` {cfg} | failed: {type(exc).__name__} | |")
            continue
        diff = float((got - ref).norm() / ref.norm())
        print(
            f"| reprflow `chunk_states_passed` block_k={block_k} warps={warps} stages={stages} | {ms:.3f} | {diff:.1e} |"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", nargs="+", default=["32x2048", "16x4096"])  # the paper config's 64K tokens
    p.add_argument("--chunks", nargs="+", type=int, default=[64, 128, 256])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--output-kernel", action="store_true", help="mamba_ssm's output kernel against reprflow's")
    args = p.parse_args()
    kernels = load_mamba_ssm_triton()
    if kernels is None:
        raise SystemExit("mamba_ssm's Triton kernels are not importable here")
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | mamba_ssm {kernels.version}")
    if args.output_kernel:
        from kernels import H200_BF16_TFLOPS, copy_bytes_per_s  # benchmarks/kernels.py

        rate = copy_bytes_per_s("cuda")
        for shape in args.shapes:
            batch, n_tokens = (int(v) for v in shape.split("x"))
            a = inputs(batch, n_tokens)
            states_kernels(a, 256, args.repeats, rate)
            output_kernel(a, kernels, 256, args.repeats, H200_BF16_TFLOPS, rate)
        return
    rows = []
    for shape in args.shapes:
        batch, n_tokens = (int(v) for v in shape.split("x"))
        a = inputs(batch, n_tokens)
        small = _sub(a, 512)
        want = ssd_reference(**{k: (v.double() if torch.is_tensor(v) else v) for k, v in small.items()}, chunk_size=0)
        for chunk in args.chunks:

            def run(a=a, chunk=chunk):
                return kernels.chunk_scan_combined(chunk_size=chunk, **a)

            ms = median_ms(run, args.repeats)
            err = rel_err(kernels.chunk_scan_combined(chunk_size=chunk, **small), want)
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


if __name__ == "__main__":
    main()
