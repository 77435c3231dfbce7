"""The ``config.json`` of each paper model, shipped with the package (no hub needed).

Random-init runs need only a model's hyperparameters, never its weights, so the
project carries the config of every model the paper studies under
``reprflow/models/configs/{hf_id with '/' replaced by '__'}.json`` (sources in
``configs/SOURCE.md``). :func:`shipped_config_path` finds the file for a hub id.
The module is torch-free and reads plain JSON, so the workflow's disk preflight can
read hidden sizes and layer counts from these files without importing transformers.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["CONTEXT_ATTRS", "SHIPPED_DIR", "read_shipped_config", "shipped_config_path", "shipped_ids"]

#: config keys holding a trained context limit, first match wins (read by
#: :func:`reprflow.models.layouts.context_attr` and the planning-time window check)
CONTEXT_ATTRS = ("max_position_embeddings", "n_positions", "n_ctx")

#: folder of the shipped config.json files
SHIPPED_DIR = Path(__file__).resolve().parent / "configs"


def _file_name(hf_id: str) -> str:
    return hf_id.replace("/", "__") + ".json"


def shipped_config_path(hf_id: str) -> Path | None:
    """The shipped ``config.json`` for hub id ``hf_id`` (``org/name``), or None.

    Local paths (anything that is not exactly ``org/name``) never match.
    """
    if hf_id.count("/") != 1 or hf_id.startswith(("/", ".", "~")):
        return None
    path = SHIPPED_DIR / _file_name(hf_id)
    return path if path.is_file() else None


def read_shipped_config(hf_id: str) -> dict | None:
    """The shipped config of ``hf_id`` as a plain dict (strict JSON), or None."""
    path = shipped_config_path(hf_id)
    if path is None:
        return None
    with open(path) as fh:
        return json.load(fh)


def shipped_ids() -> list[str]:
    """Hub ids that have a shipped config, sorted."""
    return sorted(p.stem.replace("__", "/", 1) for p in SHIPPED_DIR.glob("*.json"))
