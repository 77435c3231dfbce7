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
from reprflow.workflow.targets import cells

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
    built by the workflow (``tiny``, ``train``): if a length it is scheduled at (its cells,
    :func:`reprflow.workflow.targets.cells`: paper lengths its ``max_context`` lets through and
    its custom tasks' lengths) exceeds the window, raise one :class:`ConfigError` naming the
    entry, the window, where it was read and the fix (``max_context``).
    """
    scheduled: dict[str, set[int]] = {}
    for cell in cells(config):
        scheduled.setdefault(cell.model, set()).add(cell.length)
    for i, model in enumerate(config.models):
        if model.tiny is not None or model.train is not None:
            continue
        found = read_model_json(model.hf_id)
        window = None if found is None else context_window(found[0])
        if window is None:
            continue
        too_long = sorted(length for length in scheduled.get(model.name, ()) if length > window)
        if too_long:
            raise ConfigError(_message(i, model, window, found[1], too_long))


def _message(i: int, model: ModelSpec, window: int, source: str, too_long: list[int]) -> str:
    key = f"config.models[{i}].max_context"
    fix = (
        f"set `max_context: {window}` in that entry so the workflow skips longer lengths for this model"
        if model.max_context is None
        else f"{key} is {model.max_context}, above the model's own window: set it to {window}"
    )
    return (
        f"config.models[{i}] ({model.name}): lengths {too_long} exceed its context window of {window} tokens "
        f"(read from {source}); {fix}, or drop those lengths"
    )
