"""reprflow's Mamba-2 SSD output kernel (``reprflow.kernels.ssd_scan``) on a GPU: against the
float64 recurrence, and against ``mamba_ssm``'s own kernel on the same inputs. (The kernel's
arithmetic is checked on the CPU in Triton's interpreter: ``interpret_ssd.py``.)"""

import pytest
import torch

from reprflow.kernels.optional import load_mamba_ssm_triton
from reprflow.kernels.ssd import ssd_reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
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


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize(
    "shape", [(2, 600, 8, 1, 64, 128, 256), (1, 300, 6, 2, 32, 64, 128), (3, 200, 4, 1, 64, 16, 64)]
)
def test_ssd_combined_is_as_close_to_float64_as_mamba_ssm(dtype, shape):
    from reprflow.kernels.ssd_scan import ssd_combined

    kernels = load_mamba_ssm_triton()
    if kernels is None:
        pytest.skip("mamba_ssm's Triton kernels are not installed")
    *dims, chunk = shape
    a = _inputs(*dims, dtype)
    want = ssd_reference(**{k: v.double() if torch.is_tensor(v) else v for k, v in a.items()}, chunk_size=chunk)
    got = ssd_combined(chunk_size=chunk, **a)
    theirs = kernels.chunk_scan_combined(chunk_size=chunk, **a)
    assert got.shape == theirs.shape and got.dtype == theirs.dtype and torch.isfinite(got).all()
    assert _rel(got, want) <= 1.25 * _rel(theirs, want) + 1e-6, (_rel(got, want), _rel(theirs, want))


def test_mamba2_ssd_op_offers_and_checks_reprflow():
    """The chooser offers the reprflow candidate on CUDA and it passes the float64 check."""
    from reprflow.kernels.ops import mamba2_ssd_op

    if load_mamba_ssm_triton() is None:
        pytest.skip("mamba_ssm's Triton kernels are not installed")
    report = {}
    op = mamba2_ssd_op(torch.device("cuda"), load_mamba_ssm_triton(), report=report, forced="reprflow")
    a = _inputs(2, 300, 8, 1, 64, 128, torch.bfloat16)
    y = op(chunk_size=256, **a)
    assert y.shape == a["x"].shape
    (entry,) = report["mamba2_ssd"].values()  # one shape class
    assert entry["kernel"] == "reprflow" and entry["check_rel_err"]["reprflow"] < 3e-2
