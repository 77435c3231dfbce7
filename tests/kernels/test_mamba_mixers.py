"""Fast Mamba / Mamba-2 mixer forwards against transformers' own forward."""

import copy

import pytest
import torch
from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

from reprflow.kernels.mamba_mixers import install_mamba2_forward, install_mamba_forward, install_mamba_train_forward
from reprflow.kernels.optional import MambaSsmKernels, load_mamba_ssm_triton
from reprflow.kernels.ssd import ssd_reference

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _tiny_mamba() -> MambaForCausalLM:
    cfg = MambaConfig(vocab_size=97, hidden_size=16, state_size=4, num_hidden_layers=2, expand=2, conv_kernel=4)
    torch.manual_seed(0)
    return MambaForCausalLM(cfg).eval()


def _tiny_mamba2() -> Mamba2ForCausalLM:
    cfg = Mamba2Config(
        vocab_size=97,
        hidden_size=32,
        state_size=8,
        num_hidden_layers=2,
        expand=2,
        head_dim=8,  # 8 heads: in_proj's width 2 * 64 + 2 * 2 * 8 + 8 = 168 is a multiple of 8, which the
        num_heads=8,  # compiled causal_conv1d that transformers' own path uses (when installed) requires
        n_groups=2,
        chunk_size=8,
        conv_kernel=4,
    )
    torch.manual_seed(0)
    return Mamba2ForCausalLM(cfg).eval()


def _hidden(model, ids, mask):
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
    return torch.stack([h.float() for h in out.hidden_states])


def test_mamba_fast_forward_matches_hf_cpu(torch_gen):
    hf = _tiny_mamba()
    fast = copy.deepcopy(hf)
    assert install_mamba_forward(fast, scan_impl="torch", conv_impl="torch") == 2
    assert install_mamba_forward(fast, scan_impl="torch", conv_impl="torch") == 0
    ids = torch.randint(0, 97, (2, 23), generator=torch_gen)
    mask = torch.ones_like(ids)
    mask[1, 17:] = 0
    want, got = _hidden(hf, ids, mask), _hidden(fast, ids, mask)
    real = mask.bool()
    torch.testing.assert_close(got[:, real], want[:, real], rtol=1e-4, atol=1e-5)


def test_mamba_train_forward_matches_hf_values_and_gradients(torch_gen):
    hf = _tiny_mamba().train()
    fast = copy.deepcopy(hf)
    assert install_mamba_train_forward(fast) == 2
    assert install_mamba_train_forward(fast) == 0
    ids = torch.randint(0, 97, (2, 23), generator=torch_gen)
    losses = []
    for model in (hf, fast):
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    for (name, a), b in zip(hf.named_parameters(), fast.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=f"grad of {name}")
    with torch.no_grad():  # a cached call (generation) still takes HF's path
        out = fast.eval()(input_ids=ids[:, :5], use_cache=True)
    assert out.cache_params is not None


def test_mamba2_fast_forward_matches_hf_cpu(torch_gen):
    hf = _tiny_mamba2()
    fast = copy.deepcopy(hf)
    kernels = MambaSsmKernels(chunk_scan_combined=ssd_reference, version="test", bare_package=False)
    assert install_mamba2_forward(fast, kernels=kernels, conv_impl="torch") == 2
    ids = torch.randint(0, 97, (2, 21), generator=torch_gen)
    mask = torch.ones_like(ids)
    mask[0, 15:] = 0
    want, got = _hidden(hf, ids, mask), _hidden(fast, ids, mask)
    real = mask.bool()
    torch.testing.assert_close(got[:, real], want[:, real], rtol=1e-4, atol=1e-4)


def test_cache_calls_fall_back_to_hf(torch_gen):
    hf = _tiny_mamba()
    fast = copy.deepcopy(hf)
    install_mamba_forward(fast, scan_impl="torch", conv_impl="torch")
    ids = torch.randint(0, 97, (1, 6), generator=torch_gen)
    with torch.no_grad():
        a = hf.generate(ids, max_new_tokens=3, do_sample=False)
        b = fast.generate(ids, max_new_tokens=3, do_sample=False)
    assert torch.equal(a, b)


@requires_cuda
@pytest.mark.gpu
def test_mamba_triton_forward_matches_hf_gpu():
    hf = _tiny_mamba().to("cuda")
    fast = copy.deepcopy(hf).to(torch.bfloat16)
    install_mamba_forward(fast, scan_impl="triton", conv_impl="triton")
    g = torch.Generator(device="cuda").manual_seed(5)
    ids = torch.randint(0, 97, (3, 200), device="cuda", generator=g)
    mask = torch.ones_like(ids)
    mask[2, 150:] = 0
    want, got = _hidden(hf, ids, mask), _hidden(fast, ids, mask)
    real = mask.bool()
    rel = (got[:, real] - want[:, real]).norm() / want[:, real].norm()
    assert rel < 2e-2, float(rel)


@requires_cuda
@pytest.mark.gpu
def test_mamba2_mamba_ssm_forward_matches_hf_gpu():
    kernels = load_mamba_ssm_triton()
    if kernels is None:
        pytest.skip("mamba_ssm not installed")
    hf = _tiny_mamba2().to("cuda")
    fast = copy.deepcopy(hf).to(torch.bfloat16)
    install_mamba2_forward(fast, kernels=kernels, conv_impl="triton")
    g = torch.Generator(device="cuda").manual_seed(6)
    ids = torch.randint(0, 97, (2, 100), device="cuda", generator=g)
    mask = torch.ones_like(ids)
    want, got = _hidden(hf, ids, mask), _hidden(fast, ids, mask)
    rel = (got - want).norm() / want.norm()
    assert rel < 2e-2, float(rel)
