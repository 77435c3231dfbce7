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
from reprflow.pipeline.findings import FINDINGS as FINDINGS_TEXT
from reprflow.pipeline.results import provenance
from reprflow.pipeline.tables import COLUMN_DEFINITIONS, build_tables
from reprflow.workflow.targets import FINDINGS, FIGURE_NAMES, HTML_TABLES, THEORY, figure_files

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
        body = re.sub(r"(?m)^(#+) ", r"#\1 ", body)  # nest its sections one level under ours
        lines += ["## Theory check (paper §4)", "", f"![theory]({figure})", "", body.strip(), ""]
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

    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title>{_CSS}</head>"
            f"<body><h2>{escape(title)}</h2><p>{intro}</p>{body}</body></html>").encode()


def _html_table(frame: pd.DataFrame, text_cols=("model", "init", "view", "task", "store")) -> str:
    from html import escape

    head = "".join(f"<th>{escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for row in frame.astype(object).itertuples(index=False):
        cells = "".join(f"<td class='{'text' if c in text_cols else ''}'>{escape(format_value(v))}</td>"
                        for c, v in zip(frame.columns, row))
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _definitions() -> str:
    from html import escape

    return "<dl>" + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in COLUMN_DEFINITIONS.items()) + "</dl>"


def _findings_html(root: Path) -> str:
    from html import escape

    table = pd.read_csv(root / FINDINGS, keep_default_na=False)
    rows = []
    for r in table.itertuples(index=False):
        items = "".join(f"<li class='{'pass' if e.startswith('PASS') else 'fail'}'>{escape(e)}</li>"
                        for e in filter(None, str(r.evidence).split("; ")))
        if r.not_run:
            items += f"<li>not run: {escape(str(r.not_run))}</li>"
        css = r.verdict.replace(" ", "")
        rows.append(f"<tr><td class='text'><b>{r.finding}</b></td><td class='text'>{escape(r.arm)}</td>"
                    f"<td class='text'>{escape(r.view)}</td><td class='text {css}'><b>{r.verdict}</b> ({r.passed}/{r.total})</td>"
                    f"<td class='text'><ul>{items}</ul></td></tr>")
    return ("<table><thead><tr><th>finding</th><th>arm</th><th>view</th><th>verdict (checks passed)</th>"
            "<th>evidence: each check, measured number vs threshold</th></tr></thead><tbody>" + "".join(rows)
            + "</tbody></table>")


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
        "findings": ("Verdicts on the paper's findings",
                     "supports = every check passes; contradicts = every check fails; mixed = some pass; not run = the "
                     "cells it needs were not run. Thresholds: config <code>findings:</code>, reasons in docs/findings.md."
                     + notes, _findings_html(root) + f"<h3>The findings (paper §3)</h3><ul>{claims}</ul>"),
        "table1": ("Table 1: mean over tasks", "Empty rows: the length exceeds the model's context (the paper's '-')."
                   + notes, _html_table(table1) + "<h3>Columns</h3>" + _definitions()),
        "table2": ("Table 2: per task", "Same columns as Table 1, one row per task." + notes,
                   _html_table(table2) + "<h3>Columns</h3>" + _definitions()),
        "provenance": ("Provenance", f"config sha256 <code>{config.digest()}</code>; reprflow {__version__}; "
                       + ", ".join(f"{p} {_version(p)}" for p in PACKAGES)
                       + f". Hash columns recorded per cell: {', '.join(hash_cols) or 'none'}.", _html_table(prov)),
    }
    verdict = root / THEORY["verdict"]
    theory = verdict.read_text().split("\n", 1)[-1] if verdict.is_file() else "The theory check was not run."
    pages["theory"] = ("Theory check: verdict (results/theory/verdict.md)",
                       "The Monte Carlo check of the paper's §4; setting and scope in docs/theory.md.",
                       _markdown_html(theory))
    for key, (title, intro, body) in pages.items():
        atomic_write_bytes(_html_page(title, intro, body), Path(paths[key]))
