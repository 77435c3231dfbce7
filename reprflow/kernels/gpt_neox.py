"""GPT-NeoX (Pythia) attention with the rotary embedding in one Triton pass.

Replaces the ``forward`` of each ``GPTNeoXAttention`` instance with transformers' own
code in which ``apply_rotary_pos_emb`` (and the ``cat`` copies around it) is
:func:`reprflow.kernels.rotary.rotary_qk`: the same values (``torch.equal``), fed to the
same attention function (SDPA, or whatever ``config._attn_implementation`` names) in the
same layout. Calls with a cache, in training mode or off CUDA run transformers' forward.
"""

from __future__ import annotations

import types

from torch import Tensor, nn

from reprflow.kernels.rotary import rotary_qk

__all__ = ["install_rotary_attention"]


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
    query, key = rotary_qk(qkv, cos, sin, num_heads=num_heads, head_dim=head_dim)
    value = qkv.view(batch, n_tokens, num_heads, 3 * head_dim).transpose(1, 2)[..., 2 * head_dim :]
    attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
    attn_output, attn_weights = attention(
        self, query, key, value, attention_mask, scaling=self.scaling, dropout=0.0, **kwargs
    )
    attn_output = attn_output.reshape(batch, n_tokens, -1).contiguous()
    return self.dense(attn_output), attn_weights


def install_rotary_attention(model: nn.Module) -> int:
    """Switch every ``GPTNeoXAttention`` of ``model`` to the fused-rotary forward, in place.

    Returns
    -------
    int
        Number of attention modules switched (already switched ones are not counted).
    """
    n = 0
    for module in model.modules():
        if type(module).__name__ != "GPTNeoXAttention" or getattr(module, "_reprflow_fastpath", False):
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
