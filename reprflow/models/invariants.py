"""Family invariants, asserted on every model config after loading.

Two checks, both on the ``PretrainedConfig`` (cheap: no weights involved):

:func:`check_family_invariants`
    Structural facts of each family that a wrong or badly converted checkpoint
    breaks, e.g. for ``mamba2``: ``n_groups == 1`` (transformers' ``Mamba2Config``
    defaults to 8; the paper's Mamba2 checkpoints use 1), ``expand == 2`` and
    ``num_heads * head_dim == expand * hidden_size``; for ``gpt_neo``: attention
    layers alternate global/local, starting global. When the tokenizer size is
    known, every token id must have an embedding row and the embedding may be
    padded by at most :data:`MAX_VOCAB_PADDING` rows.
:func:`check_matches_shipped`
    For a paper model, the loaded config must agree with the shipped config
    (:mod:`reprflow.models.shipped`) on every architecture key of
    :data:`ARCHITECTURE_KEYS` -- the keys that decide the built network. So the
    pretrained and the random arm of one model are the same architecture, and a
    checkpoint that drifted (GPT-Neo's local window 256, Mamba2's state size 128
    and ``n_groups`` 1, vocabulary sizes, layer counts) stops the run.

Every failure raises one :class:`~reprflow.errors.ConfigError` naming the model
(and the config key it came from), the broken invariant, and the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from reprflow.errors import ConfigError

__all__ = [
    "ARCHITECTURE_KEYS",
    "MAX_VOCAB_PADDING",
    "architecture",
    "check_family_invariants",
    "check_matches_shipped",
]

#: rows an embedding may have beyond the tokenizer (checkpoints pad to multiples of 8, 16 or 128)
MAX_VOCAB_PADDING = 128


def _rotary_fraction(config) -> float | None:
    rope = getattr(config, "rope_parameters", None) or {}
    if isinstance(rope, Mapping) and "partial_rotary_factor" in rope:
        return float(rope["partial_rotary_factor"])
    value = getattr(config, "rotary_pct", None)
    return None if value is None else float(value)


def _rope_theta(config) -> float | None:
    rope = getattr(config, "rope_parameters", None) or {}
    if isinstance(rope, Mapping) and "rope_theta" in rope:
        return float(rope["rope_theta"])
    value = getattr(config, "rotary_emb_base", None)
    return None if value is None else float(value)


def _attr(name: str) -> Callable[[Any], Any]:
    return lambda config: getattr(config, name, None)


_COMMON = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size", "tie_word_embeddings")

#: model_type -> architecture keys compared against the shipped config (getter per key)
ARCHITECTURE_KEYS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "gpt_neo": {
        **{k: _attr(k) for k in _COMMON},
        **{
            k: _attr(k)
            for k in (
                "num_heads",
                "intermediate_size",
                "max_position_embeddings",
                "window_size",
                "attention_layers",
                "activation_function",
            )
        },
    },
    "gpt_neox": {
        **{k: _attr(k) for k in _COMMON},
        **{
            k: _attr(k)
            for k in (
                "num_attention_heads",
                "intermediate_size",
                "max_position_embeddings",
                "use_parallel_residual",
                "hidden_act",
            )
        },
        "rotary_fraction": _rotary_fraction,
        "rope_theta": _rope_theta,
    },
    "mamba": {
        **{k: _attr(k) for k in _COMMON},
        **{
            k: _attr(k)
            for k in (
                "state_size",
                "expand",
                "intermediate_size",
                "conv_kernel",
                "time_step_rank",
                "use_bias",
                "use_conv_bias",
            )
        },
    },
    "mamba2": {
        **{k: _attr(k) for k in _COMMON},
        **{
            k: _attr(k)
            for k in (
                "num_heads",
                "head_dim",
                "state_size",
                "n_groups",
                "expand",
                "conv_kernel",
                "use_bias",
                "use_conv_bias",
            )
        },
    },
}


def architecture(config) -> dict[str, Any]:
    """The values of :data:`ARCHITECTURE_KEYS` for ``config`` (empty for other families)."""
    keys = ARCHITECTURE_KEYS.get(getattr(config, "model_type", None), {})
    return {key: get(config) for key, get in keys.items()}


def _fail(model: str, origin: str, what: str, fix: str) -> ConfigError:
    return ConfigError(f"model '{model}' ({origin}): {what}; {fix}")


def _divisible(config, model, origin, heads_attr: str) -> None:
    hidden, heads = config.hidden_size, getattr(config, heads_attr)
    if not heads or hidden % heads:
        raise _fail(
            model,
            origin,
            f"hidden_size {hidden} is not divisible by {heads_attr} {heads}",
            "the config.json is corrupt or not this family's",
        )


def _gpt_neo(config, model, origin) -> None:
    _divisible(config, model, origin, "num_heads")
    layers = list(config.attention_layers)
    expected = ["global", "local"] * (config.num_layers // 2) + ["global"] * (config.num_layers % 2)
    if layers != expected:
        raise _fail(
            model,
            origin,
            f"attention_layers {layers} is not GPT-Neo's alternating global/local pattern "
            f"over {config.num_layers} layers",
            "use an unmodified GPT-Neo checkpoint",
        )
    if not isinstance(config.window_size, int) or config.window_size < 1:
        raise _fail(
            model,
            origin,
            f"window_size {config.window_size!r} is not a positive integer",
            "GPT-Neo's local attention needs a window (256 in the paper's GPT-Neo-2.7B)",
        )


def _gpt_neox(config, model, origin) -> None:
    _divisible(config, model, origin, "num_attention_heads")
    fraction = _rotary_fraction(config)
    if fraction is None or not 0 < fraction <= 1:
        raise _fail(
            model,
            origin,
            f"rotary fraction (rotary_pct / partial_rotary_factor) {fraction!r} is not in (0, 1]",
            "Pythia rotates 25% of each head (rotary_pct 0.25)",
        )


def _mamba(config, model, origin) -> None:
    if config.expand != 2 or config.intermediate_size != config.expand * config.hidden_size:
        raise _fail(
            model,
            origin,
            f"expand {config.expand} and intermediate_size {config.intermediate_size} do not give "
            f"intermediate_size == 2 * hidden_size ({2 * config.hidden_size})",
            "the Mamba checkpoints of the paper use expand 2",
        )


def _mamba2(config, model, origin) -> None:
    if config.n_groups != 1:
        raise _fail(
            model,
            origin,
            f"n_groups is {config.n_groups}, expected 1 (transformers' Mamba2Config defaults to 8, "
            "so a conversion that dropped the key silently builds a different model)",
            'set "n_groups": 1 in the checkpoint\'s config.json or use a correct conversion '
            "such as AntonV/mamba2-2.7b-hf",
        )
    inner = config.num_heads * config.head_dim
    if config.expand != 2 or inner != config.expand * config.hidden_size:
        raise _fail(
            model,
            origin,
            f"num_heads * head_dim = {config.num_heads} * {config.head_dim} = {inner} with expand "
            f"{config.expand}; expected expand 2 and num_heads * head_dim == 2 * hidden_size "
            f"({2 * config.hidden_size})",
            "the config.json does not describe a Mamba2 checkpoint of the paper",
        )


_FAMILY_CHECKS: dict[str, Callable[[Any, str, str], None]] = {
    "gpt_neo": _gpt_neo,
    "gpt_neox": _gpt_neox,
    "mamba": _mamba,
    "mamba2": _mamba2,
    "gpt2": lambda c, m, o: _divisible(c, m, o, "num_attention_heads"),
    "llama": lambda c, m, o: _divisible(c, m, o, "num_attention_heads"),
    "bamba": lambda c, m, o: _divisible(c, m, o, "num_attention_heads"),
}


def check_family_invariants(config, *, model: str, origin: str = "model", tokenizer_size: int | None = None) -> None:
    """Assert the structural invariants of ``config``'s family.

    Parameters
    ----------
    config : PretrainedConfig
    model : str
        The model id or path, quoted in errors.
    origin : str
        Where the id came from, e.g. ``"config.models[3].hf_id"``.
    tokenizer_size : int, optional
        ``len(tokenizer)`` of the tokenizer the model is run with; checks
        ``tokenizer_size <= vocab_size <= tokenizer_size + MAX_VOCAB_PADDING``.

    Raises
    ------
    ConfigError
    """
    check = _FAMILY_CHECKS.get(config.model_type)
    if check is not None:
        check(config, model, origin)
    if tokenizer_size is not None:
        vocab = config.vocab_size
        if not tokenizer_size <= vocab <= tokenizer_size + MAX_VOCAB_PADDING:
            raise _fail(
                model,
                origin,
                f"vocab_size {vocab} does not match the tokenizer's {tokenizer_size} tokens (an embedding "
                f"must cover every token id, padded by at most {MAX_VOCAB_PADDING} rows)",
                "pair the model with its own tokenizer (config.models[i].tokenizer in the workflow, --tokenizer "
                "of `reprflow extract`): gpt2 for GPT-Neo, gpt-neox-20b for Pythia/Mamba/Mamba2",
            )


def check_matches_shipped(config, shipped, *, model: str, origin: str = "model", shipped_path: str = "") -> None:
    """Assert ``config`` equals the shipped ``shipped`` config on every architecture key.

    Raises
    ------
    ConfigError
        Naming the first key that differs, both values, and the shipped file.
    """
    got, want = architecture(config), architecture(shipped)
    for key, expected in want.items():
        if got.get(key) != expected:
            raise _fail(
                model,
                origin,
                f"checkpoint config has {key} = {got.get(key)!r} but the shipped config {shipped_path} "
                f"has {expected!r}, so its random-init arm would be a different architecture",
                "pin config.models[i].revision to the checkpoint the shipped config describes "
                "(docs/models.md), or correct the shipped file and its SOURCE.md entry",
            )
