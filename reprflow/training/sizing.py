"""Matched architectures: one config per family at a shared width, sized to one parameter count.

A Transformer layer (attention + 4x MLP) holds about ``12 d^2`` weights, a Mamba or Mamba2
block with ``expand = 2`` about ``6 d^2`` plus terms in the state size. The project's family
invariants (reprflow/models/invariants.py) require ``expand == 2``, as in the paper's
checkpoints, so parameters are matched the way those checkpoints match them: the SSMs stack
more blocks (Mamba-2.8B has 64 blocks against GPT-Neo-2.7B's 32 layers). For each SSM the
helper picks the block count (and, for Mamba2, the state size among 16/32/64/128) whose
non-embedding count is closest to GPT-NeoX's at the same width and Transformer depth. All
families tie input and output embeddings (Pythia unties them) and use one vocabulary size,
the tokenizer's padded to a multiple of 64, so the embedding count is identical and the match
holds with or without it. See docs/training.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, GPTNeoConfig, GPTNeoXConfig, Mamba2Config, MambaConfig, PretrainedConfig

from reprflow.errors import ConfigError
from reprflow.training.block_counts import CONV_KERNEL, EXPAND, best_ssm_shape, head_dim, mamba2_head_dim

__all__ = [
    "MATCHED_FAMILIES",
    "SizedModel",
    "count_params",
    "family_config",
    "match_families",
    "padded_vocab",
    "train_flops_per_token",
    "width_for_params",
]

MATCHED_FAMILIES = ("gpt_neo", "gpt_neox", "mamba", "mamba2")


def padded_vocab(n_tokens: int, multiple: int = 64) -> int:
    """The tokenizer size rounded up to ``multiple`` (embedding rows; extra rows are never targets)."""
    return int(math.ceil(n_tokens / multiple) * multiple)


def family_config(
    family: str,
    *,
    width: int,
    depth: int,
    vocab_size: int,
    context: int,
    window: int | None = None,
    d_state: int | None = None,
) -> PretrainedConfig:
    """The matched config of ``family`` (no dropout, tied embeddings).

    Parameters
    ----------
    family : str
        ``gpt_neo``, ``gpt_neox``, ``mamba`` or ``mamba2``.
    width, depth : int
        Hidden size ``d`` and number of blocks. GPT-Neo alternates global and local attention
        (global first), so its depth must be even.
    vocab_size : int
        Embedding rows (see :func:`padded_vocab`).
    context : int
        Trained context; the Transformers' ``max_position_embeddings``.
    window : int, optional
        GPT-Neo's local attention window (default ``min(256, context // 4)``).
    d_state : int, optional
        SSM state size (default 16 for Mamba, 64 for Mamba2 at width >= 256, else 16).
    """
    heads = max(1, width // head_dim(width))
    common = dict(vocab_size=vocab_size, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0)
    if family == "gpt_neo":
        if depth % 2:
            raise ConfigError(f"gpt_neo depth {depth}: must be even (alternating global/local attention)")
        return GPTNeoConfig(
            hidden_size=width,
            num_layers=depth,
            num_heads=heads,
            intermediate_size=4 * width,
            attention_types=[[["global", "local"], depth // 2]],
            window_size=window or max(1, min(256, context // 4)),
            max_position_embeddings=context,
            embed_dropout=0.0,
            attention_dropout=0.0,
            resid_dropout=0.0,
            **common,
        )
    if family == "gpt_neox":
        return GPTNeoXConfig(
            hidden_size=width,
            num_hidden_layers=depth,
            num_attention_heads=heads,
            intermediate_size=4 * width,
            rotary_pct=0.25,
            max_position_embeddings=context,
            hidden_dropout=0.0,
            attention_dropout=0.0,
            use_parallel_residual=True,
            **common,
        )
    expand = EXPAND  # the family invariant (reprflow/models/invariants.py)
    inner = expand * width
    if family == "mamba":
        return MambaConfig(
            hidden_size=width,
            num_hidden_layers=depth,
            state_size=d_state or 16,
            expand=expand,
            conv_kernel=CONV_KERNEL,
            pad_token_id=0,
            **common,
        )
    if family == "mamba2":
        size = mamba2_head_dim(int(inner), width)
        if int(inner) % size:
            raise ConfigError(f"mamba2: inner width {int(inner)} is not a multiple of head_dim {size}")
        return Mamba2Config(
            hidden_size=width,
            num_hidden_layers=depth,
            state_size=d_state or (64 if width >= 256 else 16),
            expand=expand,
            head_dim=size,
            num_heads=int(inner) // size,
            n_groups=1,
            conv_kernel=CONV_KERNEL,
            chunk_size=64 if context <= 256 else 256,
            pad_token_id=0,
            **common,
        )
    raise ConfigError(f"training family {family!r} is not supported; use one of {list(MATCHED_FAMILIES)}")


def count_params(config: PretrainedConfig) -> tuple[int, int]:
    """``(total, non_embedding)`` parameter counts of a config, built on the meta device
    (no memory). Tied weights count once; non-embedding excludes the token (and GPT-Neo's
    position) embeddings and an untied output head."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings()
    if head is not None and head.weight is not model.get_input_embeddings().weight:
        emb += head.weight.numel()
    wpe = getattr(getattr(model, "transformer", None), "wpe", None)
    if wpe is not None:
        emb += wpe.weight.numel()
    return total, total - emb


@dataclass(frozen=True)
class SizedModel:
    """One family sized for the suite: its config and parameter counts."""

    family: str
    config: PretrainedConfig
    n_params: int
    n_non_embedding: int
    depth: int


def _best_ssm(family: str, *, depth: int, **kw) -> PretrainedConfig:
    """The config of :func:`~reprflow.training.block_counts.best_ssm_shape` (counted by formula,
    checked against these configs' models in tests/training/test_block_counts.py)."""
    blocks, d_state = best_ssm_shape(family, width=kw["width"], depth=depth)
    return family_config(family, depth=blocks, d_state=d_state, **kw)


def match_families(
    families, *, width: int, depth: int, vocab_size: int, context: int, tolerance: float = 0.10, **kw
) -> dict[str, SizedModel]:
    """Configs of ``families`` at one width and depth with matched parameter counts.

    Transformers use a 4x MLP and ``depth`` layers; each SSM takes the block count (and Mamba2
    the state size) whose non-embedding count is closest to GPT-NeoX's. Raises :class:`ConfigError` if any family's total or non-embedding
    count is more than ``tolerance`` (relative) away from GPT-NeoX's at the same width and depth.
    """
    shape = dict(width=width, depth=depth, vocab_size=vocab_size, context=context, **kw)
    ref_total, reference = count_params(family_config("gpt_neox", **shape))
    out = {}
    for family in families:
        if family in ("mamba", "mamba2"):
            config = _best_ssm(family, **shape)
        else:
            config = family_config(family, **shape)
        total, non_emb = count_params(config)
        blocks = config.num_layers if family == "gpt_neo" else config.num_hidden_layers
        out[family] = SizedModel(family, config, total, non_emb, blocks)
    for key, ref in (("n_params", ref_total), ("n_non_embedding", reference)):
        for s in out.values():
            if abs(getattr(s, key) - ref) > tolerance * ref:
                raise ConfigError(
                    f"matched suite (width {width}, depth {depth}): {s.family} has {key} "
                    f"{getattr(s, key)}, more than {tolerance:.0%} from GPT-NeoX's {ref}; "
                    f"change width/depth"
                )
    return out


def width_for_params(target: int, *, depth: int, vocab_size: int, context: int, step: int = 64) -> int:
    """The width (a multiple of ``step``) whose GPT-NeoX config at ``depth`` has the total
    parameter count closest to ``target``."""
    best = None
    for width in range(step, 8192 + step, step):
        total = count_params(
            family_config("gpt_neox", width=width, depth=depth, vocab_size=vocab_size, context=context)
        )[0]
        if best is None or abs(total - target) < abs(best[1] - target):
            best = (width, total)
        if total > 2 * target:
            break
    return best[0]


def train_flops_per_token(config: PretrainedConfig, context: int) -> int:
    """Training FLOPs per token of ``config`` at ``context`` (the roofline's numerator).

    ``6 * N_mm + 12 * L_attn * context * width`` (Kaplan et al. 2020; Chowdhery et al. 2022,
    App. B): ``N_mm`` = the non-embedding parameters plus the output head (``vocab x width``;
    the tied input embedding is a lookup, no matmul), ``6`` = 2 forward + 4 backward FLOPs per
    weight and token; the attention term counts the score and value matmuls of every attention
    layer over the full context (also GPT-Neo's local layers, whose eager implementation
    computes the full matrix and masks it). Not counted: the SSM scans (elementwise, about
    ``9 * d_inner * d_state`` per layer and token, under 1% here), norms, softmax.
    """
    _, non_embedding = count_params(config)
    n_mm = non_embedding + config.vocab_size * config.hidden_size
    attn_layers = getattr(config, "num_layers", None) if config.model_type == "gpt_neo" else None
    if config.model_type == "gpt_neox":
        attn_layers = config.num_hidden_layers
    attention = 12 * attn_layers * context * config.hidden_size if attn_layers else 0
    return 6 * n_mm + attention
