"""Fused RMSNorm against transformers' MambaRMSNorm."""

import pytest
import torch
from transformers import MambaConfig, MambaForCausalLM

from reprflow.kernels.rms_norm import install_rms_norm, rms_norm, rms_norm_reference

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_reference_is_transformers_norm(torch_gen):
    model = MambaForCausalLM(MambaConfig(vocab_size=20, hidden_size=8, state_size=2, num_hidden_layers=1))
    norm = model.backbone.norm_f
    with torch.no_grad():
        norm.weight.normal_(generator=torch_gen)
    x = torch.randn(3, 5, 8, generator=torch_gen, dtype=torch.float64)
    want = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon) * norm.weight.double()
    got = rms_norm_reference(x.float(), norm.weight, eps=norm.variance_epsilon)
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6)
    assert torch.equal(got, norm(x.float()))


def test_install_switches_block_and_final_norms():
    model = MambaForCausalLM(MambaConfig(vocab_size=20, hidden_size=8, state_size=2, num_hidden_layers=3))
    assert install_rms_norm(model) == 4  # 3 block norms + norm_f
    assert install_rms_norm(model) == 0
    x = torch.randn(2, 8)
    assert torch.equal(model.backbone.norm_f(x), rms_norm_reference(x, model.backbone.norm_f.weight, eps=1e-5))


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("xd", [torch.float32, torch.bfloat16])
def test_triton_matches_reference(xd):
    g = torch.Generator(device="cuda").manual_seed(11)
    x = (3 * torch.randn(7, 33, 2560, device="cuda", generator=g)).to(xd)
    w = torch.randn(2560, device="cuda", generator=g).to(torch.bfloat16)
    want = rms_norm_reference(x, w, eps=1e-5)
    got = rms_norm(x, w, eps=1e-5)
    assert got.dtype == want.dtype and got.shape == want.shape
    diff = (got.float() - want.float()).abs()
    if got.dtype == torch.bfloat16:  # HF rounds to bf16 before the weight: at most one bf16 step apart
        assert torch.all(diff <= 2**-7 * want.float().abs()), float(diff.max())
        assert (diff == 0).float().mean() > 0.9
    else:  # float32 output: rsqrt rounding only
        assert torch.all(diff <= 1e-6 * want.float().abs() + 1e-7), float(diff.max())
