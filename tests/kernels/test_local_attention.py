"""Sliding-window attention: the float64 reference, input checks, GPT-Neo routing (CPU), and
the Triton kernel against the reference and inside GPT-Neo (GPU)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import GPTNeoConfig, GPTNeoForCausalLM

import reprflow.kernels.gpt_neo_attention as neo_attention
from reprflow.errors import ConfigError
from reprflow.fastpath import prepare_model
from reprflow.kernels.gpt_neo_attention import install_sdpa_attention, local_causal_attention
from reprflow.kernels.local_attention import (
    sliding_window_attention,
    sliding_window_attention_reference,
    sliding_window_supported,
)

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _per_query(q, k, v, window, scale):
    """float64 attention one query at a time over its slice of keys k[i - window + 1 : i + 1]."""
    out = torch.empty(q.shape, dtype=torch.float64)
    for i in range(q.shape[-2]):
        lo = max(0, i - window + 1)
        s = (q[..., i : i + 1, :].double() @ k[..., lo : i + 1, :].double().transpose(-1, -2)) * scale
        out[..., i : i + 1, :] = torch.softmax(s, dim=-1) @ v[..., lo : i + 1, :].double()
    return out


@pytest.mark.parametrize(("n_tokens", "window", "scale"), [(1, 4, 1.0), (13, 1, 1.0), (13, 4, 0.3), (40, 7, 1.0)])
def test_reference_matches_per_query_softmax(torch_gen, n_tokens, window, scale):
    q, k, v = (torch.randn(2, 3, n_tokens, 8, generator=torch_gen) for _ in range(3))
    got = sliding_window_attention_reference(q, k, v, window=window, scale=scale)
    assert got.dtype == torch.float64 and got.shape == q.shape
    torch.testing.assert_close(got, _per_query(q, k, v, window, scale), rtol=1e-12, atol=1e-12)


def test_reference_matches_blockwise_local_attention_and_causal(torch_gen):
    q, k, v = (torch.randn(2, 3, 37, 8, dtype=torch.float64, generator=torch_gen) for _ in range(3))
    got = sliding_window_attention_reference(q, k, v, window=5, scale=1.0)
    torch.testing.assert_close(got, local_causal_attention(q, k, v, window=5, scale=1.0), rtol=1e-10, atol=1e-12)
    # a window as long as the sequence is plain causal attention
    got = sliding_window_attention_reference(q, k, v, window=37, scale=0.5)
    want = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.5)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def _bad(case):
    """Inputs (q, k, v, kwargs) that sliding_window_attention must refuse, before any kernel runs."""
    x = torch.randn(1, 2, 10, 64)
    kw = {"window": 4, "scale": 1.0}
    if case == "stride":  # head_dim not contiguous
        t = torch.randn(1, 2, 64, 10).transpose(-1, -2)
        return (x, t, x, kw), r"k needs stride 1 on its last axis"
    if case == "head_dim":
        t = torch.randn(1, 2, 10, 320)
        return (t, t, t, kw), r"head_dim must be <= 256, got 320"
    if case == "shape":
        return (x, x[:, :, :9], x, kw), r"k \(1, 2, 9, 64\) must match q"
    if case == "window":
        return (x, x, x, {**kw, "window": 0}), r"window must be >= 1"
    if case == "dtype":
        return (x, x, x.double(), kw), r"v is torch.float64"
    if case == "config":
        return (x, x, x, {**kw, "config": {"BLOCK_M": 24}}), r"BLOCK_M must be a power of two"
    if case == "grad":
        return (x.clone().requires_grad_(), x, x, kw), r"q requires grad, but the kernel is forward-only"
    if case == "device":
        return (x, x, x, kw), r"q is on cpu; the kernel needs CUDA"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["stride", "head_dim", "shape", "window", "dtype", "config", "grad", "device"])
def test_bad_inputs_are_refused_with_the_culprit_named(monkeypatch, case):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    (q, k, v, kw), match = _bad(case)
    with pytest.raises(ValueError, match=match):
        sliding_window_attention(q, k, v, **kw)
    assert not sliding_window_supported(q, k, v)


def _neo(window=4, hidden=32, heads=4, max_positions=64):
    cfg = GPTNeoConfig(
        vocab_size=97,
        max_position_embeddings=max_positions,
        hidden_size=hidden,
        num_layers=2,
        num_heads=heads,
        attention_types=[[["global", "local"], 1]],
        window_size=window,
        intermediate_size=2 * hidden,
    )
    torch.manual_seed(0)
    return GPTNeoForCausalLM(cfg).eval()


def _local_kernels(model):
    return {m._reprflow_local_kernel for m in model.modules() if hasattr(m, "_reprflow_local_kernel")}


def test_install_takes_the_local_kernel_and_refuses_unknown_ones():
    model = _neo()
    assert install_sdpa_attention(model, local_kernel="sdpa") == 2
    assert _local_kernels(model) == {"sdpa"}
    assert install_sdpa_attention(model) == 0 and _local_kernels(model) == {"triton"}  # the last call wins
    with pytest.raises(ValueError, match="local_kernel must be one of"):
        install_sdpa_attention(model, local_kernel="flash")


def test_prepare_model_reports_the_local_kernel_on_cpu(monkeypatch):
    monkeypatch.delenv("REPRFLOW_KERNEL_LOCAL_ATTENTION", raising=False)
    model = _neo()
    report = prepare_model(model)  # auto on a CPU model: the dense-mask SDPA call
    assert report["local_attention"] == "sdpa (dense band mask)" and _local_kernels(model) == {"sdpa"}
    report = prepare_model(_neo(), kernels={"local_attention": "sdpa"})
    assert report["local_attention"] == "sdpa (dense band mask)"
    with pytest.raises(ConfigError, match=r"REPRFLOW_KERNEL_LOCAL_ATTENTION .* = 'triton': choose"):
        prepare_model(_neo(), kernels={"local_attention": "triton"})  # needs a CUDA model
    monkeypatch.setenv("REPRFLOW_KERNEL_LOCAL_ATTENTION", "flash")
    with pytest.raises(ConfigError, match="REPRFLOW_KERNEL_LOCAL_ATTENTION"):
        prepare_model(_neo())


# ----------------------------------------------------------------------------- GPU


def _strided_qkv(batch, heads, n_tokens, head_dim, dtype, seed, spread=1.0):
    """q, k, v as GPT-Neo's _split_heads gives them, here from one fused (batch, n_tokens,
    3 * heads * head_dim) projection: (batch, heads, n_tokens, head_dim) views, row stride
    3 * heads * head_dim; scores of a few units."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(batch, n_tokens, 3 * heads * head_dim, device="cuda", generator=g)
    x[..., : 2 * heads * head_dim] *= spread * head_dim**-0.25
    x = x.to(dtype)
    return [t.view(batch, n_tokens, heads, head_dim).transpose(1, 2) for t in x.chunk(3, dim=-1)]


TOL = {torch.bfloat16: 2e-2, torch.float16: 5e-3, torch.float32: 1e-4}


def _check_kernel(batch, heads, n_tokens, head_dim, window, dtype, seed=0, spread=1.0, scale=1.0):
    q, k, v = _strided_qkv(batch, heads, n_tokens, head_dim, dtype, seed, spread)
    with torch.no_grad():
        got = sliding_window_attention(q, k, v, window=window, scale=scale)
    want = sliding_window_attention_reference(q, k, v, window=window, scale=scale)  # same rounded inputs
    assert got.shape == q.shape and got.dtype == dtype
    assert got.transpose(1, 2).is_contiguous()  # memory (batch, n_tokens, heads, head_dim): free _merge_heads
    rel = float((got.double() - want).norm() / want.norm())
    assert rel <= TOL[dtype], (n_tokens, head_dim, window, dtype, rel)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("window", [1, 7, 64, 256])
@pytest.mark.parametrize("n_tokens", [1, 100, 255, 256, 257, 300, 2048])
def test_kernel_matches_float64_bf16_head_dim_128(n_tokens, window):
    _check_kernel(2, 3, n_tokens, 128, window, torch.bfloat16, seed=n_tokens + window)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("head_dim", [64, 80, 96, 128])
@pytest.mark.parametrize(("n_tokens", "window"), [(100, 7), (257, 256), (300, 64), (2048, 256)])
def test_kernel_matches_float64_dtypes_and_head_dims(dtype, head_dim, n_tokens, window):
    _check_kernel(1, 2, n_tokens, head_dim, window, dtype, seed=head_dim + n_tokens)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("config", [{"BLOCK_M": 64, "BLOCK_N": 64}, {"BLOCK_M": 32, "BLOCK_N": 16, "num_stages": 1}])
def test_kernel_config_override_and_large_scores(config):
    q, k, v = _strided_qkv(2, 2, 700, 128, torch.float32, seed=5, spread=4.0)  # scores of tens
    with torch.no_grad():
        got = sliding_window_attention(q, k, v, window=100, scale=0.7, config=config)
    want = sliding_window_attention_reference(q, k, v, window=100, scale=0.7)
    assert float((got.double() - want).norm() / want.norm()) <= 1e-4


@requires_cuda
@pytest.mark.gpu
def test_gpt_neo_triton_local_layers_match_the_dense_mask_sdpa(monkeypatch):
    base = _neo(window=256, hidden=256, heads=2, max_positions=1024).to("cuda", torch.bfloat16)  # head_dim 128
    fast, dense = copy.deepcopy(base), copy.deepcopy(base)
    install_sdpa_attention(fast, local_kernel="triton")
    install_sdpa_attention(dense, local_kernel="sdpa")
    calls = []

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return sliding_window_attention(*args, **kwargs)

    monkeypatch.setattr(neo_attention, "sliding_window_attention", spy)
    ids = torch.randint(0, 97, (2, 600), device="cuda", generator=torch.Generator(device="cuda").manual_seed(7))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        got = torch.stack(fast(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states)
        want = torch.stack(dense(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states)
    assert calls == [torch.Size([2, 2, 600, 128])]  # the one local layer, through the kernel
    rel = float((got.float() - want.float()).norm() / want.float().norm())
    assert rel < 2e-2, rel
    calls.clear()
    fast(input_ids=ids[:, :300], attention_mask=mask[:, :300])  # gradients wanted: the dense-mask SDPA call
    assert calls == []
