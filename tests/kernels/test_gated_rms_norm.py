"""Mamba-2's gated RMSNorm: the reference is transformers' module, the Triton pass equals it."""

from __future__ import annotations

import pytest
import torch
from transformers.models.mamba2.modeling_mamba2 import MambaRMSNormGated

from reprflow.kernels.gated_rms_norm import gated_rms_norm, gated_rms_norm_reference

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _inputs(rows: int, channels: int, dtype: torch.dtype, device: str = "cpu", seed: int = 0):
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(2, rows, channels, device=device, generator=g).to(dtype)
    proj = torch.randn(2, rows, 2 * channels + 96, device=device, generator=g).to(dtype)
    z = proj[..., :channels]  # a strided slice of in_proj's output, as in the mixer
    w = (1 + 0.1 * torch.randn(channels, device=device, generator=g)).to(dtype)
    return x, z, w


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("group_size", [96, 48])
def test_reference_is_transformers_module(dtype, group_size):
    x, z, w = _inputs(7, 96, dtype)
    norm = MambaRMSNormGated(96, group_size=group_size, eps=1e-5).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(w)
        want = norm(x, z)
    got = gated_rms_norm_reference(x, z, w, eps=1e-5, group_size=group_size)
    assert got.dtype == want.dtype and torch.equal(got, want)
    assert torch.equal(gated_rms_norm(x, z, w, eps=1e-5, group_size=group_size), want)  # CPU: the reference


def test_bad_shapes_name_the_culprits():
    x, z, w = _inputs(3, 96, torch.float32)
    with pytest.raises(ValueError, match="group_size 50"):
        gated_rms_norm(x, z, w, eps=1e-5, group_size=50)
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="chunk 300"):
            gated_rms_norm(x.cuda(), z.cuda(), w.cuda(), eps=1e-5, group_size=96, chunk=300)
    with pytest.raises(ValueError, match=r"weight \(95,\)"):
        gated_rms_norm(x, z, w[:95], eps=1e-5, group_size=96)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("channels", "group_size"), [(5120, 5120), (1536, 768), (96, 96)])
@pytest.mark.parametrize(("chunk", "rows"), [(None, None), (256, None), (1024, None), (256, 2), (1024, 1), (512, 4)])
def test_triton_equals_transformers_on_gpu(dtype, channels, group_size, chunk, rows):
    x, z, w = _inputs(301, channels, dtype, device="cuda", seed=channels)  # 301 rows: a partial last program
    want = gated_rms_norm_reference(x, z, w, eps=1e-5, group_size=group_size)
    got = gated_rms_norm(x, z, w, eps=1e-5, group_size=group_size, chunk=chunk, rows=rows)
    assert got.dtype == want.dtype and got.shape == want.shape
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=2e-6, atol=2e-6)
    else:  # silu's exp differs from torch's by float32 ulps: at most one bf16 rounding step, rarely
        differ = got != want
        assert differ.float().mean().item() < 2e-3
        torch.testing.assert_close(got, want, rtol=8e-3, atol=8e-3)
