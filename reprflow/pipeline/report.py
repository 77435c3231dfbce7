"""results/report.md: the verdicts, the tables, the figures, and where every number comes from.

The text twin of Snakemake's HTML report (``snakemake --report results/report.html``, whose
captions live in report/*.rst). Built from the metric files alone. Sections:

1. what the models are (tiny or untrained models are named as such);
2. verdicts on the paper's findings (results/findings.csv);
3. Table 1 and Table 2 with their column definitions, values at 3 significant figures;
4. the figures; 5. the theory check (if run); 6. provenance: config sha256, package versions,
   and per cell the activation store, every hash the metric files record for it (prompt file
   sha256, and store hashes where the store records one).
"""

from __future__ import annotations

import logging
import os
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from reprflow import __version__
from reprflow.atomic import atomic_write_bytes
from reprflow.config import Config
from reprflow.pipeline.results import provenance
from reprflow.pipeline.tables import COLUMN_DEFINITIONS, build_tables
from reprflow.workflow.targets import FINDINGS, FIGURE_NAMES, THEORY, figure_files

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
    body = ["| " + " | ".join(format_value(v).replace("|", "/") for v in row) + " |"
            for row in frame.astype(object).itertuples(index=False)]
    return "\n".join([header, rule, *body])


def model_notes(config: Config) -> list[str]:
    """One line per model saying what it is; tiny and untrained models are named as such."""
    lines = []
    untrained = [i.name for i in config.inits if i.scheme != "pretrained"]
    for m in config.models:
        if m.tiny is not None:
            lines.append(f"- **{m.name}** ({m.family}): a TINY RANDOM model built by the workflow "
                         f"(`{m.hf_id}`); even its `pretrained` arm is untrained. Its numbers test the pipeline, "
                         "not the paper.")
        else:
            lines.append(f"- **{m.name}** ({m.family}): `{m.hf_id}`" + (f"@{m.revision}" if m.revision else "")
                         + (f", context {m.max_context} tokens" if m.max_context else ""))
    if untrained:
        lines.append(f"- Untrained arms (random initialisation, no training): {', '.join(untrained)}.")
    return lines


def provenance_table(config: Config, root: str | Path = ".") -> tuple[pd.DataFrame, list[str]]:
    """Per cell: store, every hash its metric files record, versions; plus the hash column names."""
    prov = provenance(config, root)
    hash_cols = [c for c in prov.columns if any(k in c for k in ("sha", "hash", "md5", "digest"))]
    keep = ["model", "init", "task", "length", "store", *hash_cols,
            *[c for c in ("reprflow_version", "store_reprflow_version") if c in prov.columns]]
    return prov[[c for c in keep if c in prov.columns]], hash_cols


def write_provenance(config: Config, out_path: str | Path, *, root: str | Path = ".") -> None:
    """results/provenance.csv: one row per cell (store, hashes, versions), with the config sha256
    and the package versions as constant columns; read by the HTML report."""
    table, _ = provenance_table(config, root)
    table = table.assign(config_sha256=config.digest(),
                         packages=f"reprflow {__version__}; " + ", ".join(f"{p} {_version(p)}" for p in PACKAGES))
    atomic_write_bytes(table.to_csv(index=False).encode(), Path(out_path))


def _provenance_section(config: Config, root: Path) -> list[str]:
    prov, hash_cols = provenance_table(config, root)
    return ["## Where each number comes from", "",
            f"- config sha256: `{config.digest()}`",
            f"- reprflow {__version__}; " + ", ".join(f"{p} {_version(p)}" for p in PACKAGES),
            f"- Python {platform.python_version()} on {platform.system()} {platform.machine()}",
            "- inits: " + ", ".join(f"{i.name} = {i.scheme}{i.params or ''}" for i in config.inits),
            "- hash columns below are those the metric files record per cell "
            f"({', '.join(hash_cols) or 'none'}).",
            "", markdown_table(prov), ""]


def _findings_section(root: Path) -> list[str]:
    path = root / FINDINGS
    if not path.is_file():
        return ["## Verdicts on the paper's findings", "", "Not computed (results/findings.csv missing).", ""]
    table = pd.read_csv(path, keep_default_na=False)
    counts = table["verdict"].value_counts()
    lines = ["## Verdicts on the paper's findings", "",
             "One row per finding, arm (init) and view: *supports* = every check passes, *contradicts* = every "
             "check fails, *mixed* = some pass, *not run* = the cells it needs were not run. Criteria and "
             "thresholds: docs/findings.md and the config's `findings:`.", "",
             "Counts: " + ", ".join(f"{k} {int(counts.get(k, 0))}" for k in ("supports", "contradicts", "mixed", "not run")),
             "", markdown_table(table[["finding", "arm", "view", "verdict", "passed", "total"]]), "",
             "### Evidence", ""]
    for row in table.itertuples(index=False):
        lines.append(f"- **{row.finding} / {row.arm} / {row.view}: {row.verdict}**")
        for item in filter(None, str(row.evidence).split("; ")):
            lines.append(f"  - {item}")
        if row.not_run:
            lines.append(f"  - not run: {row.not_run}")
    return lines + [""]


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
        lines += ["## Theory check (paper §4)", "", f"![theory]({figure})", "", body.strip(), ""]
    lines += _provenance_section(config, root)
    atomic_write_bytes("\n".join(lines).encode(), out_path)
    logger.info("wrote %s (%d figures)", out_path, len(FIGURE_NAMES))
