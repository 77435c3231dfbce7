"""Parameter counts of the matched families' blocks, by formula: the SSM block count without torch.

:func:`reprflow.training.sizing.match_families` gives each SSM the block count (and Mamba2 the
state size) whose non-embedding parameter count is closest to GPT-NeoX's at the same width and
depth. The workflow needs that block count before any model exists (the disk estimate of a
``train:`` model's stores, parsed at every ``snakemake`` start), where building the configs on
torch's meta device cost 5-8 s per start (importing torch and transformers' model classes). The
counts here follow transformers' modules for the configs :func:`reprflow.training.sizing.family_config`
writes (defaults of transformers 5: no projection biases in the SSMs, a conv bias, GPT-NeoX's
attention and MLP biases); ``tests/training/test_block_counts.py`` checks them against models
built from those configs, over a grid of widths, depths and state sizes.
"""

from __future__ import annotations

import math

__all__ = ["MAMBA2_STATES", "best_ssm_shape", "head_dim", "mamba2_head_dim", "non_embedding_params"]

MAMBA2_STATES = (16, 32, 64, 128)
"""Mamba2 state sizes the match tries (Mamba-1 keeps 16, as its checkpoints)."""
EXPAND = 2  # the family invariant (reprflow/models/invariants.py)
CONV_KERNEL = 4


def head_dim(width: int) -> int:
    """Attention head size of the matched Transformers (and the cap of Mamba2's)."""
    return 64 if width >= 256 else 16


def mamba2_head_dim(inner: int, width: int) -> int:
    """Mamba2's head size: the largest of 64, 48, 32, 16 (at most :func:`head_dim`) that divides
    ``inner`` into a multiple of 8 heads, else :func:`head_dim`.

    Why a multiple of 8: ``in_proj`` emits ``2 * inner + 2 * d_state + heads`` channels per token,
    and transformers' Mamba2 (eval mode, so every validation pass and every extraction through
    its forward) hands a slice of that tensor, channel-last, to ``causal_conv1d``'s compiled
    kernel, which requires its strides to be multiples of 8 (12 heads at width 384 failed on an
    H200: "causal_conv1d with channel last layout requires strides ... to be multiples of 8").
    """
    cap = head_dim(width)
    for size in (64, 48, 32, 16):
        if size <= cap and inner % size == 0 and (inner // size) % 8 == 0:
            return size
    return cap


def non_embedding_params(family: str, *, width: int, depth: int, d_state: int = 16) -> int:
    """Parameters outside the (tied) token embedding of a matched ``family`` model.

    ``gpt_neox``: per layer two LayerNorms (weight and bias), the fused QKV and output
    projections and the 4x MLP, all with biases (``12 d^2 + 13 d``), plus the final LayerNorm.
    ``mamba``: per block an RMSNorm and the mixer (``in_proj`` to ``2 I``, the depthwise conv
    with bias, ``x_proj`` to ``R + 2 N``, ``dt_proj`` with bias, ``A_log``, ``D``, ``out_proj``;
    ``I = 2 d``, ``R = ceil(d / 16)``), plus the final RMSNorm. ``mamba2``: per block an RMSNorm
    and the mixer (``in_proj`` to ``2 I + 2 N + H``, the conv over ``I + 2 N`` channels with bias,
    ``dt_bias``, ``A_log``, ``D`` per head, the gated RMSNorm, ``out_proj``; one group), plus the
    final RMSNorm.
    """
    d = width
    if family == "gpt_neox":
        return depth * (12 * d * d + 13 * d) + 2 * d
    inner = EXPAND * d
    if family == "mamba":
        rank, n = math.ceil(d / 16), d_state
        block = d + 3 * inner * d + inner * (CONV_KERNEL + 3 + 2 * rank + 3 * n)
        return depth * block + d
    if family == "mamba2":
        heads, n = inner // mamba2_head_dim(inner, d), d_state
        conv_channels = inner + 2 * n
        block = d + d * (2 * inner + 2 * n + heads) + conv_channels * (CONV_KERNEL + 1) + 3 * heads + inner + inner * d
        return depth * block + d
    raise ValueError(f"no formula for family {family!r}; use gpt_neox, mamba or mamba2")


def best_ssm_shape(family: str, *, width: int, depth: int) -> tuple[int, int]:
    """``(blocks, d_state)`` of ``family`` (``mamba`` or ``mamba2``) whose non-embedding count is
    closest to GPT-NeoX's at ``width`` and ``depth`` (blocks from ``depth`` to ``4 * depth``; for
    Mamba2 each state size of :data:`MAMBA2_STATES`; ties keep the first found)."""
    reference = non_embedding_params("gpt_neox", width=width, depth=depth)
    best = None  # (error, blocks, d_state)
    for d_state in MAMBA2_STATES if family == "mamba2" else (16,):
        for blocks in range(depth, 4 * depth + 1):
            err = abs(non_embedding_params(family, width=width, depth=blocks, d_state=d_state) - reference)
            if best is not None and err >= best[0] and blocks > depth and best[2] == d_state:
                break  # the count grows with the block count: past the closest one
            if best is None or err < best[0]:
                best = (err, blocks, d_state)
    return best[1], best[2]
