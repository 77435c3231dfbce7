"""GPT-NeoX (Pythia) layers with fewer passes over memory, and the same values.

* **Attention**: the ``forward`` of each ``GPTNeoXAttention`` instance is transformers' own
  code in which ``apply_rotary_pos_emb`` (and the ``cat`` copies around it) is
  :func:`reprflow.kernels.rotary.rotary_qk_` (in place in ``qkv``): the same values (``torch.equal``), fed to the
  same attention function (SDPA, or whatever ``config._attn_implementation`` names) in the
  same layout.
* **Parallel residual**: ``mlp_output + attn_output + hidden_states`` (two kernels, the first
  sum rounded to the model dtype) in one Triton pass with the same two roundings
  (:func:`add3`).
* **The two LayerNorms of the parallel residual** (``input_layernorm(h)``,
  ``post_attention_layernorm(h)``: the same ``h``) in one pass
  (:func:`reprflow.kernels.layer_norm.layer_norm_pair`; up to one rounding step of the model
  dtype from torch's, so only with ``norm_pair=True``, which ``prepare_model`` sets when
  fusions are on).

Calls with a cache, in training mode or off CUDA run transformers' forward.
"""

from __future__ import annotations

import types

import torch
from torch import Tensor, nn

from reprflow.kernels.layer_norm import layer_norm_pair
from reprflow.kernels.rotary import rotary_qk_

__all__ = ["install_gpt_neox_forward", "add3"]

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    tl = None

if triton is not None:

    @triton.jit
    def _add3_kernel(a_ptr, b_ptr, c_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        a = tl.load(a_ptr + offs, mask=m, other=0.0)
        b = tl.load(b_ptr + offs, mask=m, other=0.0)
        c = tl.load(c_ptr + offs, mask=m, other=0.0)
        ab = (a.to(tl.float32) + b.to(tl.float32)).to(a.dtype)  # torch rounds the first sum
        tl.store(out_ptr + offs, (ab.to(tl.float32) + c.to(tl.float32)).to(a.dtype), mask=m)


def add3(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """``a + b + c`` as torch evaluates it (``(a + b)`` rounded, then ``+ c``), in one pass.

    Parameters
    ----------
    a, b, c : Tensors of one shape and dtype

    Returns
    -------
    Tensor of that shape and dtype (torch's own ops off CUDA or for mixed inputs)
    """
    same = a.shape == b.shape == c.shape and a.dtype == b.dtype == c.dtype
    if triton is None or not a.is_cuda or not same or not all(t.is_contiguous() for t in (a, b, c)):
        return a + b + c
    out = torch.empty_like(a)
    n = a.numel()
    block = 4096
    _add3_kernel[(triton.cdiv(n, block),)](a, b, c, out, n, BLOCK=block, num_warps=8)
    return out


def _forward(self: nn.Module, hidden_states: Tensor, attention_mask: Tensor | None, **kwargs):
    """transformers' ``GPTNeoXAttention.forward`` (no cache) with the fused rotary embedding."""
    from transformers.models.gpt_neox.modeling_gpt_neox import ALL_ATTENTION_FUNCTIONS, eager_attention_forward

    position_embeddings = kwargs.pop("position_embeddings")
    kwargs.pop("position_ids", None)
    kwargs.pop("use_cache", None)
    batch, n_tokens, _ = hidden_states.shape
    head_dim = self.head_size
    qkv = self.query_key_value(hidden_states)  # (batch, n_tokens, heads * 3 * head_dim)
    num_heads = qkv.shape[-1] // (3 * head_dim)
    cos, sin = position_embeddings
    query, key = rotary_qk_(qkv, cos, sin, num_heads=num_heads, head_dim=head_dim)
    value = qkv.view(batch, n_tokens, num_heads, 3 * head_dim).transpose(1, 2)[..., 2 * head_dim :]
    attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
    attn_output, attn_weights = attention(
        self, query, key, value, attention_mask, scaling=self.scaling, dropout=0.0, **kwargs
    )
    attn_output = attn_output.reshape(batch, n_tokens, -1).contiguous()
    return self.dense(attn_output), attn_weights


def _norms(self: nn.Module, hidden_states: Tensor) -> tuple[Tensor, Tensor]:
    """``(input_layernorm(h), post_attention_layernorm(h))``, in one pass when the layer allows."""
    ln1, ln2 = self.input_layernorm, self.post_attention_layernorm
    if self._reprflow_norm_pair and ln1.eps == ln2.eps and ln1.weight is not None and ln2.weight is not None:
        return layer_norm_pair(hidden_states, ln1.weight, ln1.bias, ln2.weight, ln2.bias, eps=ln1.eps)
    return ln1(hidden_states), ln2(hidden_states)


def _layer_forward(self: nn.Module, hidden_states: Tensor, **kwargs) -> Tensor:
    """transformers' ``GPTNeoXLayer.forward`` (parallel residual, eval) with :func:`add3`."""
    attn_in, mlp_in = _norms(self, hidden_states)
    attn_output, _ = self.attention(attn_in, **kwargs)
    attn_output = self.post_attention_dropout(attn_output)
    mlp_output = self.post_mlp_dropout(self.mlp(mlp_in))
    return add3(mlp_output, attn_output, hidden_states)


def _patch_layer(layer: nn.Module, *, norm_pair: bool) -> None:
    original = layer.forward
    layer._reprflow_norm_pair = norm_pair

    def forward(self, hidden_states, *args, **kwargs):
        if args or self.training or not self.use_parallel_residual or not hidden_states.is_cuda:
            return original(hidden_states, *args, **kwargs)
        return _layer_forward(self, hidden_states, **kwargs)

    layer.forward = types.MethodType(forward, layer)


def install_gpt_neox_forward(model: nn.Module, *, norm_pair: bool = True) -> int:
    """Switch every ``GPTNeoXAttention`` of ``model`` to the fused-rotary forward and every
    parallel-residual ``GPTNeoXLayer`` to :func:`add3`, in place.

    Parameters
    ----------
    model : nn.Module
    norm_pair : bool
        Also compute each layer's two LayerNorms in one pass (module docstring).

    Returns
    -------
    int
        Number of modules switched (already switched ones are not counted).
    """
    n = 0
    for module in model.modules():
        if getattr(module, "_reprflow_fastpath", False):
            continue
        if type(module).__name__ == "GPTNeoXLayer":
            _patch_layer(module, norm_pair=norm_pair)
            module._reprflow_fastpath = True
            n += 1
            continue
        if type(module).__name__ != "GPTNeoXAttention":
            continue
        original = module.forward

        def forward(self, hidden_states, attention_mask=None, layer_past=None, position_embeddings=None, **kwargs):
            fast = (
                layer_past is None
                and not self.training
                and hidden_states.is_cuda
                and position_embeddings is not None
                and not kwargs.get("output_attentions", False)
            )
            if not fast:
                return original(
                    hidden_states,
                    attention_mask=attention_mask,
                    layer_past=layer_past,
                    position_embeddings=position_embeddings,
                    **kwargs,
                )
            return _forward(self, hidden_states, attention_mask, position_embeddings=position_embeddings, **kwargs)

        module.forward = types.MethodType(forward, module)
        module._reprflow_fastpath = True
        n += 1
    return n
