"""results/report.md: the tables, the figures, and where every number comes from.

Provenance: config sha256, reprflow and key package versions, and for each cell its
activation store and the sha256 of its prompt file. Built from the metric files alone.
"""

from __future__ import annotations

import logging
import os
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import pandas as pd

from reprflow import __version__
from reprflow.atomic import atomic_write_bytes
from reprflow.config import Config
from reprflow.pipeline.results import provenance
from reprflow.pipeline.tables import build_tables
from reprflow.workflow.targets import FIGURE_NAMES, THEORY, figure_files

logger = logging.getLogger(__name__)

PACKAGES = ("torch", "transformers", "zarr", "numpy", "scikit-learn", "snakemake")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _markdown(frame: pd.DataFrame) -> str:
    frame = frame.copy()
    for col in frame.columns:
        if frame[col].dtype.kind == "f":
            frame[col] = frame[col].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    frame = frame.astype(object).where(frame.notna(), "")
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def write_report(config: Config, out_path: str | Path, *, root: str | Path = ".") -> None:
    """Write the Markdown report; figure links are relative to the report's folder."""
    out_path = Path(out_path)
    table1, table2 = build_tables(config, root)
    prov = provenance(config, root)
    lines = [
        "# reprflow report",
        "",
        f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} on {platform.node()} ({platform.machine()}).",
        "",
        "## Provenance",
        "",
        f"- config sha256: `{config.digest()}`",
        f"- reprflow {__version__}; " + ", ".join(f"{p} {_version(p)}" for p in PACKAGES),
        "- models: " + ", ".join(f"{m.name} = `{m.hf_id}`" + (f"@{m.revision}" if m.revision else "") for m in config.models),
        "- inits: " + ", ".join(f"{i.name} = {i.scheme}{i.params or ''}" for i in config.inits),
        "",
        "## Table 1: mean over tasks",
        "",
        "Empty cells: the length exceeds the model's context window. `peak_layer` indexes the view's states.",
        "",
        _markdown(table1),
        "",
        "## Table 2: per task",
        "",
        _markdown(table2),
        "",
        "## Figures",
        "",
    ]
    for path in figure_files(config):
        rel = os.path.relpath(Path(root) / path, out_path.parent)
        lines += [f"### {Path(path).stem}", "", f"![{Path(path).stem}]({rel})", ""]
    verdict = Path(root) / THEORY["verdict"]
    if verdict.is_file():
        figure = os.path.relpath(Path(root) / THEORY["figure"], out_path.parent)
        body = verdict.read_text().split("\n", 1)[-1]  # drop its own title
        lines += ["## Theory check (paper §4, Theorems 1-6)", "", f"![theory]({figure})", "", body.strip(), ""]
    lines += ["## Where each number comes from", "", _markdown(prov), ""]
    atomic_write_bytes("\n".join(lines).encode(), out_path)
    logger.info("wrote %s (%d figures)", out_path, len(FIGURE_NAMES))
