"""The paper's Table 1 (mean over tasks) and Table 2 (per task) from the metric files.

Table 1 averages the paper's tasks (``config.tasks``) only; a custom task
(``config.custom_tasks``) has Table 2 rows, at its one length.

Columns (:data:`COLUMN_DEFINITIONS` says the same in words, for the report):
model, init, view, [task,] length, chance, last_acc, last_acc_std, peak_layer, peak_acc,
peak_acc_std, gap, Sm, St, Sm_rel, St_rel, n_seeds.

- ``last_acc``: probe accuracy at the last state of the view (mean over seeds).
- ``peak_layer`` / ``peak_acc``: the state index (within the view) with the highest mean accuracy.
- ``gap`` = peak_acc - last_acc (>= 0; exactly 0 when the peak is the last state).
- ``*_std``: population std (ddof = 0) over probe seeds of the accuracy at that state.
- ``chance`` = 1 / C, C the number of classes of the cell (Table 1: mean of 1/C over tasks).
- Table 1 first averages each seed's per-layer accuracy curve over tasks, then takes mean,
  peak and last, so its peak layer is the peak of the task-averaged curve; Sm and St are
  averaged over tasks. A cell lacking one of the paper's tasks has an empty Table 1 row (its
  Table 2 rows are kept): the mean is over every task or none.
- Accuracies are rounded to 12 decimals, so that a difference of equal accuracies is 0, not
  float noise like 5.55e-17.

Only inits of ``scope: all`` have rows (``scope: fig3`` inits have no probes). A length
beyond a model's context has a row with empty cells, as the paper's "-".
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from reprflow.atomic import atomic_write
from reprflow.config import Config
from reprflow.pipeline.results import probe_classes, probe_curves, smoothness_stability, table_inits

logger = logging.getLogger(__name__)

VALUE_COLUMNS = [
    "chance",
    "last_acc",
    "last_acc_std",
    "peak_layer",
    "peak_acc",
    "peak_acc_std",
    "gap",
    "Sm",
    "St",
    "Sm_rel",
    "St_rel",
    "n_seeds",
]
COLUMN_DEFINITIONS = {
    "model": "model name (config.models[].name)",
    "init": "weight initialisation (config.inits[].name); pretrained = the model's own weights: the hub "
    "checkpoint, or the workflow-trained model of a `train:` entry",
    "view": "layer view: hf = the L+1 hidden_states transformers returns (TBMs: embeddings, blocks 1..L-1, "
    "final norm; Mamba/Falcon-Mamba/Mamba2: blocks 1..L, final norm); residual = the L+1 pre-norm residual stream "
    "(embeddings, blocks)",
    "task": "kvpr (key-value retrieval), mdqa (multi-document QA) or a custom task (config.custom_tasks)",
    "length": "target prompt length n in tokens (a custom task: its length, the cap on its prompts)",
    "chance": "chance accuracy 1/C of the probe (C = number of classes; mean of 1/C over tasks in Table 1)",
    "last_acc": "validation accuracy of the linear probe on the view's last state (mean over seeds)",
    "last_acc_std": "std over probe seeds of last_acc",
    "peak_layer": "state index in the view (0 = embeddings; block 1 in the hf view of Mamba/Falcon-Mamba/Mamba2) where the "
    "mean accuracy peaks",
    "peak_acc": "validation accuracy at peak_layer (mean over seeds)",
    "peak_acc_std": "std over probe seeds of peak_acc",
    "gap": "peak_acc - last_acc: the paper's (down-arrow x), how much the last layer loses",
    "Sm": "smoothness, paper Eq. 3 (mean |second difference| over layers; lower = smoother; absolute units)",
    "St": "stability, paper Eq. 4 (mean std over layers; lower = more stable; absolute units)",
    "Sm_rel": "scale-free Sm: Sm / mean state RMS ||h||/sqrt(d) (comparable across families)",
    "St_rel": "scale-free St: St / mean state RMS",
    "n_seeds": "probe seeds averaged",
}
_NOISE_DECIMALS = 12


def _summarise(per_seed: pd.DataFrame) -> pd.Series:
    """Peak/last summary of one cell's per-seed curves (columns seed, state_index, acc)."""
    wide = per_seed.pivot(index="state_index", columns="seed", values="acc").sort_index()
    mean = wide.mean(axis=1).round(_NOISE_DECIMALS).to_numpy()
    std = wide.std(axis=1, ddof=0).round(_NOISE_DECIMALS).to_numpy()
    peak, last = int(np.argmax(mean)), len(mean) - 1
    return pd.Series(
        {
            "last_acc": mean[last],
            "last_acc_std": std[last],
            "peak_layer": int(wide.index[peak]),
            "peak_acc": mean[peak],
            "peak_acc_std": std[peak],
            "gap": 0.0 if peak == last else round(mean[peak] - mean[last], _NOISE_DECIMALS),
            "n_seeds": wide.shape[1],
        }
    )


def _every_paper_task(config: Config, frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The rows of ``frame`` for the paper's tasks, of the cells (``keys``) that have every one of
    them: a Table 1 value is the mean over all the paper's tasks, never over those that happened
    to run (a cell missing one task has an empty row, as one not run)."""
    frame = frame[frame["task"].isin(config.paper_tasks)]
    if frame.empty:
        return frame
    return frame[frame.groupby(keys)["task"].transform("nunique") == len(config.paper_tasks)]


def table_from_frames(
    config: Config, probes: pd.DataFrame, sm_st: pd.DataFrame, classes: pd.DataFrame, *, by_task: bool
) -> pd.DataFrame:
    """Table 1 (``by_task=False``) or Table 2 from the frames of :mod:`reprflow.pipeline.results`;
    every (model, table init, view, [task,] length) of the config gets a row, empty if not run."""
    keys = ["model", "init", "view"] + (["task"] if by_task else []) + ["length"]
    if not by_task:  # Table 1 is the paper's mean over its tasks: custom tasks have Table 2 rows only
        probes, sm_st, classes = (_every_paper_task(config, f, keys) for f in (probes, sm_st, classes))
    # mean over tasks per (cell, view, seed, layer) for Table 1; Table 2 keeps tasks apart
    per_seed = probes.groupby(keys + ["seed", "state_index"], as_index=False)["val_accuracy"].mean()
    per_seed = per_seed.rename(columns={"val_accuracy": "acc"})
    if per_seed.empty:
        summary = pd.DataFrame(
            columns=keys + ["last_acc", "last_acc_std", "peak_layer", "peak_acc", "peak_acc_std", "gap", "n_seeds"]
        )
    else:
        summary = per_seed.groupby(keys).apply(_summarise, include_groups=False).reset_index()
    scalars = sm_st.groupby(keys, as_index=False)[["Sm", "St", "Sm_rel", "St_rel"]].mean()
    chance = (
        classes.assign(chance=1.0 / classes["n_classes"].astype(float)).groupby(keys, as_index=False)["chance"].mean()
    )
    table = summary.merge(scalars, on=keys, how="outer").merge(chance, on=keys, how="left")

    # full grid in config order, so skipped (model, length) cells appear as empty rows
    grid = [
        {"model": m.name, "init": i, "view": v, **({"task": t} if by_task else {}), "length": n}
        for m in config.models
        for i in table_inits(config)
        for v in config.section("metrics")["views"]
        for t in (config.tasks if by_task else [None])
        for n in (config.task_lengths(t) if by_task else config.lengths)
        if t is None or config.runs_task(m.name, t)  # a custom task has rows for its models only
    ]
    table = pd.DataFrame(grid).merge(table, on=keys, how="left")
    for col in ("peak_layer", "n_seeds"):
        table[col] = table[col].astype("Int64")
    for col in VALUE_COLUMNS:
        if col not in ("peak_layer", "n_seeds"):
            table[col] = table[col].astype(float)
    return table[keys + VALUE_COLUMNS]


def build_tables(
    config: Config, root: str | Path = ".", *, missing_ok: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 1 (mean over tasks) and Table 2 (per task) as DataFrames."""
    probes = probe_curves(config, root, missing_ok=missing_ok)
    sm_st = smoothness_stability(config, root, missing_ok=missing_ok)
    classes = probe_classes(config, root, missing_ok=missing_ok)
    return (
        table_from_frames(config, probes, sm_st, classes, by_task=False),
        table_from_frames(config, probes, sm_st, classes, by_task=True),
    )


def write_tables(config: Config, table1_path: str | Path, table2_path: str | Path, *, root: str | Path = ".") -> None:
    """Write results/table1.csv and results/table2.csv (atomically; 6 significant digits)."""
    table1, table2 = build_tables(config, root)
    atomic_write(table1_path, lambda tmp: table1.to_csv(tmp, index=False, float_format="%.6g"))
    atomic_write(table2_path, lambda tmp: table2.to_csv(tmp, index=False, float_format="%.6g"))
    logger.info("wrote %s (%d rows) and %s (%d rows)", table1_path, len(table1), table2_path, len(table2))
