"""Read the per-cell metric files (results/metrics/**) back into tidy tables.

Tables, figures, verdicts and the report read only these files, never a model or an
activation store. Every reader returns a pandas DataFrame with the cell keys
(model, init, task, length) in front.

Which cells exist depends on each init's ``scope`` (``all``, the default, or ``fig3``):

- :func:`token_cells`: cells with token metrics (Fig. 1-4, Sm/St): every cell of a
  ``scope: all`` init; for a ``scope: fig3`` init only the cells at the model's figure
  length (``figures.length``, or the longest fitting length below it; a custom task's own length).
- :func:`probe_cells`: cells with probes and table rows: ``scope: all`` inits only.

Readers take ``missing_ok``: False (the default) raises on the first missing file; True
skips it, so the verdicts can say which cells were not run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from reprflow.config import Config, ModelSpec
from reprflow.errors import ReprflowError
from reprflow.workflow.targets import PROBES, TOKEN_METRICS, Cell

SCALAR_KEYS = ("Sm", "St", "Sm_std", "St_std", "Sm_rel", "St_rel")
"""Keys of smoothness_stability.json read into :func:`smoothness_stability` (absent -> NaN)."""


def init_scope(config: Config, init: str) -> str:
    """The ``scope`` of an init entry (``all`` when the key is absent)."""
    entry = next(i for i in config.raw["inits"] if i["name"] == init)
    return entry.get("scope") or "all"


def figure_length(config: Config, model: ModelSpec, task: str | None = None) -> int | None:
    """``figures.length``, or the longest configured length the model fits below it
    (the shortest fitting one if none is below; None if the model fits no length).
    A custom ``task``: its own length, or None if the model does not fit it or does not run it."""
    if task is not None and task in config.custom_tasks:
        (length,) = config.task_lengths(task)
        return length if model.fits(length) and config.runs_task(model.name, task) else None
    wanted = config.section("figures")["length"]
    fitting = [n for n in config.lengths if model.fits(n)]
    if not fitting:
        return None
    if wanted in fitting:
        return wanted
    below = [n for n in fitting if n <= wanted]
    return max(below) if below else min(fitting)


def _all_cells(config: Config) -> list[Cell]:
    """Every (model, init, task, length) whose length fits the model, in config order: per model
    the paper tasks at each of ``lengths``, then each custom task it runs at its own length."""
    return [
        Cell(m.name, i.name, t, n)
        for m in config.models
        for n, tasks in [
            *((n, config.paper_tasks) for n in config.lengths),
            *((config.task_lengths(t)[0], [t]) for t in config.custom_tasks),
        ]
        if m.fits(n)
        for i in config.inits
        for t in tasks
        if config.runs_task(m.name, t)
    ]


def token_cells(config: Config) -> list[Cell]:
    """Cells whose token metrics exist when the workflow ran (see the module docstring)."""
    return [
        c
        for c in _all_cells(config)
        if init_scope(config, c.init) == "all" or c.length == figure_length(config, config.model(c.model), c.task)
    ]


def probe_cells(config: Config) -> list[Cell]:
    """Cells with probes (and Table 1/2 rows): those of ``scope: all`` inits."""
    return [c for c in _all_cells(config) if init_scope(config, c.init) == "all"]


def table_inits(config: Config) -> list[str]:
    """Inits with table rows (``scope: all``), in config order."""
    return [i.name for i in config.inits if init_scope(config, i.name) == "all"]


def _missing(path: Path) -> ReprflowError:
    return ReprflowError(f"{path}: metric file missing; rerun the metrics phase (snakemake all_metrics)")


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise _missing(path)
    with open(path) as fh:
        return json.load(fh)


def _with_cell(frame: pd.DataFrame, cell: Cell) -> pd.DataFrame:
    keys = {"model": cell.model, "init": cell.init, "task": cell.task, "length": cell.length}
    return frame.assign(**keys)[[*keys, *frame.columns]]


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    keys = ["model", "init", "task", "length"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=keys + columns)


def _cell_files(cell_list: list[Cell], pattern: str, missing_ok: bool) -> list[tuple[Cell, Path]]:
    out = []
    for c in cell_list:
        path = Path(c.fmt(pattern))
        if not path.exists():
            if missing_ok:
                continue
            raise _missing(path)
        out.append((c, path))
    return out


def probe_curves(config: Config, root: str | Path = ".", *, missing_ok: bool = False) -> pd.DataFrame:
    """Per-layer probe accuracy: one row per (cell, view, state_index, seed)."""
    root = Path(root)
    frames = [
        _with_cell(pd.read_csv(path), c) for c, path in _cell_files(probe_cells(config), str(root / PROBES), missing_ok)
    ]
    return _concat(frames, ["view", "state_index", "state_name", "seed", "val_accuracy", "train_accuracy"])


def probe_classes(config: Config, root: str | Path = ".", *, missing_ok: bool = False) -> pd.DataFrame:
    """Number of classes C of each probe cell and view: columns cell keys, view, n_classes,
    n_train, n_val (chance level = 1 / n_classes)."""
    rows = []
    for c, path in _cell_files(probe_cells(config), str(Path(root) / PROBES), missing_ok):
        data = _read_json(path.with_suffix(".json"))
        for view, values in data.items():
            if isinstance(values, dict) and "n_classes" in values:
                rows.append(
                    {
                        "model": c.model,
                        "init": c.init,
                        "task": c.task,
                        "length": c.length,
                        "view": view,
                        "n_classes": int(values["n_classes"]),
                        "n_train": values.get("n_train"),
                        "n_val": values.get("n_val"),
                    }
                )
    return pd.DataFrame(rows, columns=["model", "init", "task", "length", "view", "n_classes", "n_train", "n_val"])


def token_curves(config: Config, name: str, root: str | Path = ".", *, missing_ok: bool = False) -> pd.DataFrame:
    """A token-metric curve file (``inter_token_cosine`` or ``layerwise_cosine``) for every cell."""
    pattern = str(Path(root) / TOKEN_METRICS / f"{name}.csv")
    frames = [_with_cell(pd.read_csv(path), c) for c, path in _cell_files(token_cells(config), pattern, missing_ok)]
    return _concat(frames, ["view", "mean", "std"])


def first_state_names(sel: pd.DataFrame) -> set[str]:
    """``state_name`` of state 0 in rows of a per-state frame (column ``state_index``: the curves of
    token_curves, probe_curves), e.g. {"embed"} or {"block_1"} (the hf view of the Mamba
    families); empty where the rows name no states."""
    if "state_name" not in sel or "state_index" not in sel:
        return set()
    return set(sel.loc[sel["state_index"] == sel["state_index"].min(), "state_name"].dropna().astype(str))


def smoothness_stability(config: Config, root: str | Path = ".", *, missing_ok: bool = False) -> pd.DataFrame:
    """Sm and St (absolute, paper Eq. 3/4) and their scale-free variants: one row per (cell, view).

    Only probe cells (``scope: all`` inits) have table rows, so only those are read."""
    rows = []
    pattern = str(Path(root) / TOKEN_METRICS / "smoothness_stability.json")
    for c, path in _cell_files(probe_cells(config), pattern, missing_ok):
        for view, values in _read_json(path).items():
            if view == "provenance":
                continue
            rows.append(
                {
                    "model": c.model,
                    "init": c.init,
                    "task": c.task,
                    "length": c.length,
                    "view": view,
                    **{k: float(values.get(k, np.nan)) for k in SCALAR_KEYS},
                }
            )
    return pd.DataFrame(rows, columns=["model", "init", "task", "length", "view", *SCALAR_KEYS])


def token_array(cell: Cell, name: str, root: str | Path = ".") -> np.ndarray:
    """A ``.npy`` array of one cell's token metrics, e.g. ``cka_hf`` or ``layerwise_cosine_residual``."""
    path = Path(root) / cell.fmt(TOKEN_METRICS) / f"{name}.npy"
    if not path.is_file():
        raise _missing(path)
    return np.load(path)


def provenance(config: Config, root: str | Path = ".") -> pd.DataFrame:
    """Where each cell's numbers come from: store, its content hash, prompt hash, package version.

    Probe cells read the probe summary's provenance, token-only cells (``scope: fig3``) that of
    their token metrics."""
    rows = []
    probe_set = set(probe_cells(config))
    for c in token_cells(config) + [c for c in probe_cells(config) if c not in set(token_cells(config))]:
        path = Path(root) / (
            c.fmt(PROBES).replace(".csv", ".json")
            if c in probe_set
            else c.fmt(TOKEN_METRICS) + "/smoothness_stability.json"
        )
        prov = _read_json(path).get("provenance", {})
        prov = {k: v for k, v in prov.items() if not isinstance(v, (dict, list))}
        rows.append({"model": c.model, "init": c.init, "task": c.task, "length": c.length, **prov})
    return pd.DataFrame(rows)
