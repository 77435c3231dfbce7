"""The paper's Table 1 (mean over tasks) and Table 2 (per task) from the metric files.

Columns: model, init, view, [task,] length, last_acc, peak_layer, peak_acc, gap, Sm, St.

- ``last_acc``: probe accuracy at the last state of the view (mean over seeds).
- ``peak_layer`` / ``peak_acc``: the state index (within the view) with the highest mean accuracy.
- ``gap`` = peak_acc - last_acc (>= 0).
- Table 1 first averages the per-layer accuracy curves over tasks, then takes peak and last, so
  its peak layer is the peak of the task-averaged curve; Sm and St are averaged over tasks.

A length beyond a model's context has a row with empty cells, as the paper's "-".
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from reprflow.atomic import atomic_write
from reprflow.config import Config
from reprflow.pipeline.results import probe_curves, smoothness_stability

logger = logging.getLogger(__name__)

VALUE_COLUMNS = ["last_acc", "peak_layer", "peak_acc", "gap", "Sm", "St"]


def _summarise_curve(curve: pd.DataFrame) -> pd.Series:
    """Peak/last summary of one mean-accuracy curve (rows: state_index, column: acc)."""
    curve = curve.sort_values("state_index")
    acc = curve["acc"].to_numpy()
    peak = int(np.argmax(acc))
    return pd.Series({"last_acc": acc[-1], "peak_layer": int(curve["state_index"].iloc[peak]),
                      "peak_acc": acc[peak], "gap": acc[peak] - acc[-1]})


def _table(config: Config, by_task: bool, root: str | Path) -> pd.DataFrame:
    probes = probe_curves(config, root)
    sm_st = smoothness_stability(config, root)
    keys = ["model", "init", "view"] + (["task"] if by_task else []) + ["length"]
    # mean over seeds per (cell, view, layer), then (Table 1) mean over tasks per layer
    curves = probes.groupby(keys + ["state_index"], as_index=False)["val_accuracy"].mean()
    curves = curves.rename(columns={"val_accuracy": "acc"})
    summary = curves.groupby(keys).apply(_summarise_curve, include_groups=False).reset_index()
    scalars = sm_st.groupby(keys, as_index=False)[["Sm", "St"]].mean()
    table = summary.merge(scalars, on=keys, how="outer")

    # full grid in config order, so skipped (model, length) cells appear as empty rows
    grid = [
        {"model": m.name, "init": i.name, "view": v, **({"task": t} if by_task else {}), "length": n}
        for m in config.models
        for i in config.inits
        for v in config.section("metrics")["views"]
        for t in (config.tasks if by_task else [None])
        for n in config.lengths
    ]
    table = pd.DataFrame(grid).merge(table, on=keys, how="left")
    table["peak_layer"] = table["peak_layer"].astype("Int64")
    return table[keys + VALUE_COLUMNS]


def build_tables(config: Config, root: str | Path = ".") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 1 (mean over tasks) and Table 2 (per task) as DataFrames."""
    return _table(config, by_task=False, root=root), _table(config, by_task=True, root=root)


def write_tables(config: Config, table1_path: str | Path, table2_path: str | Path, *, root: str | Path = ".") -> None:
    """Write results/table1.csv and results/table2.csv (atomically)."""
    table1, table2 = build_tables(config, root)
    atomic_write(table1_path, lambda tmp: table1.to_csv(tmp, index=False, float_format="%.6g"))
    atomic_write(table2_path, lambda tmp: table2.to_csv(tmp, index=False, float_format="%.6g"))
    logger.info("wrote %s (%d rows) and %s (%d rows)", table1_path, len(table1), table2_path, len(table2))
