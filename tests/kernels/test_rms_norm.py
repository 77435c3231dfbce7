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
    assert install_rms_norm(model) == 7  # 3 block norms + norm_f + 3 blocks (fused input rounding)
    assert install_rms_norm(model) == 0
    x = torch.randn(2, 8)
    assert torch.equal(model.backbone.norm_f(x), rms_norm_reference(x, model.backbone.norm_f.weight, eps=1e-5))


@pytest.mark.parametrize("cls_name", ["mamba", "mamba2"])
def test_patched_blocks_give_the_same_states(cls_name, torch_gen):
    """bf16 weights, float32 residual: the patched block forward equals HF's on the CPU, exactly."""
    from transformers import Mamba2Config, Mamba2ForCausalLM

    from reprflow.capture import forward_states

    torch.manual_seed(0)
    if cls_name == "mamba":
        model = MambaForCausalLM(MambaConfig(vocab_size=50, hidden_size=16, state_size=4, num_hidden_layers=2))
    else:
        model = Mamba2ForCausalLM(
            Mamba2Config(
                vocab_size=50,
                hidden_size=16,
                state_size=8,
                num_hidden_layers=2,
                head_dim=8,
                num_heads=4,
                n_groups=1,
                chunk_size=8,
                expand=2,
            )
        )
    model = model.to(torch.bfloat16).eval()
    ids = torch.randint(0, 50, (2, 11), generator=torch_gen)
    mask = torch.ones_like(ids)
    before = forward_states(model, ids, mask, token_rows=[0, 1])
    assert install_rms_norm(model) == 5
    after = forward_states(model, ids, mask, token_rows=[0, 1])
    assert before.tokens.dtype == torch.float32  # residual_in_fp32
    assert torch.equal(before.tokens, after.tokens)


def test_input_dtype_must_be_the_weight_dtype():
    with pytest.raises(ValueError, match="input_dtype"):
        rms_norm(torch.randn(2, 8), torch.ones(8, dtype=torch.bfloat16), eps=1e-5, input_dtype=torch.float16)


@requires_cuda
@pytest.mark.gpu
def test_fused_input_rounding_matches_reference():
    g = torch.Generator(device="cuda").manual_seed(12)
    x = 3 * torch.randn(7, 33, 2560, device="cuda", generator=g)  # float32 residual stream
    w = torch.randn(2560, device="cuda", generator=g).to(torch.bfloat16)
    want = rms_norm_reference(x.to(torch.bfloat16), w, eps=1e-5)
    got = rms_norm(x, w, eps=1e-5, input_dtype=torch.bfloat16)
    assert got.dtype == torch.bfloat16 and got.shape == want.shape
    diff = (got.float() - want.float()).abs()
    assert torch.all(diff <= 2**-7 * want.float().abs()), float(diff.max())
    assert (diff == 0).float().mean() > 0.9


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
