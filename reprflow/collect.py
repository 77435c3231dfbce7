"""States in memory, from a notebook: :func:`collect_states` runs texts through any loaded model.

The same engine as the workflow's extraction (:func:`reprflow.extract.capture_batches`:
length-bucketed, right-padded batches, hooks that keep only what is asked for, on the
device) feeding a :class:`reprflow.sinks.MemorySink` instead of a store. The arrays it
returns go straight into :mod:`reprflow.metrics` (one [n_states, n_tokens, hidden] prompt
at a time) and :class:`reprflow.probes.LinearProbe` (``states[k]``: [n_texts, hidden]).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from reprflow.errors import ConfigError, InvalidParameterError, PromptError
from reprflow.extract import capture_batches, run_info
from reprflow.models.layouts import get_layout
from reprflow.models.registry import model_max_context
from reprflow.sinks import MemorySink, feed

__all__ = ["CollectedStates", "collect_states"]


@dataclass(frozen=True)
class CollectedStates:
    """What :func:`collect_states` returns.

    Attributes
    ----------
    states : ndarray or list of ndarray, float32
        ``positions="last"``: [n_states, n_texts, hidden], the state at each text's last
        token -- the ``features`` of :func:`reprflow.probes.fit_layer_probes`; ``states[k]``
        ([n_texts, hidden]) is the ``X`` of :class:`reprflow.probes.LinearProbe`.
        ``positions="all"``: one [n_states, n_tokens_i, hidden] array per text -- the ``H``
        of every metric in :mod:`reprflow.metrics`.
    state_names : list of str
        Name of each state along the first axis (e.g. ``embed``, ``block_1``, ...,
        ``final_norm``; which ones depends on ``view``).
    view : str
        ``"hf"`` (the states of ``output_hidden_states``) or ``"residual"`` (the embedding
        and every block output, before the final norm).
    positions : str
        ``"last"`` or ``"all"``.
    n_tokens : ndarray of shape (n_texts,), int64
        Tokens of each text.
    """

    states: np.ndarray | list[np.ndarray]
    state_names: list[str]
    view: str
    positions: str
    n_tokens: np.ndarray


def _result_bytes(n_states: int, n_tokens: np.ndarray, hidden: int, positions: str) -> int:
    """Bytes of the float32 states :func:`collect_states` returns: n_states x (texts, or all
    their tokens with ``"all"``) x hidden x 4. ``n_tokens`` : (n_texts,) int64."""
    rows = int(n_tokens.sum()) if positions == "all" else n_tokens.size
    return n_states * rows * hidden * 4


def _available_host_bytes() -> int | None:
    """``MemAvailable`` of /proc/meminfo in bytes; None where there is no such file."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _check_fits(nbytes: int, *, positions: str) -> None:
    """Raise ConfigError before any forward pass if the result cannot fit in host memory."""
    available = _available_host_bytes()
    if available is not None and nbytes > available:
        hint = "collect fewer texts or positions='last'" if positions == "all" else "collect fewer texts"
        raise ConfigError(
            f"collect_states: the states asked for take {nbytes / 2**30:.1f} GiB in float32 "
            f"(held in host memory all at once), but only {available / 2**30:.1f} GiB is available; "
            f"{hint}, or extract to a store ('reprflow extract') and read it prompt by prompt"
        )


def _model_device(model: torch.nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _check_context(model: torch.nn.Module, encoded: Sequence[Sequence[int]]) -> None:
    """Raise :class:`PromptError` naming the first text longer than the model's context window
    (a position table would otherwise fail deep in the forward with an IndexError)."""
    limit = model_max_context(model)
    long = [i for i, e in enumerate(encoded) if limit is not None and len(e) > limit]
    if long:
        raise PromptError(
            f"collect_states: text {long[0]} has {len(encoded[long[0]])} tokens, above the context window of "
            f"{limit} of this {model.config.model_type} model ({len(long)} text(s) too long); shorten them"
        )


def _check_vocabulary(model: torch.nn.Module, encoded: Sequence[Sequence[int]], pad_id: int) -> None:
    """Raise :class:`InvalidParameterError` if a token id (or the pad id) is outside the model's
    input embedding table (the forward would otherwise fail with an IndexError deep in torch)."""
    get = getattr(model, "get_input_embeddings", None)
    table = get() if callable(get) else None
    size = getattr(table, "num_embeddings", None)
    if size is None:
        return  # no embedding table to check against
    bad = [(i, max(e), min(e)) for i, e in enumerate(encoded) if max(e) >= size or min(e) < 0]
    if bad:
        where, largest, smallest = bad[0]
        token = largest if largest >= size else smallest
        model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise InvalidParameterError(
            f"collect_states: text {where} has token id {token}, but the model's input embedding table has "
            f"{size} rows (ids 0..{size - 1}; {len(bad)} text(s) out of range): the tokenizer's vocabulary "
            f"(largest id {max(max(e) for e in encoded)} in these texts) does not fit this {model_type} model; "
            f"pass the tokenizer the model was trained with"
        )
    if not 0 <= pad_id < size:
        raise InvalidParameterError(
            f"collect_states: the tokenizer's pad id {pad_id} (pad_token_id, else eos_token_id) is outside the "
            f"model's input embedding table of {size} rows; set tokenizer.pad_token to a token of the model's "
            f"vocabulary"
        )


def collect_states(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    view: str = "hf",
    positions: str = "last",
    batch_size: int = 8,
    device: str | torch.device | None = None,
    add_special_tokens: bool = True,
    progress: bool | None = None,
) -> CollectedStates:
    """Run ``texts`` through ``model`` and return the captured states as numpy arrays.

    Parameters
    ----------
    model : PreTrainedModel
        Any loaded Hugging Face causal LM whose ``model_type`` reprflow can lay out (see
        :mod:`reprflow.models.layouts`). Run in eval mode (its mode is restored after);
        its weights are not changed.
    tokenizer : PreTrainedTokenizer
        Its tokenizer. Padding is done here (on the right; a tokenizer without a pad
        token is fine: padded positions are never read).
    texts : sequence of str
        The inputs, one state (or one array of token states) per text, in order.
    view : {"hf", "residual"}
        Which layers: ``"hf"`` reproduces ``output_hidden_states`` (L + 1 states),
        ``"residual"`` is the embedding and every block output (L + 1 states).
    positions : {"last", "all"}
        The last token of each text, or every token.
    batch_size : int
        Texts per forward pass (texts are grouped by length to reduce padding).
    device : str or torch.device, optional
        Where to compute: default where the model is; ``"auto"``, ``"cpu"``, ``"cuda"``,
        ``"cuda:N"`` move the model there (:func:`reprflow.devices.resolve_device`).
    add_special_tokens : bool
        Passed to the tokenizer.
    progress : bool, optional
        Show a tqdm bar over the texts' tokens; default shows it only on a terminal.

    Returns
    -------
    CollectedStates
        ``.states``, ``.state_names``, ``.view``, ``.positions``, ``.n_tokens``.

    Raises
    ------
    InvalidParameterError
        (a :class:`ConfigError` and a ``ValueError``) Before any forward pass, if
        ``tokenizer`` is not callable, or a token id (or the pad id) is outside the
        model's input embedding table (``model.get_input_embeddings().num_embeddings``):
        the tokenizer does not belong to the model.
    PromptError
        Texts that are not a list of strings, are empty, give no tokens, or are longer
        than the model's context window.
    ConfigError
        Before any forward pass, if the result (held in host memory at once, float32:
        n_states x n_texts x hidden x 4 bytes for ``"last"``, n_states x total tokens x
        hidden x 4 for ``"all"``) is larger than the available host memory. For scale:
        ``"all"`` on a 64-layer, 2560-wide model is 2.8 GB per 4K-token text; ``"last"``
        over 25,000 texts is 17 GB. For more, extract to a store (``reprflow extract``).

    Examples
    --------
    >>> out = collect_states(model, tokenizer, ["a b c", "d e"], positions="last")  # doctest: +SKIP
    >>> out.states.shape  # (n_states, 2, hidden)  # doctest: +SKIP
    """
    from reprflow.devices import resolve_device
    from reprflow.kernels.fallback_notice import note_device, note_model

    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise PromptError("collect_states: texts must be a list of strings (wrap a single text as [text])")
    texts = list(texts)
    if not texts:
        raise PromptError("collect_states: texts is empty")
    if positions not in ("last", "all"):
        raise ConfigError(f"collect_states: positions={positions!r}; expected 'last' or 'all'")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"collect_states: batch_size={batch_size!r}; expected an int >= 1")
    layout = get_layout(model)
    info = run_info(model, len(texts), layout)
    if view not in info.views:
        raise ConfigError(f"collect_states: view={view!r}; expected one of {sorted(info.views)}")
    if not callable(tokenizer):
        raise InvalidParameterError(
            f"collect_states: tokenizer is {type(tokenizer).__name__ if tokenizer is not None else 'None'}, "
            f"not a callable tokenizer; pass the model's tokenizer (e.g. AutoTokenizer.from_pretrained(<model>) "
            f"or reprflow.prompts.load_tokenizer('gpt-neox-20b'))"
        )
    encoded = tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]
    empty = [i for i, e in enumerate(encoded) if len(e) == 0]
    if empty:
        raise PromptError(f"collect_states: text {empty[0]} ({texts[empty[0]]!r}) has no tokens")
    specials = (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None))
    pad_id = next((t for t in specials if t is not None), 0)
    _check_vocabulary(model, encoded, int(pad_id))
    _check_context(model, encoded)
    n_tokens = np.array([len(e) for e in encoded], dtype=np.int64)
    indices = list(info.views[view])
    _check_fits(_result_bytes(len(indices), n_tokens, info.hidden, positions), positions=positions)
    ids = dict(enumerate(encoded))

    if device is None:
        dev = _model_device(model)
    else:
        dev = resolve_device(device)
        model.to(dev)
    note_device(dev)
    note_model(model)  # whose SSM mixers run: says the fallback notice
    sink = MemorySink(len(texts), states=indices, positions=positions)
    sink.start(info)
    was_training = model.training
    model.eval()
    disable = None if progress is None else not progress  # None: only on a terminal
    bar = tqdm(total=int(n_tokens.sum()), desc="collect_states", unit="tok", unit_scale=True, disable=disable)
    try:
        feed(
            capture_batches(
                model,
                ids,
                [(None, range(len(texts)))],
                batch_size=batch_size,
                pad_id=int(pad_id),
                device=dev,
                token_prompts=sink.token_prompts,
                layout=layout,
                progress=bar,
            ),
            [sink],
        )
    finally:
        bar.close()
        model.train(was_training)
    return CollectedStates(
        states=sink.result(),
        state_names=[info.state_names[i] for i in indices],
        view=view,
        positions=positions,
        n_tokens=n_tokens,
    )
