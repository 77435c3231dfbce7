"""A model's ``config.json`` read while a run is planned: never the hub, never transformers.

The Snakemake parent process plans a run before any job loads a model: the disk preflight
needs each model's hidden size and block count (:mod:`reprflow.workflow.disk`), and the
context-window check below needs its trained context. Both read the same file: the shipped
config of a paper model's hub id (``reprflow/models/configs/``), else ``<hf_id>/config.json``
when ``hf_id`` is a local folder (a checkpoint downloaded with ``hf download --local-dir`` or
written by ``save_pretrained``). A hub id with no shipped config is unknown here; its window is
checked when its extraction job loads it (:func:`reprflow.pipeline.extract_stage.check_context`).

Torch-free and cheap (plain JSON), since Snakemake parses the workflow on every call.
"""

from __future__ import annotations

import json
from pathlib import Path

from reprflow.config import Config, ModelSpec
from reprflow.errors import ConfigError
from reprflow.models.shipped import CONTEXT_ATTRS, shipped_config_path
from reprflow.workflow.targets import cells, prompt_max_tokens

__all__ = ["check_context_windows", "context_window", "read_model_json"]


def read_model_json(hf_id: str) -> tuple[dict, str] | None:
    """The config.json of ``hf_id`` as a dict with the path it came from, or None.

    The shipped config of a hub id first, then ``<hf_id>/config.json``; an unreadable or
    malformed file counts as absent (the job that loads the model reports it properly).
    """
    shipped = shipped_config_path(hf_id)
    for path in (shipped, Path(hf_id).expanduser() / "config.json"):
        if path is None:
            continue
        try:
            if path.is_file():
                data = json.loads(path.read_text())
                if isinstance(data, dict):
                    return data, str(path)
        except (OSError, ValueError):
            continue
    return None


def context_window(config_json: dict) -> int | None:
    """The trained context in tokens from a config.json dict (its ``text_config`` if it has one),
    or None when it declares none (the SSMs)."""
    text = config_json.get("text_config") if isinstance(config_json.get("text_config"), dict) else config_json
    for key in CONTEXT_ATTRS:
        value = text.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def check_context_windows(config: Config) -> None:
    """Refuse, before any job runs, a model that would read prompts longer than its own window.

    For every model whose config.json is known here (see the module docstring) and that is not
    built by the workflow (``tiny``, ``train``): if a prompt set it reads (its cells,
    :func:`reprflow.workflow.targets.cells`) can hold prompts longer than the window
    (:func:`reprflow.workflow.targets.prompt_max_tokens`: the length plus its tolerance, capped
    by the ``max_context`` of the models sharing the tokenizer), raise one :class:`ConfigError`
    naming the entry, the window, where it was read and the fix (``max_context``).
    """
    scheduled: dict[str, set[tuple[str, int]]] = {}
    for cell in cells(config):
        scheduled.setdefault(cell.model, set()).add((cell.task, cell.length))
    for i, model in enumerate(config.models):
        if model.tiny is not None or model.train is not None:
            continue
        found = read_model_json(model.hf_id)
        window = None if found is None else context_window(found[0])
        if window is None:
            continue
        too_long: dict[int, int] = {}  # length -> the most tokens a prompt read at it can have
        for task, length in scheduled.get(model.name, ()):
            most = prompt_max_tokens(config, model.tokenizer, task, length)
            if most > window:
                too_long[length] = max(most, too_long.get(length, 0))
        if too_long:
            raise ConfigError(_message(i, model, window, found[1], too_long))


def _message(i: int, model: ModelSpec, window: int, source: str, too_long: dict[int, int]) -> str:
    fix = (
        f"set `max_context: {window}` in that entry (its prompts are then cut to fit and longer lengths skipped)"
        if model.max_context is None
        else f"config.models[{i}].max_context is {model.max_context}, above the model's own window: set it to {window}"
    )
    sets = ", ".join(f"{n} tokens at length {length}" for length, n in sorted(too_long.items()))
    return (
        f"config.models[{i}] ({model.name}): its prompts may have up to {sets}, beyond its context window of "
        f"{window} tokens (read from {source}); {fix}"
    )
