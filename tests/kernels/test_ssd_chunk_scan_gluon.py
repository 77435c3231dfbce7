"""reprflow's Gluon SSD output kernel (``reprflow.kernels.ssd_chunk_scan_gluon``) on an sm_90 GPU:
the whole SSD forward against the float64 recurrence (as close as ``mamba_ssm``'s own), the
output kernel against ``mamba_ssm``'s on the same inputs, and the fallbacks (float32, ``z``)."""

import pytest
import torch

from reprflow.kernels.optional import load_mamba_ssm_triton
from reprflow.kernels.ssd import ssd_reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] != 9, reason="needs an sm_90 GPU"
    ),
]


def _inputs(batch, n_tokens, heads, groups, head_dim, d_state, dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    width = heads * head_dim + 2 * groups * d_state
    xbc = torch.randn(batch, n_tokens, width, device="cuda", generator=g).to(dtype)  # the mixer's strided views
    x = xbc[..., : heads * head_dim].view(batch, n_tokens, heads, head_dim)
    B = xbc[..., heads * head_dim : heads * head_dim + groups * d_state].view(batch, n_tokens, groups, d_state)
    C = xbc[..., heads * head_dim + groups * d_state :].view(batch, n_tokens, groups, d_state)
    A = -torch.linspace(0.5, 16.0, heads, device="cuda")
    A[-1] = -300.0  # a head whose decay over a chunk leaves float32's range
    return dict(
        x=x,
        dt=torch.randn(batch, n_tokens, heads, device="cuda", generator=g).to(dtype),
        A=A,
        B=B,
        C=C,
        D=torch.randn(heads, device="cuda", generator=g),
        dt_bias=torch.randn(heads, device="cuda", generator=g) - 2,
        dt_softplus=True,
        dt_limit=(0.0, float("inf")),
    )


def _rel(got, want):
    return float((got.double() - want).norm() / want.norm())


def _kernels():
    kernels = load_mamba_ssm_triton()
    if kernels is None:
        pytest.skip("mamba_ssm's Triton kernels are not installed")
    from reprflow.kernels.ssd_chunk_scan_gluon import gluon

    if gluon is None:
        pytest.skip("Triton's Gluon does not import here")
    return kernels


# (batch, n_tokens, heads, groups, head_dim, d_state, chunk): a partial last chunk; two groups,
# head_dim 32, chunk 128; d_state 16, chunk 64; Mamba2-2.7B's head sizes over two chunks
SHAPES = [
    (2, 600, 8, 1, 64, 128, 256),
    (1, 300, 6, 2, 32, 64, 128),
    (3, 200, 4, 1, 64, 16, 64),
    (1, 512, 4, 1, 64, 128, 256),
]


@pytest.mark.parametrize("shape", SHAPES)
def test_ssd_combined_is_as_close_to_float64_as_mamba_ssm(shape):
    from reprflow.kernels.ssd_pipeline import ssd_combined

    kernels = _kernels()
    *dims, chunk = shape
    a = _inputs(*dims, torch.bfloat16)
    want = ssd_reference(**{k: v.double() if torch.is_tensor(v) else v for k, v in a.items()}, chunk_size=chunk)
    got = ssd_combined(chunk_size=chunk, **a)
    theirs = kernels.chunk_scan_combined(chunk_size=chunk, **a)
    assert got.shape == theirs.shape and got.dtype == theirs.dtype and torch.isfinite(got).all()
    assert _rel(got, want) <= 1.1 * _rel(theirs, want) + 1e-6, (_rel(got, want), _rel(theirs, want))


def _output_inputs(shape, *, seed=1):
    """The output kernel's arguments (cb, x, dt, dA, C, states, D) from mamba_ssm's stages on random inputs."""
    from reprflow.kernels.ssd_pipeline import ssd_stages

    *dims, chunk = shape
    a = _inputs(*dims, torch.bfloat16, seed=seed)
    x, C, cb, dt, dA, st = ssd_stages(
        a["x"], a["dt"], a["A"], a["B"], a["C"], chunk, dt_bias=a["dt_bias"], dt_softplus=True, fused_states=False
    )
    return cb, x, dt, dA, C, st, a["D"]


@pytest.mark.parametrize("shape", SHAPES[:2])
@pytest.mark.parametrize("d_per_channel", [False, True])
@pytest.mark.parametrize("prefetch_cb", [True, False])
@pytest.mark.parametrize("rounded_cb", [False, True])
def test_output_kernel_matches_mamba_ssm_on_the_same_inputs(shape, d_per_channel, prefetch_cb, rounded_cb):
    """Same float32 scaling and one rounding of the scaled tile: the outputs agree to bf16 rounding
    (with C B^T handed over in bf16, as the chooser's ``gluon_rows_cb16`` runs it, one program per
    chunk and head: one more rounding of each tile entry before it is scaled)."""
    from mamba_ssm.ops.triton.ssd_chunk_scan import _chunk_scan_fwd

    from reprflow.kernels.ssd_chunk_scan_gluon import chunk_scan_gluon

    _kernels()
    cb, x, dt, dA, C, st, D = _output_inputs(shape)
    if d_per_channel:
        D = torch.randn(*x.shape[2:], device="cuda")
    theirs = _chunk_scan_fwd(cb, x, dt, dA, C, st, D=D)[0].float()
    tiles = cb.to(x.dtype) if rounded_cb else cb
    ours = chunk_scan_gluon(tiles, x, dt, dA, C, st, D, prefetch_cb=prefetch_cb, row_loop=rounded_cb).float()
    assert ours.shape == theirs.shape
    assert float((ours - theirs).norm() / theirs.norm()) < 1e-2


@pytest.mark.parametrize("shape", SHAPES)
def test_rounded_cb_costs_little_accuracy(shape):
    """``rounded_cb`` (the chooser's ``gluon_rows_cb16``): C B^T in bf16 adds one rounding per tile
    entry, so the whole SSD stays within 1.5x of mamba_ssm's distance from float64; and a C B^T in
    another 16-bit dtype than x's is refused, naming cb."""
    from reprflow.kernels.ssd_chunk_scan_gluon import chunk_scan_gluon
    from reprflow.kernels.ssd_pipeline import ssd_combined

    kernels = _kernels()
    *dims, chunk = shape
    a = _inputs(*dims, torch.bfloat16)
    want = ssd_reference(**{k: v.double() if torch.is_tensor(v) else v for k, v in a.items()}, chunk_size=chunk)
    got = ssd_combined(chunk_size=chunk, row_loop=True, rounded_cb=True, **a)
    theirs = kernels.chunk_scan_combined(chunk_size=chunk, **a)
    assert torch.isfinite(got).all()
    assert _rel(got, want) <= 1.5 * _rel(theirs, want) + 1e-6, (_rel(got, want), _rel(theirs, want))
    cb, *rest = _output_inputs(shape)
    with pytest.raises(ValueError, match="cb must be float32"):
        chunk_scan_gluon(cb.half(), *rest)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("prefetch_cb", [True, False])
@pytest.mark.parametrize("row_loop, head_pair", [(True, False), (False, True), (True, True)])
def test_program_shapes_give_the_values_of_one_program_per_row_block(shape, prefetch_cb, row_loop, head_pair):
    """row_loop (one program walking a chunk's row blocks, the state and x tiles loaded once, each
    next block's C rows copied during the previous block's writes) and head_pair (two heads of a
    group per program, each raw C B^T tile and the C rows loaded once for both) run the same
    arithmetic in the same order: equal outputs, bit for bit, partial chunks and one-block chunks
    (chunk 64) included. An odd number of heads per group is refused, naming head_pair."""
    from reprflow.kernels.ssd_chunk_scan_gluon import chunk_scan_gluon

    _kernels()
    batch, n_tokens, heads, groups, head_dim, d_state, chunk = shape
    args = _output_inputs(shape, seed=2)
    per_block = chunk_scan_gluon(*args, prefetch_cb=prefetch_cb)
    if head_pair and (heads // groups) % 2:
        with pytest.raises(ValueError, match="head_pair"):
            chunk_scan_gluon(*args, prefetch_cb=prefetch_cb, row_loop=row_loop, head_pair=head_pair)
        return
    other = chunk_scan_gluon(*args, prefetch_cb=prefetch_cb, row_loop=row_loop, head_pair=head_pair)
    assert torch.isfinite(other).all()
    assert torch.equal(other, per_block)


def test_fallbacks_are_mamba_ssm_exactly():
    """float32 inputs and a gate z are not the kernel's: ssd_combined returns the very result of
    mamba_ssm's ``mamba_chunk_scan_combined`` (not of ``load_mamba_ssm_triton().chunk_scan_combined``,
    whose size-bucketed autotuning may pick other tile shapes and so round differently)."""
    _kernels()
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    from reprflow.kernels.ssd_pipeline import ssd_combined

    a = _inputs(1, 300, 4, 1, 64, 32, torch.float32)
    assert torch.equal(ssd_combined(chunk_size=64, **a), mamba_chunk_scan_combined(chunk_size=64, **a))
    b = _inputs(1, 300, 4, 1, 64, 32, torch.bfloat16)
    z = torch.randn_like(b["x"])
    assert torch.equal(ssd_combined(chunk_size=64, z=z, **b), mamba_chunk_scan_combined(chunk_size=64, z=z, **b))


def test_unsupported_shapes_are_named():
    from reprflow.kernels.ssd_chunk_scan_gluon import chunk_scan_gluon

    _kernels()
    x = torch.zeros(1, 100, 2, 48, device="cuda", dtype=torch.bfloat16)  # head_dim 48: not a power of two
    with pytest.raises(ValueError, match="head_dim 48"):
        chunk_scan_gluon(
            torch.zeros(1, 1, 1, 64, 64, device="cuda"),
            x,
            torch.zeros(1, 2, 1, 64, device="cuda"),
            torch.zeros(1, 2, 1, 64, device="cuda"),
            torch.zeros(1, 100, 1, 16, device="cuda", dtype=torch.bfloat16),
            torch.zeros(1, 1, 2, 48, 16, device="cuda", dtype=torch.bfloat16),
        )
