"""Read the per-cell metric files (results/metrics/**) back into tidy tables.

Tables, figures and the report read only these files, never a model or an activation store.
Every reader returns a pandas DataFrame with the cell keys (model, init, task, length) in front.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from reprflow.config import Config
from reprflow.errors import ReprflowError
from reprflow.workflow.targets import PROBES, TOKEN_METRICS, Cell, cells


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise ReprflowError(f"{path}: metric file missing; rerun the metrics phase (snakemake all_metrics)")
    with open(path) as fh:
        return json.load(fh)


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ReprflowError(f"{path}: metric file missing; rerun the metrics phase (snakemake all_metrics)")
    return pd.read_csv(path)


def _with_cell(frame: pd.DataFrame, cell: Cell) -> pd.DataFrame:
    keys = {"model": cell.model, "init": cell.init, "task": cell.task, "length": cell.length}
    return frame.assign(**keys)[[*keys, *frame.columns]]


def probe_curves(config: Config, root: str | Path = ".") -> pd.DataFrame:
    """Per-layer probe accuracy: one row per (cell, view, state_index, seed)."""
    frames = [_with_cell(_read_csv(Path(root) / c.fmt(PROBES)), c) for c in cells(config)]
    return pd.concat(frames, ignore_index=True)


def token_curves(config: Config, name: str, root: str | Path = ".") -> pd.DataFrame:
    """A token-metric curve file (``inter_token_cosine`` or ``layerwise_cosine``) for every cell."""
    frames = [_with_cell(_read_csv(Path(root) / c.fmt(TOKEN_METRICS) / f"{name}.csv"), c) for c in cells(config)]
    return pd.concat(frames, ignore_index=True)


def smoothness_stability(config: Config, root: str | Path = ".") -> pd.DataFrame:
    """Sm and St: one row per (cell, view)."""
    rows = []
    for c in cells(config):
        data = _read_json(Path(root) / c.fmt(TOKEN_METRICS) / "smoothness_stability.json")
        for view, values in data.items():
            if view == "provenance":
                continue
            rows.append({"model": c.model, "init": c.init, "task": c.task, "length": c.length, "view": view,
                         "Sm": values["Sm"], "St": values["St"]})
    return pd.DataFrame(rows)


def token_array(cell: Cell, name: str, root: str | Path = ".") -> np.ndarray:
    """A ``.npy`` array of one cell's token metrics, e.g. ``cka_hf`` or ``layerwise_cosine_residual``."""
    path = Path(root) / cell.fmt(TOKEN_METRICS) / f"{name}.npy"
    if not path.is_file():
        raise ReprflowError(f"{path}: metric file missing; rerun the metrics phase (snakemake all_metrics)")
    return np.load(path)


def provenance(config: Config, root: str | Path = ".") -> pd.DataFrame:
    """Where each cell's numbers come from: store, prompt hash, package version."""
    rows = []
    for c in cells(config):
        data = _read_json(Path(root) / c.fmt(PROBES).replace(".csv", ".json"))
        prov = data.get("provenance", {})
        rows.append({"model": c.model, "init": c.init, "task": c.task, "length": c.length, **prov})
    return pd.DataFrame(rows)
