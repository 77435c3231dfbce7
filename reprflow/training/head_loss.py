"""Next-token cross-entropy through the output projection, chunked over tokens.

With a ~50K vocabulary the output layer of a small model is most of its training step: the
naive ``F.cross_entropy(model(x).logits.float(), y)`` materialises the (tokens, vocab)
logits in bfloat16, again in float32, their log-softmax and its gradient — for the matched
suite's batch (65,536 tokens x 50,304) about 13 GB per float32 copy, several times per step.
:func:`linear_cross_entropy` never holds more than one chunk of logits: in the forward pass
it computes, chunk by chunk, the loss *and* the gradients with respect to the hidden states
and the projection weight (the softmax minus the one-hot target), so the backward pass only
rescales them.

Numerics (the same as bf16 autocast of the naive form): the two matmuls per chunk run in
``compute_dtype`` with float32 accumulation (the weight is cast once per call); the
log-softmax (one fused pass from the compute-dtype logits), loss and softmax are float32; the
weight gradient is summed over chunks in float32. With ``compute_dtype=torch.float32`` the result equals the naive float32 loss and
gradients to rounding (tests/training/test_head_loss.py, against a float64 reference).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["DEFAULT_CHUNK_TOKENS", "linear_cross_entropy"]

#: Tokens per chunk: float32 log-probabilities of 16,384 tokens over a 50K vocabulary are 3.3 GB.
#: On an H200 (benchmarks/head_loss.py, matched suite's head, 65,536 tokens) chunks of 4,096 /
#: 8,192 / 16,384 / 32,768 took 46.8 / 45.0 / 44.1 / 43.8 ms forward + backward (peak 3.3 / 6.3 /
#: 12.5 / 24.8 GiB) against 53.1 ms and 36.9 GiB for the naive full-logits loss.
DEFAULT_CHUNK_TOKENS = 16384


def _chunked(
    hidden: Tensor, weight: Tensor, targets: Tensor, compute_dtype: torch.dtype, chunk: int, want_grad: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(summed loss, d(summed loss)/d(hidden) in ``compute_dtype``, d/d(weight) in float32)."""
    w = weight.detach().to(compute_dtype)
    h = hidden.detach().to(compute_dtype)
    grad_h = torch.empty_like(h) if want_grad else None
    grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_grad else None
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[0], chunk):
        hc, tc = h[start : start + chunk], targets[start : start + chunk]
        # (c, vocab) log-probabilities in float32, from the compute-dtype logits in one fused pass
        logp = torch.log_softmax(hc @ w.T, dim=-1, dtype=torch.float32)
        total -= logp.gather(1, tc[:, None]).sum()
        if want_grad:
            probs = logp.exp_()  # softmax, in place
            probs.scatter_add_(1, tc[:, None], torch.full((len(tc), 1), -1.0, device=probs.device))
            g = probs.to(compute_dtype)  # d(summed loss)/d(logits) of this chunk
            grad_h[start : start + chunk] = g @ w
            grad_w += (g.T @ hc).float()
    return total, grad_h, grad_w


class _LinearCrossEntropy(torch.autograd.Function):
    """Loss and both gradients in the forward pass; the backward pass rescales them."""

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, targets: Tensor, compute_dtype: torch.dtype, chunk: int) -> Tensor:
        total, grad_h, grad_w = _chunked(hidden, weight, targets, compute_dtype, chunk, want_grad=True)
        ctx.n, ctx.dtypes = hidden.shape[0], (hidden.dtype, weight.dtype)
        ctx.save_for_backward(grad_h, grad_w)
        return total / ctx.n

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        grad_h, grad_w = ctx.saved_tensors
        scale = grad_loss / ctx.n
        gh = (grad_h * scale).to(ctx.dtypes[0]) if ctx.needs_input_grad[0] else None
        gw = (grad_w * scale).to(ctx.dtypes[1]) if ctx.needs_input_grad[1] else None
        return gh, gw, None, None, None


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    compute_dtype: torch.dtype = torch.float32,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
) -> Tensor:
    """Mean cross-entropy (nats) of ``softmax(hidden @ weight.T)`` against ``targets``.

    Parameters
    ----------
    hidden : Tensor of shape (n_tokens, width)
        Final hidden states (after the model's last norm), any float dtype.
    weight : Tensor of shape (vocab, width)
        The output projection (no bias); its gradient is float32-accumulated and returned in
        ``weight.dtype``.
    targets : Tensor of shape (n_tokens,), int64
        Next-token ids, all valid (no ignore index).
    compute_dtype : torch.dtype
        Dtype of the two matmuls per chunk (bfloat16 on a GPU); softmax and loss are float32.
    chunk_tokens : int
        Tokens per chunk; peak extra memory is about ``chunk_tokens * vocab * 4`` bytes.

    Returns
    -------
    Tensor
        A float32 scalar; differentiable with respect to ``hidden`` and ``weight``.
    """
    if hidden.dim() != 2 or targets.shape != hidden.shape[:1]:
        raise ValueError(
            f"hidden {tuple(hidden.shape)} must be (n_tokens, width) and targets {tuple(targets.shape)} (n_tokens,)"
        )
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens {chunk_tokens} must be >= 1")
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(hidden, weight, targets, compute_dtype, int(chunk_tokens))
    total, _, _ = _chunked(hidden, weight, targets, compute_dtype, int(chunk_tokens), want_grad=False)
    return total / hidden.shape[0]
