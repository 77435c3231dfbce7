"""The one-layer Transformer block of the paper's Eq. 5, batched over Monte Carlo draws.

F(h) is the block's residual update, so the next state is h + F(h):

    A_t  = sum_{j <= t} a_tj W_V h_j,   a_t = softmax_j(q_t . k_j / sqrt(d)) over j <= t (causal),
    F(h) = A + FFN(h + A),              FFN(u) = W_2 GELU(W_1 u),

single head, no output projection, no biases, no LayerNorm. The *linearised* block
(Assumption 4) replaces GELU(x) by x / 2 and keeps the softmax exact.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as fn

from reprflow.theory.weights import TransformerWeights


def causal_attention(h: torch.Tensor, w: TransformerWeights) -> torch.Tensor:
    """Single-head causal softmax attention A(h).

    Parameters
    ----------
    h : Tensor of shape (n_samples, n_tokens, hidden)
    w : TransformerWeights

    Returns
    -------
    Tensor of shape (n_samples, n_tokens, hidden)

    Notes
    -----
    A is odd in h (paper Proposition 2): the logits q_t . k_j are even in h, so the weights
    a_tj are unchanged by h -> -h while the values W_V h_j change sign.
    """
    n = h.shape[1]
    q, k, v = h @ w.w_q.T, h @ w.w_k.T, h @ w.w_v.T
    logits = (q @ k.transpose(1, 2)) / math.sqrt(h.shape[2])  # [n_samples, n_tokens, n_tokens]
    future = torch.triu(torch.ones(n, n, dtype=torch.bool, device=h.device), diagonal=1)
    weights = torch.softmax(logits.masked_fill(future, float("-inf")), dim=-1)
    return weights @ v


def transformer_update(h: torch.Tensor, w: TransformerWeights, *, linearized: bool) -> torch.Tensor:
    """Residual update F(h) = A + FFN(h + A) of one Transformer block (Eq. 5).

    Parameters
    ----------
    h : Tensor of shape (n_samples, n_tokens, hidden)
    w : TransformerWeights
    linearized : bool
        If true, GELU(x) is replaced by x / 2 (Assumption 4).

    Returns
    -------
    Tensor of shape (n_samples, n_tokens, hidden)
    """
    a = causal_attention(h, w)
    pre = (h + a) @ w.w_1.T
    act = pre / 2 if linearized else fn.gelu(pre)
    return a + act @ w.w_2.T
