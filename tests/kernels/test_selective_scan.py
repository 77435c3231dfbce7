"""Selective scan: torch reference against a float64 loop, Triton kernel against both."""

import math

import numpy as np
import pytest
import torch

from reprflow.kernels.selective_scan import (
    selective_scan,
    selective_scan_autograd,
    selective_scan_reference,
    selective_scan_triton,
)

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _naive_scan(u, delta, A, B, C, D, z, delta_bias):
    """Scalar float64 loops straight from the recurrence (Gu & Dao 2023, Alg. 2)."""
    batch, n_tokens, channels = u.shape
    d_state = A.shape[1]
    y = np.zeros((batch, n_tokens, channels))
    for b in range(batch):
        for d in range(channels):
            h = np.zeros(d_state)
            for t in range(n_tokens):
                x = delta[b, t, d] + delta_bias[d]
                dt = x if x > 20 else math.log1p(math.exp(x))
                h = np.exp(dt * A[d]) * h + dt * B[b, t] * u[b, t, d]
                out = h @ C[b, t] + D[d] * u[b, t, d]
                y[b, t, d] = out * z[b, t, d] / (1 + math.exp(-z[b, t, d]))
    return y


def _inputs(rng, batch, n_tokens, channels, d_state):
    u = rng.normal(size=(batch, n_tokens, channels))
    delta = rng.normal(-1.0, 1.5, size=(batch, n_tokens, channels))
    A = -np.exp(rng.normal(size=(channels, d_state)))
    B = rng.normal(size=(batch, n_tokens, d_state))
    C = rng.normal(size=(batch, n_tokens, d_state))
    D = rng.normal(size=channels)
    z = rng.normal(size=(batch, n_tokens, channels))
    bias = rng.normal(size=channels)
    return u, delta, A, B, C, D, z, bias


def test_reference_matches_float64_loop(rng):
    arrays = _inputs(rng, 2, 9, 3, 4)
    want = _naive_scan(*arrays)
    t = [torch.from_numpy(a) for a in arrays]
    got = selective_scan_reference(
        t[0], t[1], t[2], t[3], t[4], t[5], t[6], delta_bias=t[7], delta_softplus=True, compute_dtype=torch.float64
    )
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12)


def test_reference_without_optional_terms_is_plain_recurrence(rng):
    u, delta, A, B, C, *_ = [torch.from_numpy(a) for a in _inputs(rng, 1, 5, 2, 2)]
    got = selective_scan_reference(u, delta, A, B, C, compute_dtype=torch.float64)
    h = torch.zeros(2, 2, dtype=torch.float64)
    for t in range(5):
        h = torch.exp(delta[0, t, :, None] * A) * h + (delta[0, t] * u[0, t])[:, None] * B[0, t]
        assert torch.allclose(got[0, t], h @ C[0, t], rtol=1e-12)


def test_autograd_scan_matches_float64_loop_and_its_gradients(rng):
    """The training scan: values against the scalar float64 loop, gradients of a loss
    against autograd through the float64 reference (an independent arrangement)."""
    arrays = _inputs(rng, 2, 11, 3, 4)
    want = _naive_scan(*arrays)
    t64 = [torch.from_numpy(a).requires_grad_() for a in arrays]
    got64 = selective_scan_autograd(*t64[:7], delta_bias=t64[7], delta_softplus=True)
    np.testing.assert_allclose(got64.detach().numpy(), want, rtol=1e-10, atol=1e-12)

    ref = [a.detach().clone().requires_grad_() for a in t64]
    weights = torch.from_numpy(rng.normal(size=want.shape))
    (
        selective_scan_reference(*ref[:7], delta_bias=ref[7], delta_softplus=True, compute_dtype=torch.float64)
        * weights
    ).sum().backward()
    t32 = [a.detach().float().requires_grad_() for a in t64]
    got32 = selective_scan_autograd(*t32[:7], delta_bias=t32[7], delta_softplus=True)
    assert got32.dtype == torch.float32
    (got32 * weights.float()).sum().backward()
    for name, a, b in zip("u delta A B C D z delta_bias".split(), t32, ref):
        err = (a.grad.double() - b.grad).norm() / b.grad.norm()
        assert err < 1e-5, f"grad of {name}: relative error {err:.2e}"


def test_shape_errors_name_the_tensor(rng):
    u, delta, A, B, C, D, z, bias = [torch.from_numpy(a) for a in _inputs(rng, 1, 4, 3, 2)]
    with pytest.raises(ValueError, match="B must be"):
        selective_scan_reference(u, delta, A, B[:, :2], C)
    with pytest.raises(ValueError, match="impl"):
        selective_scan(u, delta, A, B, C, impl="cuda")


def _gpu_inputs(shape, dtype, seed):
    batch, n_tokens, channels, d_state = shape
    g = torch.Generator(device="cuda").manual_seed(seed)
    dev = "cuda"
    # views into fused projections, as the mixer passes them
    xz = torch.randn(batch, n_tokens, 2 * channels, device=dev, generator=g).to(dtype)
    u, z = xz[..., :channels], xz[..., channels:]
    delta = (torch.randn(batch, n_tokens, channels, device=dev, generator=g) - 1).to(dtype)
    x_dbl = torch.randn(batch, n_tokens, 3 + 2 * d_state, device=dev, generator=g).to(dtype)
    B, C = x_dbl[..., 3 : 3 + d_state], x_dbl[..., 3 + d_state :]
    A = -torch.exp(torch.randn(channels, d_state, device=dev, generator=g))
    D = torch.randn(channels, device=dev, generator=g)
    bias = torch.randn(channels, device=dev, generator=g)
    return u, delta, A, B, C, D, z, bias


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(2, 67, 80, 16), (1, 300, 33, 16), (3, 5, 64, 8)])
def test_triton_matches_float64(dtype, shape):
    u, delta, A, B, C, D, z, bias = _gpu_inputs(shape, dtype, hash(shape) % 2**31)
    want = selective_scan_reference(
        u, delta, A, B, C, D, z, delta_bias=bias, delta_softplus=True, compute_dtype=torch.float64
    )
    got = selective_scan(u, delta, A, B, C, D, z, delta_bias=bias, delta_softplus=True, impl="triton")
    assert got.dtype == dtype and got.shape == u.shape
    assert torch.isfinite(got).all()
    rel = (got.double() - want).norm() / want.norm()
    assert rel < (1e-2 if dtype == torch.bfloat16 else 1e-5), float(rel)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("config", [(32, 1, 1), (64, 2, 8)])
def test_triton_launch_configs_match_float64(config):
    """Launch configurations other than the default: one step per iteration, and a
    two-warp program with 8 steps per iteration (300 tokens: not a multiple of 8)."""
    block_d, num_warps, unroll = config
    u, delta, A, B, C, D, z, bias = _gpu_inputs((1, 300, 33, 16), torch.bfloat16, 3)
    want = selective_scan_reference(
        u, delta, A, B, C, D, z, delta_bias=bias, delta_softplus=True, compute_dtype=torch.float64
    )
    got = selective_scan_triton(
        u,
        delta,
        A,
        B,
        C,
        D,
        z,
        delta_bias=bias,
        delta_softplus=True,
        block_d=block_d,
        num_warps=num_warps,
        unroll=unroll,
    )
    rel = float((got.double() - want).norm() / want.norm())
    assert got.dtype == torch.bfloat16 and rel < 1e-2, (config, rel)


@requires_cuda
@pytest.mark.gpu
def test_every_scan_candidate_matches_float64():
    """Every timed candidate of the mamba_scan op (the chooser's choices) on a mixer-like
    bf16 and float32 input, 2 x 1000 tokens x 320 channels, against float64."""
    from reprflow.kernels.ops import mamba_scan_op

    op = mamba_scan_op(torch.device("cuda"), report={})
    names = [c.name for c in op.candidates if c.timed]
    assert "triton" in names
    for dtype in (torch.bfloat16, torch.float32):
        u, delta, A, B, C, D, z, bias = _gpu_inputs((2, 1000, 320, 16), dtype, 5)
        want = selective_scan_reference(
            u, delta, A, B, C, D, z, delta_bias=bias, delta_softplus=True, compute_dtype=torch.float64
        )
        for c in op.candidates:
            if c.timed:
                got = c.fn(u, delta, A, B, C, D, z, delta_bias=bias, delta_softplus=True)
                rel = float((got.double() - want).norm() / want.norm())
                assert rel < (1e-2 if dtype == torch.bfloat16 else 1e-4), (c.name, dtype, rel)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize(
    "config", [None, (1, 1, 2, False), (4, 2, 3, True), (1, 1, 4, True, 3), (2, 4, 4, True, 3), (1, 2, 2, True, 6)]
)
@pytest.mark.parametrize("shape", [(2, 67, 80, 16), (1, 300, 33, 16), (3, 5, 64, 8), (1, 2, 40, 16)])
def test_gluon_matches_float64(dtype, config, shape):
    """The Gluon scan at its default and other layouts, with its inputs through registers or
    through shared memory (a fifth entry, stages): token counts that leave a tail after the
    unrolled loop (and fewer tokens than one block, or than the pipeline's stages), channels
    not a multiple of a program's block, d_state 8 and 16."""
    from reprflow.kernels.selective_scan_gluon import gluon_available, selective_scan_gluon

    if not gluon_available():
        pytest.skip("Triton's Gluon does not import here")
    if config is not None and config[0] > shape[3]:
        pytest.skip("more lanes per channel than states")
    u, delta, A, B, C, D, z, bias = _gpu_inputs(shape, dtype, hash(shape) % 2**31)
    want = selective_scan_reference(
        u, delta, A, B, C, D, z, delta_bias=bias, delta_softplus=True, compute_dtype=torch.float64
    )
    got = selective_scan_gluon(u, delta, A, B, C, D, z, delta_bias=bias, delta_softplus=True, config=config)
    assert got.dtype == dtype and got.shape == u.shape
    rel = float((got.double() - want).norm() / want.norm())
    assert rel < (1e-2 if dtype == torch.bfloat16 else 1e-5), (config, rel)
    # without the optional terms: the plain recurrence (positive time steps, as softplus gives:
    # a negative one makes exp(delta * A) grow, and hundreds of such steps overflow)
    delta = torch.nn.functional.softplus(delta.float()).to(dtype)
    want = selective_scan_reference(u, delta, A, B, C, compute_dtype=torch.float64)
    got = selective_scan_gluon(u, delta, A, B, C, config=config)
    rel = float((got.double() - want).norm() / want.norm())
    assert rel < (1e-2 if dtype == torch.bfloat16 else 1e-5), (config, "plain", rel)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("fma_exps", [0, 2, 16])
def test_gluon_decays_on_either_pipe_match_float64(fma_exps):
    """The decays split between the special-function unit and the FMA pipe's polynomial
    (``fma_exps`` of every 16; the default is 1): float32 runs against float64 at the bound of
    the all-``ex2`` scan, and each split against the default within float32 rounding. Time steps
    from ~1e-4 to ~20, so decays span 1 down to below 2**-126."""
    from reprflow.kernels.selective_scan_gluon import gluon_available, selective_scan_gluon

    if not gluon_available():
        pytest.skip("Triton's Gluon does not import here")
    u, delta, A, B, C, D, z, bias = _gpu_inputs((2, 700, 96, 16), torch.float32, 11)
    delta = delta * 4  # softplus(delta + bias) from ~1e-4 to ~20
    want = selective_scan_reference(
        u, delta, A, B, C, D, z, delta_bias=bias, delta_softplus=True, compute_dtype=torch.float64
    )
    got = selective_scan_gluon(u, delta, A, B, C, D, z, delta_bias=bias, delta_softplus=True, fma_exps=fma_exps)
    default = selective_scan_gluon(u, delta, A, B, C, D, z, delta_bias=bias, delta_softplus=True)
    rel = float((got.double() - want).norm() / want.norm())
    assert rel < 1e-5, (fma_exps, rel)
    assert float((got - default).abs().max()) <= 1e-5 * float(default.abs().max()), fma_exps


def test_gluon_configs_name_how_inputs_arrive():
    """The Gluon scan's configuration tuple (pure Python, so checked on the CPU): four-entry
    configurations keep the register path (stages 0), the default stages its inputs in shared
    memory, and the repr says which."""
    from reprflow.kernels.selective_scan_gluon import GluonScanConfig, default_gluon_config

    old = GluonScanConfig(2, 4, 2)
    assert tuple(old) == (2, 4, 2, True, 0) and repr(old).endswith("unroll=2 prefetch")
    assert repr(GluonScanConfig(2, 4, 2, False)).endswith("no prefetch")
    new = default_gluon_config(5120, 16)
    assert tuple(new) == (1, 1, 8, True, 2)
    assert repr(new) == "lanes/channel=1 warps=1 unroll=8 shared x2"
