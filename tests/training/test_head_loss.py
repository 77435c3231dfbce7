"""linear_cross_entropy against an independent float64 reference (loss and both gradients)."""

import pytest
import torch
import torch.nn.functional as F

from reprflow.training.head_loss import linear_cross_entropy


def _reference(hidden, weight, targets):
    h = hidden.detach().double().requires_grad_()
    w = weight.detach().double().requires_grad_()
    loss = F.cross_entropy(h @ w.T, targets)
    loss.backward()
    return loss.item(), h.grad, w.grad


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_float32_matches_float64_reference(chunk):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(50, 16, generator=g, requires_grad=True)
    weight = (torch.randn(97, 16, generator=g) * 0.5).requires_grad_()
    targets = torch.randint(0, 97, (50,), generator=g)
    ref_loss, ref_gh, ref_gw = _reference(hidden, weight, targets)
    loss = linear_cross_entropy(hidden, weight, targets, chunk_tokens=chunk)
    (loss * 3.0).backward()  # the upstream gradient scales both
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(ref_loss, rel=1e-6)
    torch.testing.assert_close(hidden.grad.double(), 3.0 * ref_gh, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(weight.grad.double(), 3.0 * ref_gw, rtol=1e-5, atol=1e-7)


DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
    ),
]


@pytest.mark.parametrize("device", DEVICES)
def test_bfloat16_matmuls_stay_close_and_grads_keep_dtypes(device):
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(300, 32, generator=g).to(device).requires_grad_()
    weight = (torch.randn(500, 32, generator=g) * 0.2).to(device).requires_grad_()
    targets = torch.randint(0, 500, (300,), generator=g).to(device)
    ref_loss, ref_gh, ref_gw = _reference(hidden, weight, targets)
    loss = linear_cross_entropy(hidden, weight, targets, compute_dtype=torch.bfloat16, chunk_tokens=128)
    loss.backward()
    assert loss.item() == pytest.approx(ref_loss, rel=1e-2)
    assert hidden.grad.dtype == torch.float32 and weight.grad.dtype == torch.float32
    rel = lambda a, b: float((a.double() - b).norm() / b.norm())  # noqa: E731
    assert rel(hidden.grad, ref_gh) < 2e-2 and rel(weight.grad, ref_gw) < 2e-2


def test_no_grad_gives_the_same_loss_and_builds_no_graph():
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(20, 8, generator=g, requires_grad=True)
    weight = torch.randn(30, 8, generator=g, requires_grad=True)
    targets = torch.randint(0, 30, (20,), generator=g)
    with torch.no_grad():
        quiet = linear_cross_entropy(hidden, weight, targets, chunk_tokens=6)
    assert not quiet.requires_grad
    assert quiet.item() == pytest.approx(linear_cross_entropy(hidden, weight, targets).item(), rel=1e-6)


def test_bad_shapes_name_the_culprit():
    with pytest.raises(ValueError, match="targets"):
        linear_cross_entropy(torch.zeros(4, 3), torch.zeros(5, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="chunk_tokens"):
        linear_cross_entropy(torch.zeros(4, 3), torch.zeros(5, 3), torch.zeros(4, dtype=torch.long), chunk_tokens=0)
