"""Causal attention of the paper's Transformers on each SDPA backend, and GPT-Neo's local layers.

For Pythia-2.8B (32 heads x 80) and GPT-Neo-2.7B (20 heads x 128) at batch x 2048 tokens,
bf16, one H200: the median ms of ``F.scaled_dot_product_attention(is_causal=True)`` on each
backend torch offers here (cuDNN, flash, memory-efficient), and TFLOP/s of the causal work
(4 B H T^2 D / 2). Then GPT-Neo's local layers (window 256): the dense band mask through
SDPA against reprflow's Triton sliding-window kernel (:mod:`reprflow.kernels.local_attention`),
with the relative error of each against float64 on the first batch row.

Usage (GPU)::

    PYTHONPATH=$PWD python benchmarks/attention_backends.py [--batch-size 16 --tokens 2048]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from microbench import median_ms, rel_err  # noqa: E402

BACKENDS = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
}


def _qkv(batch, heads, n_tokens, head_dim, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    # (batch, n_tokens, heads, head_dim) memory viewed as (batch, heads, n_tokens, head_dim), as the models do
    return [
        torch.randn(batch, n_tokens, heads, head_dim, device="cuda", generator=g).bfloat16().transpose(1, 2)
        for _ in range(3)
    ]


def causal_rows(name, batch, heads, n_tokens, head_dim, scale, repeats):
    q, k, v = _qkv(batch, heads, n_tokens, head_dim)
    flops = 4 * batch * heads * n_tokens**2 * head_dim / 2
    rows = []
    for backend, which in BACKENDS.items():
        try:
            with sdpa_kernel([which]):
                ms = median_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale), repeats)
            rows.append((name, f"causal, {backend}", ms, flops / ms / 1e9, float("nan")))
        except RuntimeError as exc:
            rows.append(
                (name, f"causal, {backend}: not available ({str(exc).splitlines()[0][:60]})", float("nan"), 0, 0)
            )
    return rows


def local_rows(batch, heads, n_tokens, head_dim, window, repeats):
    q, k, v = _qkv(batch, heads, n_tokens, head_dim, seed=1)
    i = torch.arange(n_tokens, device="cuda")
    band = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - window)  # (query, key)
    s = q[:1].double() @ k[:1].double().transpose(-1, -2)
    want = torch.softmax(s.masked_fill(~band, float("-inf")), -1) @ v[:1].double()
    useful = 4 * batch * heads * n_tokens * min(window, n_tokens) * head_dim  # upper bound of the band's work
    rows = []
    mask = band[None, None]
    dense = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)  # noqa: E731
    ms = median_ms(dense, repeats)
    rows.append(("gpt-neo local", "dense band mask, SDPA (before)", ms, useful / ms / 1e9, rel_err(dense()[:1], want)))
    try:
        from reprflow.kernels.local_attention import sliding_window_attention
    except ImportError as exc:  # pragma: no cover - older checkouts
        print(f"no Triton sliding-window kernel: {exc}")
        return rows
    tri = lambda: sliding_window_attention(q, k, v, window=window, scale=1.0)  # noqa: E731
    ms = median_ms(tri, repeats)
    rows.append(("gpt-neo local", "Triton sliding window (reprflow)", ms, useful / ms / 1e9, rel_err(tri()[:1], want)))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("attention_backends: needs a CUDA GPU", file=sys.stderr)
        return 2
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | {time.strftime('%Y-%m-%d %H:%M %Z')}")
    b, t = args.batch_size, args.tokens
    rows = causal_rows("pythia-2.8b (32 x 80)", b, 32, t, 80, 80**-0.5, args.repeats)
    rows += causal_rows("gpt-neo-2.7b global (20 x 128)", b, 20, t, 128, 1.0, args.repeats)
    rows += local_rows(b, 20, t, 128, 256, args.repeats)
    print("\n| model | attention | ms per layer | TFLOP/s | rel. err vs float64 |")
    print("|---|---|---:|---:|---:|")
    for name, what, ms, tflops, err in rows:
        print(f"| {name} | {what} | {ms:.3f} | {tflops:.0f} | {err:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
