"""GPT-Neo self-attention through ``torch.nn.functional.scaled_dot_product_attention``.

transformers implements GPT-Neo attention only as ``eager`` (fp32 scores materialised
as a ``(batch, heads, n_tokens, n_tokens)`` tensor per layer) or ``flash_attention_2``
(needs the flash-attn package); it has no ``sdpa`` class. This module supplies one with
the same numerics:

- **no 1/sqrt(head_dim) scaling** (GPT-Neo's quirk; HF's flash path passes
  ``softmax_scale=1.0``), so SDPA is called with ``scale=1.0``;
- **global** layers: plain causal attention (``is_causal=True``, a flash kernel on GPU);
- **local** layers: causal attention restricted to the last ``window_size`` keys
  (the query itself included; HF's ``bias ^ tril(bias, -window_size)`` mask). On CUDA,
  without gradients, through reprflow's Triton sliding-window flash kernel
  (:func:`reprflow.kernels.local_attention.sliding_window_attention`), which visits only
  the key blocks inside the window and writes its output in the memory layout that
  ``_merge_heads`` wants. Otherwise (CPU, no Triton, training, or
  ``install_sdpa_attention(model, local_kernel="sdpa")``) SDPA with HF's own ``bias``
  buffer as a boolean mask (nothing allocated, but all ``n_tokens**2`` scores computed).
  Beyond the buffer's ``max_position_embeddings`` (never, for GPT-Neo)
  :func:`local_causal_attention` computes it block-wise: blocks of ``window_size`` queries
  each attend to their own block and the one before under a fixed band mask, so the cost
  is linear in ``n_tokens``. On an H100 at T=2048 the dense-mask call took 1.04 ms per
  layer against 1.36 ms for the block-wise one (benchmarks/results/extract.md).

Padding. A right-padded batch needs no padding mask: a real token never attends to a
later position, so its output is exact without it (only the outputs at padded positions,
which nobody reads, differ from eager). The caller (:func:`install_sdpa_attention`) checks
each batch's 2-D ``attention_mask`` once; for any other padding it passes HF's 4-D mask
and the layers use it (exact, but the slower masked kernels).
"""

from __future__ import annotations

import logging
import types

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reprflow.kernels.local_attention import sliding_window_attention, sliding_window_supported

logger = logging.getLogger(__name__)

__all__ = ["install_sdpa_attention", "local_causal_attention", "is_right_padded"]

LOCAL_KERNELS = ("triton", "sdpa")


def is_right_padded(attention_mask: Tensor | None) -> bool:
    """Whether every row of a (batch, n_tokens) 0/1 mask is ones then zeros (or no mask).

    One device-to-host sync.
    """
    if attention_mask is None:
        return True
    if attention_mask.dim() != 2:
        return False
    m = attention_mask.to(torch.int8)
    return not bool((m[:, 1:] > m[:, :-1]).any())


def _band_mask(window: int, device: torch.device) -> Tensor:
    """Boolean (n_blocks-independent) mask of shape (window, 2 * window) for one block.

    Row r is the query at offset r of a block; column c is key offset c of the window
    [previous block, this block]. Allowed iff the key lies in (query - window, query].
    """
    r = torch.arange(window, device=device)[:, None]
    c = torch.arange(2 * window, device=device)[None, :]
    return (c > r) & (c <= r + window)


def local_causal_attention(q: Tensor, k: Tensor, v: Tensor, *, window: int, scale: float) -> Tensor:
    """Causal sliding-window attention, each query seeing its last ``window`` keys.

    Parameters
    ----------
    q, k, v : Tensor of shape (batch, heads, n_tokens, head_dim)
    window : int
        Keys per query, the query itself included (GPT-Neo's ``window_size``).
    scale : float
        Multiplies the scores (1.0 for GPT-Neo).

    Returns
    -------
    Tensor of shape (batch, heads, n_tokens, head_dim)
    """
    batch, heads, n_tokens, head_dim = q.shape
    if n_tokens <= window:  # every earlier key is inside the window
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    n_blocks = -(-n_tokens // window)
    pad = n_blocks * window - n_tokens
    # queries: (batch*heads, n_blocks, window, head_dim)
    qb = F.pad(q, (0, 0, 0, pad)).reshape(batch * heads, n_blocks, window, head_dim)
    # keys/values with one empty block in front: (batch*heads, n_blocks + 1, window, head_dim)
    kb = F.pad(k, (0, 0, window, pad)).reshape(batch * heads, n_blocks + 1, window, head_dim)
    vb = F.pad(v, (0, 0, window, pad)).reshape(batch * heads, n_blocks + 1, window, head_dim)
    # window of block i = [block i-1, block i]: (batch*heads, n_blocks, 2*window, head_dim)
    kw = torch.cat([kb[:, :-1], kb[:, 1:]], dim=2)
    vw = torch.cat([vb[:, :-1], vb[:, 1:]], dim=2)
    band = _band_mask(window, q.device)  # (window, 2*window)
    mask = band.expand(n_blocks, window, 2 * window).clone()
    mask[0, :, :window] = False  # block 0 has no previous block (zero padding)
    out = F.scaled_dot_product_attention(qb, kw, vw, attn_mask=mask[None], scale=scale)
    return out.reshape(batch, heads, n_blocks * window, head_dim)[:, :, :n_tokens]


class _PaddingState:
    """Per-model flag set by a pre-forward hook: may the layers ignore the padding mask?"""

    __slots__ = ("ignore_padding_mask",)

    def __init__(self) -> None:
        self.ignore_padding_mask = False


def _sdpa_forward(
    self: nn.Module,
    hidden_states: Tensor,
    attention_mask: Tensor | None = None,
    layer_past=None,
    use_cache: bool = False,
    output_attentions: bool = False,
    **kwargs,
):
    """Drop-in ``forward`` for HF's ``GPTNeoSelfAttention`` (returns ``(output, None)``)."""
    query = self._split_heads(self.q_proj(hidden_states), self.num_heads, self.head_dim)
    key = self._split_heads(self.k_proj(hidden_states), self.num_heads, self.head_dim)
    value = self._split_heads(self.v_proj(hidden_states), self.num_heads, self.head_dim)
    if layer_past is not None:
        key, value = layer_past.update(key, value, self.layer_id)
    n_q, n_k = query.shape[-2], key.shape[-2]
    if output_attentions or n_q != n_k:
        # attention weights requested, or decoding against a cache: HF's eager math
        attn_output, attn_weights = self._attn(query, key, value, attention_mask)
    else:
        dropout = self.attn_dropout.p if self.training else 0.0
        ignore_mask = attention_mask is None or self._reprflow_padding.ignore_padding_mask
        if ignore_mask:
            if (
                self.attention_type == "local"
                and self._reprflow_local_kernel == "triton"
                and dropout == 0.0
                and not (torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad))
                and sliding_window_supported(query, key, value)  # CUDA, Triton, dtype, head_dim
            ):  # n_q == n_k here (a cache took the eager branch)
                attn_output = sliding_window_attention(query, key, value, window=self._reprflow_window, scale=1.0)
            elif self.attention_type == "local" and n_k <= self.bias.shape[-1]:
                # HF's own band mask buffer: one memory-efficient SDPA call (measured faster than
                # the block-banded form up to GPT-Neo's 2048 positions)
                attn_output = F.scaled_dot_product_attention(
                    query, key, value, attn_mask=self.bias[:, :, n_k - n_q : n_k, :n_k], dropout_p=dropout, scale=1.0
                )
            elif self.attention_type == "local":
                attn_output = local_causal_attention(query, key, value, window=self._reprflow_window, scale=1.0)
            else:
                attn_output = F.scaled_dot_product_attention(
                    query, key, value, is_causal=True, dropout_p=dropout, scale=1.0
                )
        else:
            # HF's 4-D additive mask already holds causality and padding; add the window
            mask = attention_mask.to(query.dtype)
            if self.attention_type == "local":
                band = self.bias[:, :, n_k - n_q : n_k, :n_k]
                mask = mask.masked_fill(~band, torch.finfo(query.dtype).min)
            attn_output = F.scaled_dot_product_attention(
                query, key, value, attn_mask=mask, dropout_p=dropout, scale=1.0
            )
        attn_weights = None
    attn_output = self._merge_heads(attn_output, self.num_heads, self.head_dim)
    attn_output = self.resid_dropout(self.out_proj(attn_output))
    return attn_output, attn_weights


def install_sdpa_attention(model: nn.Module, *, local_kernel: str = "triton") -> int:
    """Replace the forward of every eager ``GPTNeoSelfAttention`` of ``model`` in place.

    Parameters
    ----------
    model : GPTNeoForCausalLM or GPTNeoModel
    local_kernel : {"triton", "sdpa"}
        Local layers: ``"triton"`` runs the sliding-window kernel where it applies (CUDA,
        Triton installed, no gradient needed, no dropout) and the dense-mask SDPA call
        elsewhere; ``"sdpa"`` always the dense-mask SDPA call. Set on every switched
        module, also those switched by an earlier call.

    Returns
    -------
    int
        Number of attention modules switched (already switched ones are not counted).

    Notes
    -----
    Registers a forward pre-hook on the GPT-Neo base model that checks the 2-D
    ``attention_mask`` of each call (one host sync) and tells the layers whether the
    padding mask may be dropped (right padding or none). The module's ``bias`` buffer
    (HF's causal/local mask) is kept for the padded fallback.
    """
    from transformers.models.gpt_neo.modeling_gpt_neo import GPTNeoModel, GPTNeoSelfAttention

    if local_kernel not in LOCAL_KERNELS:
        raise ValueError(f"install_sdpa_attention: local_kernel must be one of {LOCAL_KERNELS}, got {local_kernel!r}")
    state = _PaddingState()
    n = 0
    for module in model.modules():
        if type(module) is not GPTNeoSelfAttention:
            continue
        if not getattr(module, "_reprflow_fastpath", False):
            module._reprflow_padding = state
            module._reprflow_window = int(module.config.window_size)
            module.forward = types.MethodType(_sdpa_forward, module)
            module._reprflow_fastpath = True
            n += 1
        module._reprflow_local_kernel = local_kernel
    if n:
        for module in model.modules():
            if isinstance(module, GPTNeoModel):

                def check_padding(mod, args, kwargs, _state=state):
                    mask = kwargs.get("attention_mask", args[2] if len(args) > 2 else None)
                    _state.ignore_padding_mask = is_right_padded(mask)

                module.register_forward_pre_hook(check_padding, with_kwargs=True)
    return n
