"""results/report.md: the verdicts, the tables, the figures, and where every number comes from.

The text twin of Snakemake's HTML report (``snakemake --report results/report.html``, whose
captions live in report/*.rst). Built from the metric files alone. Sections:

1. what the models are (tiny or untrained models are named as such);
2. verdicts on the paper's findings (results/findings.csv), then the comparison of Tables 1-2
   with the paper's printed numbers, cell by cell (results/paper_comparison.csv);
3. Table 1 and Table 2 with their column definitions, values at 3 significant figures;
4. the figures; 5. the theory check (if run); 6. for models the workflow trained itself
   (``train:`` entries, docs/training.md), the training summary and the controlled answer to
   F3.2.3, F3.2.1 and F3.4.1, trained against each random init per family, and whether it agrees
   with the paper's checkpoints (:func:`paper_agreement`); 7. provenance: config sha256, package versions,
   and per cell the activation store, every hash the metric files record for it (prompt file
   sha256, and store hashes where the store records one).
"""

from __future__ import annotations

import json
import logging
import os
import re
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from reprflow import __version__
from reprflow.atomic import atomic_write_bytes
from reprflow.config import Config
from reprflow.pipeline.findings import ARCHITECTURE, Verdict, evaluate
from reprflow.pipeline.findings import _first_layer as first_layer
from reprflow.pipeline.findings import FINDINGS as FINDINGS_TEXT
from reprflow.pipeline.paper_comparison import VIEW, summary
from reprflow.pipeline.results import provenance, token_curves
from reprflow.pipeline.tables import COLUMN_DEFINITIONS, build_tables
from reprflow.workflow.targets import FINDINGS, FIGURE_NAMES, PAPER_COMPARISON, THEORY, figure_files

logger = logging.getLogger(__name__)

PACKAGES = ("torch", "transformers", "zarr", "numpy", "pandas", "scikit-learn", "matplotlib", "snakemake")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def format_value(value) -> str:
    """A table cell: 3 significant figures for floats (so Sm ~ 3e-05 stays readable), ints as ints,
    empty for missing values."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, (float, np.floating)):
        return "0" if value == 0 else f"{value:.3g}"
    return str(value)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table with :func:`format_value` cells."""
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = [
        "| " + " | ".join(format_value(v).replace("|", "/") for v in row) + " |"
        for row in frame.astype(object).itertuples(index=False)
    ]
    return "\n".join([header, rule, *body])


def model_notes(config: Config) -> list[str]:
    """One line per model saying what it is; tiny, workflow-trained and untrained models are named as such."""
    lines = []
    untrained = [i.name for i in config.inits if i.scheme != "pretrained"]
    for m in config.models:
        if m.tiny is not None:
            lines.append(
                f"- **{m.name}** ({m.family}): a TINY RANDOM model built by the workflow "
                f"(`{m.hf_id}`); even its `pretrained` arm is untrained. Its numbers test the pipeline, "
                "not the paper."
            )
        elif m.train is not None:
            t = m.train
            lines.append(
                f"- **{m.name}** ({m.family}): TRAINED BY THIS WORKFLOW from scratch (`{m.hf_id}`; width "
                f"{t['width']}, {t['tokens']} tokens of `{t['corpus']}`, context {t['context']}, seed "
                f"{t['seed']}); its `pretrained` arm is that model. See the controlled-comparison section."
            )
        else:
            lines.append(
                f"- **{m.name}** ({m.family}): `{m.hf_id}`"
                + (f"@{m.revision}" if m.revision else "")
                + (f", context {m.max_context} tokens" if m.max_context else "")
            )
    if untrained:
        lines.append(f"- Untrained arms (random initialisation, no training): {', '.join(untrained)}.")
    return lines


def provenance_table(config: Config, root: str | Path = ".") -> tuple[pd.DataFrame, list[str]]:
    """Per cell: store, every hash its metric files record, versions; plus the hash column names."""
    prov = provenance(config, root)
    hash_cols = [c for c in prov.columns if any(k in c for k in ("sha", "hash", "md5", "digest"))]
    keep = [
        "model",
        "init",
        "task",
        "length",
        "store",
        *hash_cols,
        *[c for c in ("reprflow_version", "store_reprflow_version") if c in prov.columns],
    ]
    return prov[[c for c in keep if c in prov.columns]], hash_cols


def write_provenance(config: Config, out_path: str | Path, *, root: str | Path = ".") -> None:
    """results/provenance.csv: one row per cell (store, hashes, versions), with the config sha256
    and the package versions as constant columns; read by the HTML report."""
    table, _ = provenance_table(config, root)
    table = table.assign(
        config_sha256=config.digest(),
        packages=f"reprflow {__version__}; " + ", ".join(f"{p} {_version(p)}" for p in PACKAGES),
    )
    atomic_write_bytes(table.to_csv(index=False).encode(), Path(out_path))


def _provenance_section(config: Config, root: Path) -> list[str]:
    prov, hash_cols = provenance_table(config, root)
    return [
        "## Where each number comes from",
        "",
        f"- config sha256: `{config.digest()}`",
        f"- reprflow {__version__}; " + ", ".join(f"{p} {_version(p)}" for p in PACKAGES),
        f"- Python {platform.python_version()} on {platform.system()} {platform.machine()}",
        "- inits: " + ", ".join(f"{i.name} = {i.scheme}{i.params or ''}" for i in config.inits),
        f"- hash columns below are those the metric files record per cell ({', '.join(hash_cols) or 'none'}).",
        "",
        markdown_table(prov),
        "",
    ]


def _findings_section(root: Path) -> list[str]:
    path = root / FINDINGS
    if not path.is_file():
        return ["## Verdicts on the paper's findings", "", "Not computed (results/findings.csv missing).", ""]
    table = pd.read_csv(path, keep_default_na=False)
    counts = table["verdict"].value_counts()
    lines = [
        "## Verdicts on the paper's findings",
        "",
        "One row per finding, arm (init) and view: *supports* = every check passes, *contradicts* = every "
        "check fails, *mixed* = some pass, *not run* = the cells it needs were not run. Criteria and "
        "thresholds: docs/findings.md and the config's `findings:`.",
        "",
        "Counts: " + ", ".join(f"{k} {int(counts.get(k, 0))}" for k in ("supports", "contradicts", "mixed", "not run")),
        "",
        markdown_table(table[["finding", "arm", "view", "verdict", "passed", "total"]]),
        "",
        "### Evidence",
        "",
    ]
    for row in table.itertuples(index=False):
        lines.append(f"- **{row.finding} / {row.arm} / {row.view}: {row.verdict}**")
        for item in filter(None, str(row.evidence).split("; ")):
            lines.append(f"  - {item}")
        if row.not_run:
            lines.append(f"  - not run: {row.not_run}")
    return lines + [""]


PAPER_COMPARISON_TITLE = "## Tables 1 and 2 against the paper's printed numbers"
_CELL_COLUMNS = ["table", "model", "init", "task", "length", "quantity", "paper", "ours", "diff", "tolerance", "status"]


def read_paper_comparison(root: str | Path) -> pd.DataFrame | None:
    """results/paper_comparison.csv under ``root`` (empty strings for empty text cells), or None."""
    path = Path(root) / PAPER_COMPARISON
    if not path.is_file():
        return None
    frame = pd.read_csv(
        path, keep_default_na=False, na_values={c: [""] for c in ("paper", "ours", "diff", "tolerance")}
    )
    for col in ("table", "length"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("Int64")
    return frame


def _paper_comparison_section(config: Config, root: Path) -> list[str]:
    """The verdict per table, the overall count and every paper cell that has a model of ours
    (compared or not run, with why); arms that are not comparable are named in the summary."""
    frame = read_paper_comparison(root)
    if frame is None:
        return [PAPER_COMPARISON_TITLE, "", "Not computed (results/paper_comparison.csv missing).", ""]
    cells = frame[frame["table"].notna() & frame["model"].ne("")]
    lines = [
        PAPER_COMPARISON_TITLE,
        "",
        "Each number of the paper's Table 1 (`task` mean) and Table 2 against ours: last-layer probe accuracy "
        "and the gap to the peak layer in % (`last_acc`, `gap`), Sm and St in absolute units; `diff` = ours - "
        f"paper. Only the pretrained arm of the paper's checkpoints in the `{VIEW}` view is comparable; a cell "
        "agrees when |diff| <= `tolerance` (config `paper_comparison:`; docs/findings.md). Verdicts: *supports* = "
        "every compared cell agrees, *contradicts* = none does, *mixed* = some do.",
        "",
        *summary(frame, config),
        "",
    ]
    if len(cells):
        shown = cells[_CELL_COLUMNS].astype(object)
        for col, fmt in (("paper", "{:g}"), ("ours", "{:.4g}"), ("diff", "{:+.3g}"), ("tolerance", "{:.3g}")):
            shown[col] = [fmt.format(v) if pd.notna(v) else "" for v in cells[col]]  # the paper's digits as printed
        lines += [markdown_table(shown), ""]
        not_run = cells[cells["status"] == "not run"]["note"].value_counts()
        lines += [f"- not run ({n} cells): {note}" for note, n in not_run.items()] + ([""] if len(not_run) else [])
    return lines


TRAIN_SUMMARY = "results/training/{model}/summary.json"
#: full-size random-init models measured by this project, NOT the paper: inter-token cosine, mean
#: over the states after the embeddings (the findings' definition), T = 2048, KVPR and MDQA.
#: gpt_neo (GPT-Neo-2.7B) and mamba2 (Mamba2-2.7B, hf view: no embedding state) are recomputed from
#: benchmarks/results/paper_check_curves.csv (benchmarks/paper_check_random_init.py, H100,
#: 2026-11-22; BENCHMARKS.md, "Extraction (issue 3)", quotes 0.34 and 0.086 with GPT-Neo's
#: embeddings included). gpt_neox and mamba (0.57, 0.004) entered this file on 2026-12-03 (commit
#: fca85ee, "measured earlier, issue 13") with no measurement recorded in BENCHMARKS.md or
#: benchmarks/results: :data:`PROJECT_RANDOM_UNRECORDED`.
PROJECT_RANDOM_INTER_TOKEN = {"gpt_neo": 0.35, "gpt_neox": 0.57, "mamba": 0.004, "mamba2": 0.086}
PROJECT_RANDOM_UNRECORDED = frozenset({"gpt_neox", "mamba"})
PROJECT_RANDOM_SOURCE = (
    "GPT-Neo-2.7B and Mamba2-2.7B with random weights, measured by this project at T = 2048 "
    '(benchmarks/results/paper_check_curves.csv, 2026-11-22; BENCHMARKS.md "Extraction (issue 3)" quotes '
    "0.34 for GPT-Neo with its embedding state included); values marked * (Pythia-2.8B, Mamba-2.8B) have "
    "no measurement recorded in BENCHMARKS.md or benchmarks/results"
)
#: the paper's own Fig. 3 reading of its random-init arm (docs/findings.md, F3.2.3): only GPT-Neo
#: and Mamba2 are shown there.
PAPER_FIG3_RANDOM = {"gpt_neo": "0.75-1 (75-100 %)", "mamba2": "0-0.25 (0-25 %)"}
_TRAIN_COLUMNS = (
    "n_params",
    "n_non_embedding",
    "tokens",
    "initial_val_loss",
    "final_val_loss",
    "unigram_val_loss",
    "train_seconds",
    "tokens_per_s",
    "device",
)


def training_table(config: Config, root: str | Path = ".") -> pd.DataFrame:
    """One row per trained model (``train:`` entries): its summary.json, or empty cells if missing."""
    rows = []
    for m in config.models:
        if m.train is None:
            continue
        path = Path(root) / TRAIN_SUMMARY.format(model=m.name)
        summary = json.loads(path.read_text()) if path.is_file() else {}
        row = {"model": m.name, "family": m.family, **{k: summary.get(k, np.nan) for k in _TRAIN_COLUMNS}}
        row["unigram_minus_val"] = row["unigram_val_loss"] - row["final_val_loss"] if summary else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _curve_summary(
    curves: pd.DataFrame, model: str, init: str, length: int, view: str, n_prompts: int = 1
) -> tuple[float, float, float, float]:
    """(mean over depth, last state, standard error of the last state over prompts, standard error
    of the mean over depth) of a curve averaged over tasks; NaN when the cell was not run.
    ``n_prompts`` per task counts when the curve file does not record it.

    For per-state curves (``state_index``: inter-token cosine) the depth is every state after the
    embeddings, as in the findings (F3.2.3, :func:`reprflow.pipeline.findings._first_layer`: state 0
    is left out where it is ``embed``; the hf view of Mamba and Mamba2 starts at ``block_1`` and
    keeps it). The standard error of the depth mean is the mean of the per-state standard errors:
    an upper bound on it, since the states of one prompt are not independent. Per-pair curves
    (``pair_index``: layerwise cosine) keep every pair."""
    sel = curves[(curves.model == model) & (curves.init == init) & (curves.length == length) & (curves.view == view)]
    if sel.empty:
        return (np.nan, np.nan, np.nan, np.nan)
    sel = sel.assign(n_prompts=sel["n_prompts"] if "n_prompts" in sel else n_prompts)
    index = "state_index" if "state_index" in sel else "pair_index"  # layerwise cosine: consecutive pairs
    by_state = sel.groupby(index).agg(mean=("mean", "mean"), std=("std", "mean"), n=("n_prompts", "sum"))
    se = by_state["std"] / np.sqrt(by_state["n"].clip(lower=1))
    last = by_state.iloc[-1]
    start = first_layer(sel) if index == "state_index" and len(by_state) > 1 else 0
    depth = by_state.iloc[start:]
    return (
        float(depth["mean"].mean()),
        float(last["mean"]),
        float(se.iloc[-1]),
        float(se.iloc[start:].mean()),
    )


def noise_band(spread_a: float, spread_b: float) -> float:
    """Three combined spreads, ``3 * hypot(a, b)``: the band a difference of two means (standard
    errors) or of two probe peaks (seed standard deviations) must exceed to count as real."""
    return 3 * np.hypot(spread_a, spread_b)


def beyond_noise(delta: float, spread_a: float, spread_b: float) -> str:
    """``yes`` if ``|delta|`` exceeds :func:`noise_band`, else ``no``; ``n/a`` when the band is
    zero (one prompt or one probe seed: no noise estimate), ``""`` when ``delta`` is missing."""
    noise = noise_band(spread_a, spread_b)
    if np.isnan(delta):
        return ""
    if not noise > 0:
        return "n/a"
    return "yes" if abs(delta) > noise else "no"


def _trained_arm(frame: pd.DataFrame, model: str):
    """The ``pretrained`` (trained) row of ``model`` in a :func:`controlled_table` frame, or None."""
    ref = frame[(frame.model == model) & (frame.arm == "pretrained")]
    return None if ref.empty else next(ref.itertuples(index=False))


def controlled_table(config: Config, root: str | Path = ".") -> pd.DataFrame:
    """Trained (``pretrained`` arm) against each other ``scope: all`` init, per trained model, at
    ``figures.length`` and ``figures.view``: inter-token cosine (F3.2.3; last state and mean over
    depth, the depth being every state after the embeddings as in the findings, with the mean's
    standard error ``inter_token_mean_se``: :func:`_curve_summary`), layerwise cosine (F3.2.1;
    mean over depth) and the probe peak (F3.4.1; relative peak depth and gap, Table 1). ``differs`` = the last-state inter-token cosines differ by more than 3
    combined standard errors over prompts (prompt noise); ``probe_differs`` = the peak probe
    accuracies differ by more than 3 combined standard deviations over probe seeds (seed noise;
    ``peak_acc_std``, population std over ``probes.seeds``); ``n/a`` where that noise is zero
    (a single prompt or probe seed: nothing to compare the difference with)."""
    trained = [m for m in config.models if m.train is not None]
    if not trained:
        return pd.DataFrame()
    config = config.paper_only()  # the paper's tasks, as the findings
    fig = config.section("figures")
    length, view = fig["length"], fig["view"]
    inter = token_curves(config, "inter_token_cosine", root, missing_ok=True)
    layer = token_curves(config, "layerwise_cosine", root, missing_ok=True)
    table1, _ = build_tables(config, root, missing_ok=True)
    arms = [i.name for i in config.inits if i.scope == "all"]
    rows = []
    for m in trained:
        for arm in arms:
            n = int(config.section("extraction").get("n_token_prompts", 1))
            mean_d, last, se, mean_se = (
                _curve_summary(inter, m.name, arm, length, view, n) if not inter.empty else (np.nan,) * 4
            )
            lw = _curve_summary(layer, m.name, arm, length, view)[0] if not layer.empty else np.nan
            probe = (
                table1[
                    (table1.model == m.name) & (table1.init == arm) & (table1.length == length) & (table1.view == view)
                ]
                if not table1.empty
                else table1
            )
            peak = float(probe["peak_layer"].iloc[0]) if len(probe) else np.nan
            n_states = (
                len(inter[(inter.model == m.name) & (inter.view == view)]["state_index"].unique())
                if not inter.empty
                else 0
            )
            rows.append(
                {
                    "model": m.name,
                    "family": m.family,
                    "arm": arm,
                    "inter_token_last": last,
                    "inter_token_last_se": se,
                    "inter_token_mean": mean_d,
                    "inter_token_mean_se": mean_se,
                    "layerwise_mean": lw,
                    "peak_rel_depth": peak / (n_states - 1) if n_states > 1 else np.nan,
                    "gap": float(probe["gap"].iloc[0]) if len(probe) else np.nan,
                    "peak_acc": float(probe["peak_acc"].iloc[0]) if len(probe) else np.nan,
                    "peak_acc_std": float(probe["peak_acc_std"].iloc[0]) if len(probe) else np.nan,
                }
            )
    frame = pd.DataFrame(rows)
    for column, value, spread in (
        ("differs", "inter_token_last", "inter_token_last_se"),
        ("probe_differs", "peak_acc", "peak_acc_std"),
    ):
        verdicts = []
        for row in frame.itertuples(index=False):
            ref = _trained_arm(frame, row.model)
            if row.arm == "pretrained" or ref is None:
                verdicts.append("")
                continue
            verdicts.append(
                beyond_noise(getattr(row, value) - getattr(ref, value), getattr(row, spread), getattr(ref, spread))
            )
        frame[column] = verdicts
    return frame


def controlled_verdict(frame: pd.DataFrame) -> str:
    """One sentence: for how many (model, untrained arm) pairs a metric of the trained arm differs
    beyond noise, with the numbers of each pair that does."""
    pairs = frame[frame.arm != "pretrained"]
    if pairs.empty:
        return "No untrained arm to compare with."
    hits = []
    for row in pairs.itertuples(index=False):
        ref = _trained_arm(frame, row.model)
        found = []
        if row.differs == "yes":
            found.append(
                f"inter-token cosine {ref.inter_token_last:.3g} trained vs {row.inter_token_last:.3g} "
                f"(3 SE {noise_band(row.inter_token_last_se, ref.inter_token_last_se):.2g})"
            )
        if row.probe_differs == "yes":
            found.append(
                f"peak probe accuracy {ref.peak_acc:.3g} trained vs {row.peak_acc:.3g} "
                f"(3 SD over seeds {noise_band(row.peak_acc_std, ref.peak_acc_std):.2g})"
            )
        if found:
            hits.append(f"{row.model} vs {row.arm}: " + "; ".join(found))
    head = f"**Trained differs from untrained beyond noise in {len(hits)} of {len(pairs)} (model, arm) pairs**" + (
        ":" if hits else "."
    )
    return "\n".join([head, *(f"- {h}" for h in hits)])


def _ordering_verdict(delta: float, spread_a: float, spread_b: float) -> str:
    """Verdict on "a above b" from ``delta`` = a - b (lowest Transformer minus highest SSM; trained
    minus untrained): agrees / disagrees only beyond :func:`noise_band` (:func:`beyond_noise`),
    else within noise; not decided without a noise estimate."""
    beyond = beyond_noise(delta, spread_a, spread_b)
    if beyond == "yes":
        return f"**{'agrees' if delta > 0 else 'disagrees'}**"
    if beyond == "no":
        return "**within noise** (inconclusive)"
    return "not decided (no noise estimate)"


def paper_agreement(frame: pd.DataFrame) -> list[str]:
    """Report lines: does the controlled suite agree with the paper's checkpoints on F3.2.3?

    ``frame`` is :func:`controlled_table`'s. ``inter_token_mean`` is the findings' F3.2.3 value
    (mean over the states after the embeddings), ``inter_token_mean_se`` its standard error. The
    table shows, next to the suite, this project's own full-size random-init measurements
    (:data:`PROJECT_RANDOM_INTER_TOKEN`, not the paper's numbers) and the paper's own Fig. 3
    reading (:data:`PAPER_FIG3_RANDOM`). Two statements, each with a verdict and its numbers:

    1. *Random init*: the paper's Fig. 3 (random GPT-Neo 75-100 %, random Mamba2 0-25 %) and this
       project's full-size random models put every Transformer above every SSM. For each untrained
       arm of the suite, lowest Transformer minus highest SSM (``inter_token_mean``): agrees if it
       is positive beyond 3 combined standard errors of the two (:func:`noise_band`), disagrees if
       negative beyond them, else within noise (inconclusive); not decided without an SE.
    2. *Training raises SSM smoothing*: for each SSM and untrained arm, agrees if the trained
       arm's last-state inter-token cosine exceeds the untrained one's by more than 3 combined
       standard errors over prompts, disagrees if it is lower by more than that, else within noise.
    """
    if frame.empty:
        return []
    kind = {fam: ARCHITECTURE.get(fam, "?") for fam in frame.family.unique()}
    if "inter_token_mean_se" not in frame:
        frame = frame.assign(inter_token_mean_se=np.nan)
    lines = [
        "### Agreement with the paper's checkpoints (F3.2.3)",
        "",
        "| model | family | arm | inter-token cosine, mean over depth | 3 SE | "
        "full-size random init, measured by this project (BENCHMARKS.md, 2026-11-22) | "
        "paper's own reading, Fig. 3 random init |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in frame.itertuples(index=False):
        ours = PROJECT_RANDOM_INTER_TOKEN.get(row.family)
        paper = PAPER_FIG3_RANDOM.get(row.family, "not shown")
        project = "" if ours is None else f"{ours:g}" + ("*" if row.family in PROJECT_RANDOM_UNRECORDED else "")
        noise = 3 * row.inter_token_mean_se
        lines.append(
            f"| {row.model} | {row.family} | {row.arm} | {row.inter_token_mean:.3g} | "
            f"{'' if np.isnan(noise) else f'{noise:.2g}'} | "
            f"{'' if row.arm == 'pretrained' else project} | {'' if row.arm == 'pretrained' else paper} |"
        )
    lines += [
        "",
        "Mean over depth = every state after the embeddings (state 0 is left out where it is `embed`; the "
        "hf view of Mamba and Mamba2 has none), as the findings' F3.2.3; its SE is the mean of the "
        "per-state standard errors over prompts (an upper bound). The full-size column is not the "
        f"paper's: {PROJECT_RANDOM_SOURCE}. The paper prints no numbers for its random arm; its Fig. 3 "
        "reading covers GPT-Neo and Mamba2 only.",
        "",
    ]
    proj_tbm = [v for f, v in PROJECT_RANDOM_INTER_TOKEN.items() if ARCHITECTURE.get(f) == "TBM"]
    proj_ssm = [v for f, v in PROJECT_RANDOM_INTER_TOKEN.items() if ARCHITECTURE.get(f) == "SSM"]
    for arm in [a for a in frame.arm.unique() if a != "pretrained"]:
        sub = frame[frame.arm == arm]
        tbm = sub[(sub.family.map(kind) == "TBM") & sub.inter_token_mean.notna()]
        ssm = sub[(sub.family.map(kind) == "SSM") & sub.inter_token_mean.notna()]
        if tbm.empty or ssm.empty:
            lines.append(f"- Random init ({arm}): not decided (the suite needs a Transformer and an SSM).")
        else:
            low = tbm.loc[tbm.inter_token_mean.idxmin()]
            high = ssm.loc[ssm.inter_token_mean.idxmax()]
            delta = low.inter_token_mean - high.inter_token_mean
            noise = noise_band(low.inter_token_mean_se, high.inter_token_mean_se)
            lines.append(
                f"- Random init ({arm}): every Transformer above every SSM, as the paper's Fig. 3 reading "
                f"(random GPT-Neo {PAPER_FIG3_RANDOM['gpt_neo']}, random Mamba2 {PAPER_FIG3_RANDOM['mamba2']}) and "
                f"this project's full-size random models (lowest Transformer {min(proj_tbm):g} > highest SSM "
                f"{max(proj_ssm):g}): {_ordering_verdict(delta, low.inter_token_mean_se, high.inter_token_mean_se)}: "
                f"lowest Transformer {low.model} {low.inter_token_mean:.3g} - highest SSM {high.model} "
                f"{high.inter_token_mean:.3g} = {delta:.3g} (3 SE {'n/a' if np.isnan(noise) else f'{noise:.2g}'})."
            )
        for row in sub[sub.family.map(kind) == "SSM"].itertuples(index=False):
            ref = _trained_arm(frame, row.model)
            if ref is None:
                continue
            gain = ref.inter_token_last - row.inter_token_last
            noise = noise_band(ref.inter_token_last_se, row.inter_token_last_se)
            # the table's own verdict (beyond_noise), read as the ordering verdicts above: agrees upwards
            # beyond noise, disagrees downwards beyond it, within noise otherwise
            verdict = _ordering_verdict(gain, ref.inter_token_last_se, row.inter_token_last_se)
            lines.append(
                f"- Training raises {row.model}'s smoothing (SSM, vs {arm}): {verdict}: last-state "
                f"inter-token cosine trained {ref.inter_token_last:.3g} - untrained {row.inter_token_last:.3g} "
                f"= {gain:.3g} (3 SE {noise:.2g})."
            )
    lines.append("")
    return lines


CONTROLLED_FINDINGS = ("F3.2.3", "F3.2.1", "F3.4.1")


def family_answers(verdicts: list[Verdict], config: Config) -> list[str]:
    """Report lines: the controlled answer per family, trained against untrained.

    For each model, finding of :data:`CONTROLLED_FINDINGS` and arm, the checks of that finding
    that concern the model alone (``Check.model``; contrasts between models stay in the suite's
    verdict), with their verdict (supports / contradicts / mixed) and the numbers that decide it.
    F3.2.3 compares an untrained arm with the trained one, so it has rows for untrained arms only.
    """
    rows = []
    for model in config.models:
        for finding in CONTROLLED_FINDINGS:
            for v in verdicts:
                if v.finding != finding:
                    continue
                own = Verdict(v.finding, v.arm, v.view, [c for c in v.checks if c.model == model.name])
                if not own.checks:
                    continue
                evidence = "; ".join(("PASS " if c.passed else "FAIL ") + c.text for c in own.checks)
                rows.append(
                    f"| {model.family} | {model.name} | {finding} | {v.arm} | **{own.verdict}** | "
                    f"{sum(c.passed for c in own.checks)}/{len(own.checks)} | {evidence} |"
                )
    if not rows:
        return []
    return [
        "### Controlled answer per family",
        "",
        "Each finding's checks that concern one model (thresholds as in the findings section), for the "
        "trained arm (`pretrained`) and the untrained one. F3.2.3 is a comparison of the untrained arm "
        "with the trained one: TBM smoothing present without training, SSM smoothing low without it "
        "and raised by training.",
        "",
        "| family | model | finding | arm | verdict | passed | checks |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def _training_section(config: Config, root: Path) -> list[str]:
    table = training_table(config, root)
    if table.empty:
        return []
    lines = [
        "## Controlled comparison: models trained by this workflow",
        "",
        "These models were trained here from scratch with one recipe (docs/training.md): the same "
        "text, token stream, token budget and optimiser, only the architecture differs. Their "
        "`pretrained` arm is the trained model; the other arms re-initialise the same config. "
        "Validation loss is in nats per token; `unigram_val_loss` is the loss of the training-split "
        "token frequencies (a model not below it has learned frequencies only).",
        "",
        markdown_table(table),
        "",
    ]
    controlled = controlled_table(config, root)
    fig = config.section("figures")
    lines += [
        f"### Trained against random (length {fig['length']}, view {fig['view']})",
        "",
        "F3.2.3: inter-token cosine (last state and mean over the states after the embeddings, as in the "
        "findings, with its standard error); F3.2.1: layerwise cosine "
        "(mean over depth); F3.4.1: probe peak (relative depth of the peak, gap to the last "
        "state). `differs`: last-state inter-token cosine differs from the trained arm's by more "
        "than 3 standard errors over prompts; `probe_differs`: peak probe accuracy differs by more "
        "than 3 standard deviations over probe seeds.",
        "",
        markdown_table(controlled),
        "",
        controlled_verdict(controlled),
        "",
    ]
    findings = root / FINDINGS
    if findings.is_file():
        verdicts = pd.read_csv(findings, keep_default_na=False)
        verdicts = verdicts[verdicts.finding.isin(CONTROLLED_FINDINGS) & (verdicts.view == fig["view"])]
        lines += [
            "Verdicts on this suite (every model in the config counts; here the pretrained arm is trained "
            "under the controlled recipe):",
            "",
            markdown_table(verdicts[["finding", "arm", "verdict", "passed", "total"]]),
            "",
        ]
    chosen = [v for v in evaluate(config, root) if v.finding in CONTROLLED_FINDINGS and v.view == fig["view"]]
    lines += family_answers(chosen, config)
    lines += paper_agreement(controlled)
    lines += [
        "The micro demo suite is far from the paper's scale and its text overlaps the MDQA prompts; the "
        "GPU suite (config/matched.yaml) is the controlled answer.",
        "",
    ]
    return lines


def write_report(config: Config, out_path: str | Path, *, root: str | Path = ".") -> None:
    """Write the Markdown report; figure links are relative to the report's folder."""
    out_path, root = Path(out_path), Path(root)
    table1, table2 = build_tables(config, root)
    lines = [
        "# reprflow report",
        "",
        f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} on {platform.node()} ({platform.machine()}). "
        f"Config sha256 `{config.digest()[:16]}...` (full hash under provenance).",
        "",
        "## Models",
        "",
        *model_notes(config),
        "",
        *_findings_section(root),
        *_paper_comparison_section(config, root),
        "## Column definitions (Tables 1 and 2)",
        "",
        *[f"- `{k}`: {v}" for k, v in COLUMN_DEFINITIONS.items()],
        "",
        "Values at 3 significant figures (the CSV files keep 6). Empty cells: the length exceeds the "
        "model's context window (the paper's \"-\").",
        "",
        "## Table 1: mean over tasks",
        "",
        markdown_table(table1),
        "",
        "## Table 2: per task",
        "",
        markdown_table(table2),
        "",
        "## Figures",
        "",
    ]
    for path in figure_files(config):
        rel = os.path.relpath(root / path, out_path.parent)
        lines += [f"### {Path(path).stem}", "", f"![{Path(path).stem}]({rel})", ""]
    verdict = root / THEORY["verdict"]
    if verdict.is_file():
        figure = os.path.relpath(root / THEORY["figure"], out_path.parent)
        body = verdict.read_text().split("\n", 1)[-1]  # drop its own title
        body = re.sub(r"(?m)^(#+) ", r"#\1 ", body)  # nest its sections one level under ours
        lines += ["## Theory check (paper §4)", "", f"![theory]({figure})", "", body.strip(), ""]
    lines += _training_section(config, root)
    lines += _provenance_section(config, root)
    atomic_write_bytes("\n".join(lines).encode(), out_path)
    logger.info("wrote %s (%d figures)", out_path, len(FIGURE_NAMES))


_CSS = """<style>
body{font-family:system-ui,sans-serif;font-size:13px;margin:12px;color:#1e293b}
table{border-collapse:collapse;margin:8px 0} th,td{border:1px solid #cbd5e1;padding:3px 6px;text-align:right}
th{background:#f1f5f9;position:sticky;top:0;text-align:left} td.text{text-align:left;white-space:nowrap}
.supports{background:#dcfce7}.contradicts{background:#fee2e2}.mixed{background:#fef9c3}.notrun{background:#e2e8f0}
li.fail{color:#b91c1c} li.pass{color:#166534} dt{font-weight:600;font-family:monospace} dd{margin:0 0 4px 16px}
</style>"""


def _html_page(title: str, intro: str, body: str) -> bytes:
    from html import escape

    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title>{_CSS}</head>"
        f"<body><h2>{escape(title)}</h2><p>{intro}</p>{body}</body></html>"
    ).encode()


def _html_table(frame: pd.DataFrame, text_cols=("model", "init", "view", "task", "store")) -> str:
    from html import escape

    head = "".join(f"<th>{escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for row in frame.astype(object).itertuples(index=False):
        cells = "".join(
            f"<td class='{'text' if c in text_cols else ''}'>{escape(format_value(v))}</td>"
            for c, v in zip(frame.columns, row)
        )
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _definitions() -> str:
    from html import escape

    return (
        "<dl>" + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in COLUMN_DEFINITIONS.items()) + "</dl>"
    )


def _findings_html(root: Path) -> str:
    from html import escape

    table = pd.read_csv(root / FINDINGS, keep_default_na=False)
    rows = []
    for r in table.itertuples(index=False):
        items = "".join(
            f"<li class='{'pass' if e.startswith('PASS') else 'fail'}'>{escape(e)}</li>"
            for e in filter(None, str(r.evidence).split("; "))
        )
        if r.not_run:
            items += f"<li>not run: {escape(str(r.not_run))}</li>"
        css = r.verdict.replace(" ", "")
        rows.append(
            f"<tr><td class='text'><b>{r.finding}</b></td><td class='text'>{escape(r.arm)}</td>"
            f"<td class='text'>{escape(r.view)}</td><td class='text {css}'><b>{r.verdict}</b> ({r.passed}/{r.total})</td>"
            f"<td class='text'><ul>{items}</ul></td></tr>"
        )
    return (
        "<table><thead><tr><th>finding</th><th>arm</th><th>view</th><th>verdict (checks passed)</th>"
        "<th>evidence: each check, measured number vs threshold</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _markdown_html(text: str) -> str:
    """Markdown to HTML with markdown-it-py (pinned in requirements.txt); a <pre> block without it."""
    from html import escape

    try:
        from markdown_it import MarkdownIt
    except ImportError:  # pragma: no cover - the pinned environment has it
        return f"<pre style='white-space:pre-wrap'>{escape(text)}</pre>"
    return MarkdownIt("commonmark").enable("table").render(text)


def write_html_tables(config: Config, paths: dict[str, str | Path], *, root: str | Path = ".") -> None:
    """The verdicts, Table 1, Table 2, the provenance and the theory verdict as HTML pages (``paths`` keyed as
    :data:`reprflow.workflow.targets.HTML_TABLES`), cells at 3 significant figures."""
    root = Path(root)
    table1, table2 = build_tables(config, root)
    prov, hash_cols = provenance_table(config, root)
    claims = "".join(f"<li><b>{k}</b>: {v}</li>" for k, v in FINDINGS_TEXT.items())
    notes = "<ul>" + "".join(f"<li>{line[2:].replace('**', '')}</li>" for line in model_notes(config)) + "</ul>"
    pages = {
        "findings": (
            "Verdicts on the paper's findings",
            "supports = every check passes; contradicts = every check fails; mixed = some pass; not run = the "
            "cells it needs were not run. Thresholds: config <code>findings:</code>, reasons in docs/findings.md."
            + notes,
            _findings_html(root) + f"<h3>The findings (paper §3)</h3><ul>{claims}</ul>",
        ),
        "table1": (
            "Table 1: mean over tasks",
            "Empty rows: the length exceeds the model's context (the paper's '-')." + notes,
            _html_table(table1) + "<h3>Columns</h3>" + _definitions(),
        ),
        "table2": (
            "Table 2: per task",
            "Same columns as Table 1, one row per task." + notes,
            _html_table(table2) + "<h3>Columns</h3>" + _definitions(),
        ),
        "provenance": (
            "Provenance",
            f"config sha256 <code>{config.digest()}</code>; reprflow {__version__}; "
            + ", ".join(f"{p} {_version(p)}" for p in PACKAGES)
            + f". Hash columns recorded per cell: {', '.join(hash_cols) or 'none'}.",
            _html_table(prov),
        ),
    }
    comparison = read_paper_comparison(root)
    pages["paper_comparison"] = (
        "Tables 1 and 2 against the paper's printed numbers",
        "Each number of the paper's Tables 1-2 (arXiv 2510.06640) against ours: accuracies in %, Sm and St absolute; "
        "diff = ours - paper; agrees when |diff| &lt;= tolerance (config <code>paper_comparison:</code>, "
        "docs/findings.md). Only the pretrained arm of the paper's checkpoints in the hf view is comparable.",
        "Not computed (results/paper_comparison.csv missing)."
        if comparison is None
        else _markdown_html("\n".join(summary(comparison, config))) + _html_table(comparison),
    )
    verdict = root / THEORY["verdict"]
    theory = verdict.read_text().split("\n", 1)[-1] if verdict.is_file() else "The theory check was not run."
    pages["theory"] = (
        "Theory check: verdict (results/theory/verdict.md)",
        "The Monte Carlo check of the paper's §4; setting and scope in docs/theory.md.",
        _markdown_html(theory),
    )
    for key, (title, intro, body) in pages.items():
        atomic_write_bytes(_html_page(title, intro, body), Path(paths[key]))
