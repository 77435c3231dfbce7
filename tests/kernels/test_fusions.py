"""The fused steps of the fast paths: GPT-NeoX's rotary embedding, GPT-Neo's c_fc + GELU,
the Mamba blocks' out_proj + residual. Each against transformers' own code or float64."""

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from transformers import GPTNeoConfig, GPTNeoForCausalLM, GPTNeoXConfig, GPTNeoXForCausalLM

from reprflow.kernels.gelu_mlp import install_fused_gelu_mlp, is_tanh_gelu, linear_gelu_tanh
from reprflow.kernels.layer_norm import layer_norm_pair, layer_norm_pair_reference
from reprflow.kernels.mamba_mixers import out_proj_add
from reprflow.kernels.rotary import rotary_qk_, rotary_qk_reference

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _rotary_inputs(batch, n_tokens, heads, head_dim, rot, dtype, device, cos_batch=1):
    g = torch.Generator().manual_seed(batch + n_tokens + heads)
    qkv = torch.randn(batch, n_tokens, heads * 3 * head_dim, generator=g).to(dtype)
    inv = 1.0 / (10000 ** (torch.arange(0, rot, 2).float() / rot))
    freqs = torch.arange(n_tokens).float()[None, :, None] * inv
    emb = torch.cat([freqs, freqs], -1).expand(cos_batch, -1, -1).contiguous()
    return qkv.to(device), emb.cos().to(dtype).to(device), emb.sin().to(dtype).to(device)


def _neox(*, hidden_size: int, layers: int) -> GPTNeoXForCausalLM:
    """A small random GPT-NeoX with Pythia's quarter rotary embedding, SDPA attention, eval mode."""
    cfg = GPTNeoXConfig(
        vocab_size=97,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=512,
        rotary_pct=0.25,
    )
    torch.manual_seed(0)
    return GPTNeoXForCausalLM._from_config(cfg, attn_implementation="sdpa").eval()


def test_rotary_reference_is_transformers_rotation():
    """Against the rotation written out in float64: q_rot cos + rotate_half(q_rot) sin, rest passed."""
    qkv, cos, sin = _rotary_inputs(2, 6, 3, 8, 4, torch.float64, "cpu")
    q, k = rotary_qk_reference(qkv, cos, sin, num_heads=3, head_dim=8)
    x = qkv.view(2, 6, 3, 24)[..., :8].transpose(1, 2)  # (batch, heads, n_tokens, head_dim)
    x1, x2 = x[..., :2], x[..., 2:4]
    c, s = cos[:, None, :, :2], sin[:, None, :, :2]
    want = torch.cat([x1 * c - x2 * s, x2 * c + x1 * s, x[..., 4:]], -1)
    torch.testing.assert_close(q, want)
    assert k.shape == q.shape and k.is_contiguous() and q.is_contiguous()


def test_rotary_off_cuda_runs_transformers_code():
    qkv, cos, sin = _rotary_inputs(2, 5, 4, 16, 4, torch.bfloat16, "cpu")
    want = rotary_qk_reference(qkv, cos, sin, num_heads=4, head_dim=16)
    got = rotary_qk_(qkv, cos, sin, num_heads=4, head_dim=16)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize(
    "shape",
    [(2, 300, 32, 80, 20, 1), (3, 17, 4, 64, 64, 3), (1, 2048, 32, 80, 20, 1), (2, 9, 5, 128, 32, 2)],
)
def test_rotary_kernel_equals_transformers_on_gpu(dtype, shape):
    *dims, cos_batch = shape
    qkv, cos, sin = _rotary_inputs(*dims, dtype, "cuda", cos_batch=cos_batch)
    heads, head_dim = dims[2], dims[3]
    want = rotary_qk_reference(qkv, cos, sin, num_heads=heads, head_dim=head_dim)
    v_before = qkv.view(*dims[:2], heads, 3 * head_dim)[..., 2 * head_dim :].clone()
    got = rotary_qk_(qkv, cos, sin, num_heads=heads, head_dim=head_dim)  # in place in qkv
    per_head = qkv.view(*dims[:2], heads, 3 * head_dim)
    for a, b, part in zip(got, want, (0, 1)):
        assert a.shape == b.shape and a.data_ptr() == per_head[..., part * head_dim :].data_ptr()  # views of qkv
        assert torch.equal(a, b), f"max diff {(a.float() - b.float()).abs().max().item()}"
    assert torch.equal(per_head[..., 2 * head_dim :], v_before)  # v untouched


@pytest.mark.gpu
@requires_cuda
def test_gpt_neox_states_equal_transformers_on_gpu():
    """The equal-valued GPT-NeoX steps (rotary, add3) give transformers' states,
    bit for bit (bf16); with the LayerNorm pair too (prepare_model's default), within a few
    bf16 roundings."""
    from reprflow.capture import forward_states
    from reprflow.fastpath import prepare_model
    from reprflow.kernels.gpt_neox import install_gpt_neox_forward

    model = _neox(hidden_size=128, layers=3).to("cuda", torch.bfloat16)
    ids = torch.randint(0, 97, (3, 300), device="cuda")
    mask = torch.ones_like(ids)
    before = forward_states(model, ids, mask, token_rows=[0, 2])
    assert install_gpt_neox_forward(model, norm_pair=False) == 6  # 3 attention modules + 3 layers
    exact = forward_states(model, ids, mask, token_rows=[0, 2])
    assert torch.equal(before.last, exact.last) and torch.equal(before.tokens, exact.tokens)

    model = _neox(hidden_size=128, layers=3).to("cuda", torch.bfloat16)
    report = prepare_model(model)
    assert "rotary" in report and "norms" in report and report["patched_modules"] == 6
    after = forward_states(model, ids, mask, token_rows=[0, 2])
    for a, b in ((after.last, before.last), (after.tokens, before.tokens)):
        assert float((a.double() - b.double()).norm() / b.double().norm()) < 1e-2


def test_layer_norm_pair_off_cuda_is_torch(torch_gen):
    x = torch.randn(3, 7, 16, generator=torch_gen).bfloat16()
    w1, b1, w2, b2 = (torch.randn(16, generator=torch_gen).bfloat16() for _ in range(4))
    got = layer_norm_pair(x, w1, b1, w2, b2, eps=1e-5)
    want = layer_norm_pair_reference(x, w1, b1, w2, b2, eps=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert torch.equal(want[0], F.layer_norm(x, (16,), w1, b1, 1e-5))


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("bias", [True, False])
def test_layer_norm_pair_on_gpu_is_torch_up_to_one_rounding(bias):
    """Pythia-2.8B's width: at most one bf16 rounding step from F.layer_norm, in few elements,
    and as close to float64 as torch's."""
    g = torch.Generator(device="cuda").manual_seed(1)
    x = (torch.randn(4096, 2560, device="cuda", generator=g) * 3 + 0.5).bfloat16()
    w1, b1, w2, b2 = ((1 + 0.2 * torch.randn(2560, device="cuda", generator=g)).bfloat16() for _ in range(4))
    if not bias:
        b1 = b2 = None
    got = layer_norm_pair(x, w1, b1, w2, b2, eps=1e-5)
    want = layer_norm_pair_reference(x, w1, b1, w2, b2, eps=1e-5)
    xd = x.double()
    xn = (xd - xd.mean(-1, keepdim=True)) / torch.sqrt(xd.var(-1, unbiased=False, keepdim=True) + 1e-5)
    for a, b, w, bb in zip(got, want, (w1, w2), (b1, b2)):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert float((a == b).float().mean()) > 0.999
        # one bf16 rounding step of the value, or of the terms where w * x_hat + b cancels
        torch.testing.assert_close(a.float(), b.float(), rtol=2.0**-7, atol=2.0**-9)
        ref = xn * w.double() + (bb.double() if bb is not None else 0)
        err = lambda t: float((t.double() - ref).norm() / ref.norm())  # noqa: E731
        assert err(a) <= 1.01 * err(b)


def test_is_tanh_gelu():
    assert is_tanh_gelu(torch.nn.GELU(approximate="tanh"))
    assert not is_tanh_gelu(torch.nn.GELU())
    assert not is_tanh_gelu(torch.nn.ReLU())


def test_linear_gelu_tanh_matches_two_steps_on_cpu(torch_gen):
    x = torch.randn(3, 5, 8, generator=torch_gen)
    w, b = torch.randn(12, 8, generator=torch_gen), torch.randn(12, generator=torch_gen)
    want = F.gelu(x.double() @ w.double().T + b.double(), approximate="tanh")
    torch.testing.assert_close(linear_gelu_tanh(x, w, b).double(), want, rtol=1e-5, atol=1e-6)


def _neo(device, dtype):
    cfg = GPTNeoConfig(
        vocab_size=97,
        max_position_embeddings=256,
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        attention_types=[[["global", "local"], 1]],
        window_size=16,
    )
    torch.manual_seed(0)
    return GPTNeoForCausalLM(cfg).to(device, dtype).eval()


def test_fused_mlp_keeps_cpu_and_training_on_transformers_forward():
    model = _neo("cpu", torch.float32)
    assert install_fused_gelu_mlp(model) == 2 and install_fused_gelu_mlp(model) == 0
    ids = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(3))
    model.train()
    out = model(ids).logits  # autograd: transformers' forward
    out.sum().backward()
    assert model.transformer.h[0].mlp.c_fc.weight.grad is not None


@pytest.mark.gpu
@requires_cuda
def test_fused_gelu_mlp_on_gpu_is_closer_to_float64_than_two_kernels():
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(4096, 256, device="cuda", generator=g).bfloat16()
    w = (torch.randn(1024, 256, device="cuda", generator=g) / 16).bfloat16()
    b = (0.1 * torch.randn(1024, device="cuda", generator=g)).bfloat16()
    want = F.gelu(x.double() @ w.double().T + b.double(), approximate="tanh")

    def err(t):
        return float((t.double() - want).norm() / want.norm())

    fused = err(linear_gelu_tanh(x, w, b))
    two = err(F.gelu(F.linear(x, w, b), approximate="tanh"))
    assert fused <= 1.05 * two and fused < 1e-2, (fused, two)


@pytest.mark.gpu
@requires_cuda
def test_fused_gelu_is_the_tanh_gelu_on_gpu():
    """In float32 the tanh and erf GELUs differ by ~1e-4: the fused GEMM must be the tanh one."""
    g = torch.Generator(device="cuda").manual_seed(1)
    x, w, b = (torch.randn(*s, device="cuda", generator=g) for s in ((1024, 64), (256, 64), (256,)))
    h = x.double() @ w.double().T + b.double()
    got = linear_gelu_tanh(x, w, b).double()
    assert float((got - F.gelu(h, approximate="tanh")).abs().max()) < 1e-4
    assert float((got - F.gelu(h)).abs().max()) > 1e-4


@pytest.mark.gpu
@requires_cuda
def test_gpt_neo_with_fused_mlp_matches_transformers_on_gpu():
    from reprflow.capture import forward_states
    from reprflow.fastpath import prepare_model

    model = _neo("cuda", torch.bfloat16)
    ids = torch.randint(0, 97, (2, 200), device="cuda")
    mask = torch.ones_like(ids)
    before = forward_states(model, ids, mask)
    report = prepare_model(model)
    assert "cuBLASLt" in report["mlp_activation"]
    after = forward_states(model, ids, mask)
    rel = float((after.last.float() - before.last.float()).norm() / before.last.float().norm())
    assert rel < 2e-2, rel


def test_out_proj_add_off_cuda_is_transformers_order(torch_gen):
    proj = torch.nn.Linear(8, 4, bias=False).to(torch.bfloat16)
    y = torch.randn(2, 3, 8, generator=torch_gen).bfloat16()
    res = torch.randn(2, 3, 4, generator=torch_gen)
    assert torch.equal(out_proj_add(proj, y, res), res + proj(y))
    assert torch.equal(out_proj_add(proj, y, None), proj(y))


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("bias", [False, True])
def test_out_proj_add_on_gpu_against_float64(bias):
    g = torch.Generator(device="cuda").manual_seed(0)
    proj = torch.nn.Linear(512, 256, bias=bias, device="cuda", dtype=torch.bfloat16)
    y = torch.randn(3, 700, 512, device="cuda", generator=g).bfloat16()
    res = torch.randn(3, 700, 256, device="cuda", generator=g)
    got = out_proj_add(proj, y, res)
    want = res.double() + F.linear(y.double(), proj.weight.double(), None if proj.bias is None else proj.bias.double())
    assert got.dtype == torch.float32 and got.shape == res.shape
    rel = float((got.double() - want).norm() / want.norm())
    assert rel < (1e-5 if not bias else 5e-3), rel  # fused: float32 throughout; with a bias: transformers' order


def test_gpt_neox_fused_forward_is_transformers_forward_on_cpu():
    """The patched forward's own code (rotary through the reference off CUDA) against transformers'."""
    from reprflow.kernels import gpt_neox

    model = _neox(hidden_size=64, layers=1)
    captured = {}
    attn = model.gpt_neox.layers[0].attention
    attn.register_forward_hook(
        lambda m, args, kwargs, out: captured.update(args=args, kwargs=kwargs, out=out), with_kwargs=True
    )
    with torch.no_grad():
        model(torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(2)))
        kwargs = dict(captured["kwargs"])
        hidden = captured["args"][0] if captured["args"] else kwargs.pop("hidden_states")
        mask = kwargs.pop("attention_mask", None)
        kwargs.pop("layer_past", None)
        got, _ = gpt_neox._forward(attn, hidden, mask, **kwargs)
    assert torch.equal(got, captured["out"][0])


def test_add3_off_cuda_is_torch_order(torch_gen):
    from reprflow.kernels.gpt_neox import add3

    a, b, c = (torch.randn(4, 7, generator=torch_gen).bfloat16() for _ in range(3))
    assert torch.equal(add3(a, b, c), a + b + c)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_add3_equals_torch_on_gpu(dtype):
    from reprflow.kernels.gpt_neox import add3

    g = torch.Generator(device="cuda").manual_seed(0)
    a, b, c = (torch.randn(3, 1001, 257, device="cuda", generator=g).to(dtype) for _ in range(3))
    assert torch.equal(add3(a, b, c), a + b + c)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs Triton (compiles for sm_90 on the CPU)")
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_rotary_kernel_compiles_without_fma(dtype):
    """torch rounds each product before the sum; an FMA would not (the H200 run of 2026-12-04 found
    `fma.rn.f32` and `fma.rn.bf16` one rounding step away from transformers). Read from the PTX."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from reprflow.kernels.rotary import _ROTARY_LAUNCH, _rotary_qk_kernel as kernel

    sig = {n: "i32" for n in kernel.arg_names}
    sig.update({n: f"*{dtype}" for n in ("qkv_ptr", "cos_ptr", "sin_ptr")})
    consts = {"HEADS": 32, "HEAD_DIM": 80, "ROT": 20, "BLOCK_R": 256, "BLOCK_HALF": 16}
    sig.update({n: "constexpr" for n in consts})
    src = ASTSource(fn=kernel, signature=sig, constexprs={(kernel.arg_names.index(n),): v for n, v in consts.items()})
    ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8, **_ROTARY_LAUNCH}).asm["ptx"]
    assert "fma." not in ptx
    assert "mul.rn." in ptx
