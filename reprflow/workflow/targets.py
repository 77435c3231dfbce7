"""Paths of every workflow product and the target lists computed from the config.

One place defines where things live, so rules, DVC stages, tables and tests agree.
A (model, init, task, length) *cell* whose length exceeds the model's ``max_context`` is
skipped here, before any job exists, with a log line; tables show it as empty.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from reprflow.config import Config

logger = logging.getLogger(__name__)

PROMPTS = "data/prompts/{tokenizer}/{task}_n{length}.jsonl"
ACTIVATIONS = "results/activations/{model}/{init}/{task}_n{length}.zarr"
SHARD = "results/activations/{model}/{init}/{task}_n{length}_shard{shard}of{nshards}.zarr"
METRICS_DIR = "results/metrics/{model}/{init}/{task}_n{length}"
TOKEN_METRICS = METRICS_DIR + "/token_metrics"
PROBES = METRICS_DIR + "/probes.csv"
TABLES = ("results/table1.csv", "results/table2.csv")
REPORT = "results/report.md"
FINDINGS = "results/findings.csv"
HTML_REPORT = "results/report.html"
PROVENANCE = "results/provenance.csv"
HTML_TABLES = {  # the tables as HTML pages, shown inside Snakemake's HTML report
    "findings": "results/html/findings.html",
    "table1": "results/html/table1.html",
    "table2": "results/html/table2.html",
    "provenance": "results/html/provenance.html",
    "theory": "results/html/theory.html",
}
FIGURE_NAMES = (
    "fig1_layerwise_cosine",
    "fig2_inter_token_cosine",
    "fig3_pretrained_vs_random",
    "fig4_cka",
    "fig7_probe_accuracy",
)
THEORY = {
    "theorems": "results/theory/theorems.csv",
    "theorem_cells": "results/theory/theorem_cells.csv",
    "assumptions": "results/theory/assumptions.csv",
    "paper_crossover": "results/theory/paper_crossover.csv",
    "stability": "results/theory/stability.csv",
    "depth": "results/theory/depth.csv",
    "approximations": "results/theory/approximations.csv",
    "crossover": "results/theory/crossover.csv",
    "figure": "results/theory/theory.png",
    "verdict": "results/theory/verdict.md",
}


@dataclass(frozen=True)
class Cell:
    """One extraction unit: a model, an init, a task and a target length."""

    model: str
    init: str
    task: str
    length: int

    def fmt(self, pattern: str) -> str:
        return pattern.format(model=self.model, init=self.init, task=self.task, length=self.length)


def cells(config: Config, *, log: bool = False) -> list[Cell]:
    """Every (model, init, task, length) cell that fits its model's context window."""
    out = []
    for model in config.models:
        for length in config.lengths:
            if not model.fits(length):
                if log:
                    logger.info("skipping %s at %d tokens: beyond its context (%d)", model.name, length, model.max_context)
                continue
            for init in config.inits:
                for task in config.tasks:
                    out.append(Cell(model.name, init.name, task, length))
    return out


def store_paths(config: Config, model: str, init: str, task: str, length: int | str) -> list[str]:
    """The activation store of one cell, or its shards when ``extraction.shards`` > 1
    (``reprflow.store.shard_path`` naming)."""
    keys = dict(model=model, init=init, task=task, length=length)
    n = config.section("extraction")["shards"]
    if n == 1:
        return [ACTIVATIONS.format(**keys)]
    return [SHARD.format(**keys, shard=i, nshards=n) for i in range(n)]


def prompt_files(config: Config) -> list[str]:
    """Prompt sets needed by the cells, one per (tokenizer, task, length)."""
    needed = {(config.model(c.model).tokenizer, c.task, c.length) for c in cells(config)}
    return sorted(PROMPTS.format(tokenizer=t, task=k, length=n) for t, k, n in needed)


def prompt_token_cap(config: Config, tokenizer: str, length: int) -> int | None:
    """The hard cap on prompt length for one prompt set: the smallest context window among the
    models that read it (same tokenizer, length fits), so every prompt fits every such model.
    None when all of them are unlimited (SSMs)."""
    windows = [m.max_context for m in config.models if m.tokenizer == tokenizer and m.fits(length) and m.max_context]
    return min(windows) if windows else None


def figure_files(config: Config) -> list[str]:
    """All figures: each averaged over tasks and one variant per task."""
    suffixes = [""] + [f"_{task}" for task in config.tasks]
    return [f"results/figures/{name}{suffix}.png" for name in FIGURE_NAMES for suffix in suffixes]


def final_targets(config: Config) -> list[str]:
    """What ``rule all`` builds: tables, figures, the theory check, the verdicts and the report."""
    return [*TABLES, *figure_files(config), *THEORY.values(), FINDINGS, REPORT, PROVENANCE, *HTML_TABLES.values()]
