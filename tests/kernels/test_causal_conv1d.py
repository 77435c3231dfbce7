"""Causal depthwise conv + SiLU: reference against a float64 loop, Triton against it."""

import numpy as np
import pytest
import torch

from reprflow.kernels.causal_conv1d import (
    CONV_BLOCKS,
    CONV_BLOCKS_TILE,
    causal_conv1d_silu,
    causal_conv1d_silu_reference,
    causal_conv1d_silu_triton,
)

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _naive(x, w, b, mask):
    batch, n_tokens, channels = x.shape
    width = w.shape[1]
    y = np.zeros_like(x)
    for bi in range(batch):
        for t in range(n_tokens):
            for d in range(channels):
                s = b[d] + sum(w[d, k] * x[bi, t - width + 1 + k, d] for k in range(width) if t - width + 1 + k >= 0)
                y[bi, t, d] = s / (1 + np.exp(-s)) * mask[bi, t]
    return y


def test_reference_matches_float64_loop(rng):
    x = rng.normal(size=(2, 7, 3))
    w = rng.normal(size=(3, 4))
    b = rng.normal(size=3)
    mask = np.array([[1] * 7, [1] * 5 + [0] * 2])
    got = causal_conv1d_silu_reference(
        torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), mask=torch.from_numpy(mask)
    )
    np.testing.assert_allclose(got.numpy(), _naive(x, w, b, mask), rtol=1e-12, atol=1e-12)


def test_reference_accepts_strided_view(rng):
    xz = torch.from_numpy(rng.normal(size=(1, 6, 8)))
    w, b = torch.from_numpy(rng.normal(size=(4, 3))), None
    got = causal_conv1d_silu_reference(xz[..., :4], w, b)
    want = causal_conv1d_silu_reference(xz[..., :4].contiguous(), w, b)
    assert got.is_contiguous() and torch.equal(got, want)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize(
    "blocks, tiled",
    [(CONV_BLOCKS, False), ((64, 256, 2), False), (CONV_BLOCKS_TILE, True), ((16, 256, 4), True)],
    ids=["default", "narrow", "tiled", "tiled-16x256"],
)
def test_triton_matches_reference(dtype, blocks, tiled):
    g = torch.Generator(device="cuda").manual_seed(7)
    xz = torch.randn(3, 77, 2 * 600, device="cuda", generator=g).to(dtype)
    x = xz[..., :600]  # a partial last block for both program widths
    w = torch.randn(600, 4, device="cuda", generator=g).to(dtype)
    b = torch.randn(600, device="cuda", generator=g).to(dtype)
    mask = torch.ones(3, 77, dtype=torch.long, device="cuda")
    mask[1, 60:] = 0
    want = causal_conv1d_silu_reference(x.double(), w.double(), b.double(), mask=mask)
    if blocks == CONV_BLOCKS and not tiled:  # the dispatcher's Triton path
        got = causal_conv1d_silu(x, w, b, mask=mask, impl="triton")
    else:
        got = causal_conv1d_silu_triton(x, w, b, mask=mask, blocks=blocks, tiled=tiled)
    assert got.dtype == dtype and got.is_contiguous()
    rel = (got.double() - want).norm() / want.norm()
    assert rel < (1e-2 if dtype == torch.bfloat16 else 1e-6), float(rel)
    assert torch.all(got[1, 60:] == 0)
