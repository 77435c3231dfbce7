"""The fused SSD chunk-state + state-passing kernel (``reprflow.kernels.ssd_states``) on a GPU:
against ``mamba_ssm``'s two kernels on the same inputs, against the float64 recurrence, and in the
whole SSD forward (``ssd_combined``) with and without it. Its indexing is also checked on the CPU in
Triton's interpreter (``interpret_ssd_states.py``, float32)."""

import pytest
import torch

from reprflow.kernels.ops import GLUON_SSD_SHAPES
from reprflow.kernels.optional import load_mamba_ssm_triton
from reprflow.kernels.ssd import ssd_reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

# (batch, n_tokens, heads, groups, head_dim, d_state, chunk): Mamba2-2.7B's head sizes with a
# partial last chunk; two groups, head_dim 32; d_state 16, chunk 64
SHAPES = [(2, 600, 8, 1, 64, 128, 256), (1, 300, 6, 2, 32, 64, 128), (3, 200, 4, 1, 64, 16, 64)]


def _mamba_ssm():
    if load_mamba_ssm_triton() is None:
        pytest.skip("mamba_ssm's Triton kernels are not installed")


def _chunked(batch, n_tokens, heads, groups, head_dim, d_state, chunk, seed=0):
    """x and B as the mixer's strided bf16 views, dt and dA_cumsum from mamba_ssm's cumsum kernel."""
    from mamba_ssm.ops.triton.ssd_chunk_state import _chunk_cumsum_fwd

    g = torch.Generator(device="cuda").manual_seed(seed)
    xbc = torch.randn(batch, n_tokens, heads * head_dim + groups * d_state + 8, device="cuda", generator=g)
    xbc = xbc.bfloat16()
    x = xbc[..., : heads * head_dim].view(batch, n_tokens, heads, head_dim)
    B = xbc[..., heads * head_dim : heads * head_dim + groups * d_state].view(batch, n_tokens, groups, d_state)
    A = -torch.linspace(0.5, 16.0, heads, device="cuda")
    A[-1] = -300.0  # a head whose decay over a chunk leaves float32's range
    dt = torch.randn(batch, n_tokens, heads, device="cuda", generator=g).bfloat16()
    dt_bias = torch.randn(heads, device="cuda", generator=g) - 2
    dA, dt_c = _chunk_cumsum_fwd(dt, A, chunk, dt_bias=dt_bias, dt_softplus=True)
    return x, B, dt_c, dA


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("config", [dict(), dict(block_k=64, num_warps=4), dict(block_k=16, num_warps=4, num_stages=3)])
def test_states_match_mamba_ssm_and_float64(shape, config):
    from mamba_ssm.ops.triton.ssd_chunk_state import _chunk_state_fwd
    from mamba_ssm.ops.triton.ssd_state_passing import _state_passing_fwd

    from reprflow.kernels.ssd_states import chunk_states_passed, chunk_states_reference

    _mamba_ssm()
    batch, n_tokens, heads, groups, head_dim, d_state, chunk = shape
    x, B, dt, dA = _chunked(*shape)
    Bc = B.contiguous()
    st = _chunk_state_fwd(Bc, x, dt, dA, states_in_fp32=True)
    n_chunks = st.shape[1]
    theirs, _ = _state_passing_fwd(st.view(batch, n_chunks, heads, -1), dA[:, :, :, -1], out_dtype=torch.float32)
    theirs = theirs.view(batch, n_chunks, heads, head_dim, d_state)
    ours = chunk_states_passed(x, B, dt, dA, out_dtype=torch.float32, **config)
    want = chunk_states_reference(x, B, dt, dA)
    assert ours.shape == theirs.shape and torch.all(ours[:, 0] == 0)
    # the same float32 arithmetic up to the order of the sums: float32 rounding apart
    assert float((ours - theirs).norm() / theirs.norm()) < 1e-5
    rel = lambda got: float((got.double() - want).norm() / want.norm())  # noqa: E731
    assert rel(ours) <= 1.1 * rel(theirs) + 1e-7, (rel(ours), rel(theirs))
    low = chunk_states_passed(x, B, dt, dA, **config)  # bf16, as the output kernel reads them
    assert low.dtype == torch.bfloat16 and rel(low) <= rel(ours) + 4e-3  # one more rounding, to bf16


@pytest.mark.parametrize(
    ("output", "fused_states", "shape"),
    [("mamba_ssm", True, {}), ("gluon", False, {})] + [("gluon", True, s) for s in GLUON_SSD_SHAPES.values()],
)
def test_whole_ssd_with_and_without_the_fused_states(output, fused_states, shape):
    """The chooser's `fused_states` candidate (mamba_ssm's output kernel) and the `gluon` ones (sm_90,
    each program shape), each as close to float64 as mamba_ssm's whole forward."""
    from reprflow.kernels.ssd_chunk_scan_gluon import ssd_gluon_available
    from reprflow.kernels.ssd_pipeline import ssd_combined

    _mamba_ssm()
    if output == "gluon" and not ssd_gluon_available(torch.device("cuda")):
        pytest.skip("the Gluon output kernel needs Gluon and an sm_90 GPU")
    kernels = load_mamba_ssm_triton()
    g = torch.Generator(device="cuda").manual_seed(3)
    batch, n_tokens, heads, head_dim, d_state, chunk = 2, 600, 8, 64, 128, 256
    xbc = torch.randn(batch, n_tokens, heads * head_dim + 2 * d_state, device="cuda", generator=g).bfloat16()
    a = dict(
        x=xbc[..., : heads * head_dim].view(batch, n_tokens, heads, head_dim),
        dt=torch.randn(batch, n_tokens, heads, device="cuda", generator=g).bfloat16(),
        A=-torch.linspace(0.5, 16.0, heads, device="cuda"),
        B=xbc[..., heads * head_dim : heads * head_dim + d_state].view(batch, n_tokens, 1, d_state),
        C=xbc[..., heads * head_dim + d_state :].view(batch, n_tokens, 1, d_state),
        D=torch.randn(heads, device="cuda", generator=g),
        dt_bias=torch.randn(heads, device="cuda", generator=g) - 2,
        dt_softplus=True,
    )
    want = ssd_reference(**{k: v.double() if torch.is_tensor(v) else v for k, v in a.items()}, chunk_size=chunk)
    got = ssd_combined(chunk_size=chunk, output=output, fused_states=fused_states, **shape, **a)
    theirs = kernels.chunk_scan_combined(chunk_size=chunk, **a)
    rel = lambda y: float((y.double() - want).norm() / want.norm())  # noqa: E731
    slack = 1.5 if shape.get("rounded_cb") else 1.1  # C B^T rounded to bf16: one more rounding
    assert torch.isfinite(got).all() and rel(got) <= slack * rel(theirs) + 1e-6, (rel(got), rel(theirs))
