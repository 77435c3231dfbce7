"""Our Tables 1 and 2 against the numbers the paper prints, cell by cell (results/paper_comparison.csv).

A *cell* is one number of the paper's tables (reprflow/paper/tables.csv): (table, model, task,
length, quantity), quantity ``last_acc`` or ``gap`` (%, percentage points) or ``Sm`` / ``St``
(absolute, paper Eq. 3 and 4). Our value is the reproduced table's (results/table1.csv,
table2.csv; accuracies there are fractions, here times 100) at the same model, length and task
(Table 1: ``mean``), for the arm and view the paper measured:

- arm: an init of scheme ``pretrained`` (scope ``all``) of a config model whose ``hf_id`` is the
  paper's checkpoint and which the workflow neither builds (``tiny:``) nor trains (``train:``);
- view: ``hf``, what transformers' ``output_hidden_states`` returns (the paper probes the Hugging
  Face checkpoints; tables.py's ``view`` column). The ``residual`` view is not compared.

Status of a row (:data:`STATUSES`): ``agrees`` (``|ours - paper| <= tolerance``), ``disagrees``,
``not run`` (the paper's cell has no value of ours: its model, length or task is not configured,
or the cell was not run), ``not comparable`` (one row per other arm of our tables: a tiny or
trained model, a random init, your own model; it is not what the paper measured, so it neither
agrees nor disagrees). Tolerances: the config's ``paper_comparison:`` (schema defaults 5 points
for accuracy and gap, 10 % for Sm and St; docs/findings.md says why).

Verdict per table (:func:`verdicts`, the findings' words): ``supports`` (every compared cell
agrees), ``contradicts`` (none does), ``mixed``, ``not run`` (a paper checkpoint is configured
but no cell was compared), ``not comparable`` (no model of the config is a paper checkpoint).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from reprflow.atomic import atomic_write
from reprflow.config import PAPER_TASKS, Config
from reprflow.paper import ARXIV, paper_tables
from reprflow.pipeline.findings import VERDICTS as FINDING_VERDICTS
from reprflow.pipeline.findings import verdict_word
from reprflow.pipeline.results import init_scope, table_inits

logger = logging.getLogger(__name__)

VIEW = "hf"
QUANTITIES = {
    "last_acc": ("acc_abs", 100.0),
    "gap": ("gap_abs", 100.0),
    "Sm": ("sm_st_rel", 1.0),
    "St": ("sm_st_rel", 1.0),
}
"""quantity -> (tolerance key of ``config.paper_comparison``, factor from our table's unit to the paper's)."""
COLUMNS = [
    "table",
    "paper_model",
    "model",
    "init",
    "view",
    "task",
    "length",
    "quantity",
    "paper",
    "ours",
    "diff",
    "tolerance",
    "status",
    "note",
]
"""``paper``, ``ours``, ``diff`` (= ours - paper) and ``tolerance`` (absolute, in the quantity's
unit: points for accuracies, ``sm_st_rel * |paper|`` for Sm and St) in the paper's units."""
_DECIMALS = 9
STATUSES = ("agrees", "disagrees", "not run", "not comparable")
VERDICTS = (*FINDING_VERDICTS, "not comparable")


def paper_checkpoints(config: Config, paper: pd.DataFrame) -> dict[str, str]:
    """The paper's model name -> the config model that is its checkpoint: the same ``hf_id``,
    neither built (``tiny``) nor trained (``train``) by the workflow. Revisions are not compared
    (the paper pins none)."""
    by_id = dict(zip(paper["hf_id"], paper["model"]))
    found: dict[str, str] = {}
    for m in config.models:
        if m.tiny is None and m.train is None and m.hf_id in by_id:
            found.setdefault(by_id[m.hf_id], m.name)
    return found


def _pretrained_inits(config: Config) -> list[str]:
    return [i.name for i in config.inits if i.scheme == "pretrained" and init_scope(config, i.name) == "all"]


def _why_not_comparable(config: Config, model: str, init: str, paper_ids: set[str]) -> str:
    """Why the arm (``model``, ``init``) of our tables is not what the paper measured."""
    m, i = config.model(model), config.init(init)
    if m.tiny is not None:
        reasons = ["a tiny random model built by the workflow, not the paper's checkpoint"]
    elif m.train is not None:
        reasons = ["trained by this workflow (train:), not the paper's checkpoint"]
    elif m.hf_id not in paper_ids:
        reasons = [f"{m.hf_id} is not one of the paper's checkpoints"]
    else:
        reasons = []
    if i.scheme != "pretrained":
        reasons.append(
            f"init {init} is {i.scheme} (random weights): the paper's tables are of the pretrained checkpoints"
        )
    return "; ".join(reasons)


def _not_run(config: Config, row, model: str | None, init: str | None) -> str | None:
    """Why the paper's cell ``row`` has no value of ours before any table is read, or None."""
    if model is None:
        return f"{row.hf_id} is not a model of this config"
    if init is None:
        return "no init of scheme pretrained with scope all in config.inits"
    if VIEW not in config.section("metrics")["views"]:
        return f"view {VIEW} not in metrics.views"
    if row.length not in config.lengths:
        return f"length {row.length} not in config.lengths"
    if not config.model(model).fits(row.length):
        return f"beyond {model}'s context ({config.model(model).max_context})"
    if row.table == 1 and sorted(config.paper_tasks) != sorted(PAPER_TASKS):
        return f"Table 1 is the mean over kvpr and mdqa; config.tasks is {config.paper_tasks}"
    if row.table == 2 and row.task not in config.paper_tasks:
        return f"task {row.task} not in config.tasks"
    return None


def compare(
    config: Config, table1: pd.DataFrame, table2: pd.DataFrame, paper: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Every number of the paper's tables against ours, then one ``not comparable`` row per other
    arm of our tables. ``table1`` / ``table2``: results/table1.csv and table2.csv as read (columns
    of :mod:`reprflow.pipeline.tables`); ``paper``: :func:`reprflow.paper.paper_tables` by default.
    Returns :data:`COLUMNS`; 4 rows per paper row and arm (216 for one arm per paper model)."""
    paper = paper_tables() if paper is None else paper
    tol = config.section("paper_comparison")
    checkpoints = paper_checkpoints(config, paper)
    inits = _pretrained_inits(config)
    ours = {1: table1, 2: table2}
    rows = []
    for p in paper.itertuples(index=False):
        model = checkpoints.get(p.model)
        for init in inits if model and inits else [None]:
            note = _not_run(config, p, model, init)
            value = pd.Series(dtype=float)
            if note is None:
                t = ours[p.table]
                sel = (t["model"] == model) & (t["init"] == init) & (t["view"] == VIEW) & (t["length"] == p.length)
                if p.table == 2:
                    sel &= t["task"] == p.task
                value = t.loc[sel].iloc[0] if sel.sum() == 1 else value
            for quantity, (key, factor) in QUANTITIES.items():
                theirs = float(getattr(p, quantity))
                mine = round(float(value.get(quantity, np.nan)) * factor, _DECIMALS)
                allowed = tol[key] * abs(theirs) if key == "sm_st_rel" else tol[key]
                if note is None and np.isnan(mine):
                    why = f"no value in results/table{p.table}.csv (cell not run)"
                else:
                    why = note
                diff = round(mine - theirs, _DECIMALS)  # no float noise such as 7.1e-15
                status = "not run" if why else "agrees" if abs(diff) <= allowed + 1e-9 else "disagrees"
                rows.append(
                    {
                        "table": p.table,
                        "paper_model": p.model,
                        "model": model or "",
                        "init": init or "",
                        "view": VIEW,
                        "task": p.task,
                        "length": p.length,
                        "quantity": quantity,
                        "paper": theirs,
                        "ours": mine,
                        "diff": diff,
                        "tolerance": allowed,
                        "status": status,
                        "note": why or "",
                    }
                )
    compared = {(m, i) for m in checkpoints.values() for i in inits}
    paper_ids = set(paper["hf_id"])
    for m in config.models:
        for init in table_inits(config):
            if (m.name, init) not in compared:
                note = _why_not_comparable(config, m.name, init, paper_ids)
                rows.append({"model": m.name, "init": init, "status": "not comparable", "note": note})
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["table"] = frame["table"].astype("Int64")
    frame["length"] = frame["length"].astype("Int64")
    return frame.fillna({c: "" for c in ("paper_model", "view", "task", "quantity")})


def verdicts(frame: pd.DataFrame) -> pd.DataFrame:
    """One verdict per table (:data:`VERDICTS`): columns table, verdict, agree, compared, not_run."""
    any_arm = bool((frame["table"].notna() & frame["model"].ne("")).any())  # a paper checkpoint is configured
    rows = []
    for table in (1, 2):
        sub = frame[frame["table"] == table]
        agree = int((sub["status"] == "agrees").sum())
        compared = int(sub["status"].isin(("agrees", "disagrees")).sum())
        verdict = verdict_word(agree, compared) if compared or any_arm else "not comparable"
        rows.append(
            {
                "table": table,
                "verdict": verdict,
                "agree": agree,
                "compared": compared,
                "not_run": int((sub["status"] == "not run").sum()),
            }
        )
    return pd.DataFrame(rows)


def _tolerance_text(config: Config) -> str:
    t = config.section("paper_comparison")
    return f"accuracy within {t['acc_abs']:g} points, gap within {t['gap_abs']:g} points, Sm and St within {t['sm_st_rel']:.0%}"


def summary(frame: pd.DataFrame, config: Config) -> list[str]:
    """Markdown lines: the verdict of each table, the overall count, what was compared (arms,
    view, tolerances), each disagreeing cell with its numbers, and what is not comparable."""
    v = verdicts(frame)
    agree, compared, not_run = (int(v[c].sum()) for c in ("agree", "compared", "not_run"))
    arms = frame[frame["status"].isin(("agrees", "disagrees", "not run")) & frame["model"].ne("")]
    arms = arms[["paper_model", "model", "init"]].drop_duplicates()
    lines = [
        f"- **Table {r.table}: {r.verdict}** ({r.agree} of {r.compared} compared cells agree; {r.not_run} paper cells not run)."
        for r in v.itertuples(index=False)
    ]
    if compared:
        lines.append(
            f"- Overall: **{agree} of {compared} cells agree** ({_tolerance_text(config)}); {not_run} of the paper's "
            f"{int(frame['table'].notna().sum())} cells not run."
        )
        lines.append(
            "- Compared: "
            + ", ".join(f"{r.model}/{r.init} (the paper's {r.paper_model})" for r in arms.itertuples(index=False))
            + f", in the `{VIEW}` view (what transformers' `output_hidden_states` returns, as the paper's Hugging Face "
            "checkpoints give); the `residual` view is not compared."
        )
    else:
        lines.append(
            f"- **Not comparable**: no cell compared. The paper's tables are of its pretrained checkpoints "
            f"(arXiv {ARXIV}, by hf_id in reprflow/paper/tables.csv)"
            + (
                "; none of this config's models is one of them, so nothing here agrees or disagrees with the paper."
                if arms.empty
                else f"; configured: {', '.join(arms['model'])}, but none of their cells has a value yet."
            )
        )
    for r in frame[frame["status"] == "disagrees"].itertuples(index=False):
        lines.append(
            f"  - disagrees: Table {r.table} {r.model} {r.task} n={r.length} {r.quantity}: ours {r.ours:.3g} vs paper "
            f"{r.paper:g} (diff {r.diff:+.3g}, tolerance {r.tolerance:.3g})"
        )
    other = frame[frame["status"] == "not comparable"]
    if len(other):
        lines.append(
            "- Not comparable (not what the paper measured; no verdict): "
            + "; ".join(f"{r.model}/{r.init}: {r.note}" for r in other.itertuples(index=False))
            + "."
        )
    return lines


def write_paper_comparison(
    config: Config, table1_path: str | Path, table2_path: str | Path, out_path: str | Path
) -> pd.DataFrame:
    """Write results/paper_comparison.csv (atomically; 6 significant digits) and return it."""
    frame = compare(config, pd.read_csv(table1_path), pd.read_csv(table2_path))
    atomic_write(out_path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))
    for line in summary(frame, config):
        logger.info("%s", line.strip().removeprefix("- ").replace("**", ""))
    logger.info("wrote %s (%d rows)", out_path, len(frame))
    return frame
