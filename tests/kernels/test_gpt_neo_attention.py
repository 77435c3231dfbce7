"""GPT-Neo SDPA attention against transformers' eager attention."""

import copy

import pytest
import torch
from transformers import GPTNeoConfig, GPTNeoForCausalLM

from reprflow.kernels.gpt_neo_attention import install_sdpa_attention, is_right_padded, local_causal_attention

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _dense_local(q, k, v, window):
    """float64 dense softmax attention with GPT-Neo's local mask and no scaling."""
    n = q.shape[-2]
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    allowed = (j <= i) & (j > i - window)
    s = (q.double() @ k.double().transpose(-1, -2)).masked_fill(~allowed, float("-inf"))
    return torch.softmax(s, dim=-1) @ v.double()


@pytest.mark.parametrize("n_tokens", [5, 8, 13, 16])
def test_local_attention_matches_dense_mask(torch_gen, n_tokens):
    q, k, v = (torch.randn(2, 3, n_tokens, 4, generator=torch_gen) for _ in range(3))
    got = local_causal_attention(q, k, v, window=4, scale=1.0)
    torch.testing.assert_close(got.double(), _dense_local(q, k, v, 4), rtol=1e-5, atol=1e-6)


def test_is_right_padded():
    assert is_right_padded(None)
    assert is_right_padded(torch.tensor([[1, 1, 0], [1, 1, 1]]))
    assert not is_right_padded(torch.tensor([[0, 1, 1], [1, 1, 1]]))


def _tiny_neo(window: int = 4) -> GPTNeoForCausalLM:
    cfg = GPTNeoConfig(
        vocab_size=97,
        max_position_embeddings=64,
        hidden_size=32,
        num_layers=4,
        num_heads=4,
        attention_types=[[["global", "local"], 2]],
        window_size=window,
        intermediate_size=64,
    )
    torch.manual_seed(0)
    return GPTNeoForCausalLM(cfg).eval()


def _hidden(model, ids, mask, **kw):
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False, **kw)
    return torch.stack(out.hidden_states)  # [K, batch, n_tokens, hidden]


def test_patched_model_matches_eager_right_padding(torch_gen):
    eager = _tiny_neo()
    fast = copy.deepcopy(eager)
    assert install_sdpa_attention(fast) == 4
    assert install_sdpa_attention(fast) == 0  # idempotent
    ids = torch.randint(0, 97, (3, 19), generator=torch_gen)
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0
    mask[2, 3:] = 0
    want, got = _hidden(eager, ids, mask), _hidden(fast, ids, mask)
    real = mask.bool()
    torch.testing.assert_close(got[:, real], want[:, real], rtol=1e-5, atol=1e-5)


def test_patched_model_matches_eager_left_padding(torch_gen):
    eager = _tiny_neo()
    fast = copy.deepcopy(eager)
    install_sdpa_attention(fast)
    ids = torch.randint(0, 97, (2, 11), generator=torch_gen)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    want = _hidden(eager, ids, mask, position_ids=pos)
    got = _hidden(fast, ids, mask, position_ids=pos)
    real = mask.bool()
    torch.testing.assert_close(got[:, real], want[:, real], rtol=1e-5, atol=1e-5)


@requires_cuda
@pytest.mark.gpu
def test_patched_model_matches_eager_bf16_gpu():
    eager = _tiny_neo(window=16).to("cuda", torch.bfloat16)
    fast = copy.deepcopy(eager)
    install_sdpa_attention(fast)
    g = torch.Generator(device="cuda").manual_seed(3)
    ids = torch.randint(0, 97, (2, 60), device="cuda", generator=g)
    mask = torch.ones_like(ids)
    want, got = _hidden(eager.float(), ids, mask), _hidden(fast, ids, mask)
    rel = (got.float() - want).norm() / want.norm()
    assert rel < 2e-2, float(rel)
