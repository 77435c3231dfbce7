"""Paths of every workflow product and the target lists computed from the config.

One place defines where things live, so rules, DVC stages, tables and tests agree.
The path constants below are relative to the config's output root ``config.out_dir``
(``.`` for the paper config, ``runs/demo`` for the demo): :func:`out` prefixes one, and
:func:`final_targets`, :func:`store_paths`, :func:`prompt_files` return prefixed paths.
Readers that take a ``root`` (reprflow.pipeline.results) get ``config.out_dir``.

A (model, init, task, length) *cell* whose length exceeds the model's ``max_context`` is
skipped here, before any job exists, with a log line; tables show it as empty. An init
with ``scope: fig3`` has cells only where Fig. 3 needs them: both tasks at
``figures.length``, token metrics only (no probes, no table rows; :func:`table_cells`).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

from reprflow.config import Config

logger = logging.getLogger(__name__)

MODELS = "data/models/{model}"
PROMPTS = "data/prompts/{tokenizer}/{task}_n{length}.jsonl"
ACTIVATIONS = "results/activations/{model}/{init}/{task}_n{length}.zarr"
SHARD = "results/activations/{model}/{init}/{task}_n{length}_shard{shard}of{nshards}.zarr"
METRICS_DIR = "results/metrics/{model}/{init}/{task}_n{length}"
TOKEN_METRICS = METRICS_DIR + "/token_metrics"
PROBES = METRICS_DIR + "/probes.csv"
TABLES = ("results/table1.csv", "results/table2.csv")
REPORT = "results/report.md"
FINDINGS = "results/findings.csv"
PAPER_COMPARISON = "results/paper_comparison.csv"  # Tables 1-2 against the paper's printed numbers
HTML_REPORT = "results/report.html"
PROVENANCE = "results/provenance.csv"
HTML_TABLES = {  # the tables as HTML pages, shown inside Snakemake's HTML report
    "findings": "results/html/findings.html",
    "paper_comparison": "results/html/paper_comparison.html",
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


LOGS = "logs"
BENCHMARKS = "logs/benchmarks"


def out(config: Config, path: str) -> str:
    """``path`` (relative to the output root) under ``config.out_dir``, normalised, so the
    paper config (``out_dir: .``) keeps plain ``results/table1.csv``. Wildcards survive."""
    return os.path.normpath(os.path.join(config.out_dir, path))


@dataclass(frozen=True)
class Cell:
    """One extraction unit: a model, an init, a task and a target length."""

    model: str
    init: str
    task: str
    length: int

    def fmt(self, pattern: str) -> str:
        return pattern.format(model=self.model, init=self.init, task=self.task, length=self.length)


def init_scope(init) -> str:
    """An init's ``scope`` (``all`` when the entry predates the key)."""
    return getattr(init, "scope", "all")


def cells(config: Config, *, log: bool = False) -> list[Cell]:
    """Every (model, init, task, length) cell that fits its model's context window; a
    ``scope: fig3`` init only at ``figures.length``. Each cell gets a store and token metrics.

    Paper tasks run at every ``lengths`` entry; a custom task at its own ``length`` only (for
    a ``scope: fig3`` init too: that is its figure length), on its ``models``. Per model: the
    paper cells, then the custom ones."""
    found = []
    fig3_length = config.section("figures")["length"]
    for model in config.models:
        for length in config.lengths:
            if not model.fits(length):
                if log:
                    logger.info(
                        "skipping %s at %d tokens: beyond its context (%d)", model.name, length, model.max_context
                    )
                continue
            for init in config.inits:
                if init_scope(init) == "fig3" and length != fig3_length:
                    continue
                for task in config.paper_tasks:
                    found.append(Cell(model.name, init.name, task, length))
        for task in config.custom_tasks:
            (length,) = config.task_lengths(task)
            if not config.runs_task(model.name, task):
                continue
            if not model.fits(length):
                if log:
                    logger.info(
                        "skipping %s for custom task %s: its length %d is beyond the model's context (%d)",
                        model.name,
                        task,
                        length,
                        model.max_context,
                    )
                continue
            found += [Cell(model.name, init.name, task, length) for init in config.inits]
    return found


def table_cells(config: Config) -> list[Cell]:
    """The cells of ``scope: all`` inits: these get probes and rows in the tables."""
    scoped = {i.name for i in config.inits if init_scope(i) == "all"}
    return [c for c in cells(config) if c.init in scoped]


def store_paths(config: Config, model: str, init: str, task: str, length: int | str) -> list[str]:
    """The activation store of one cell under ``out_dir``, or its shards when
    ``execution.extraction.shards`` > 1 (``reprflow.store.shard_path`` naming)."""
    keys = dict(model=model, init=init, task=task, length=length)
    n = config.execution("extraction")["shards"]
    if n == 1:
        return [out(config, ACTIVATIONS.format(**keys))]
    return [out(config, SHARD.format(**keys, shard=i, nshards=n)) for i in range(n)]


def prompt_files(config: Config) -> list[str]:
    """Prompt sets needed by the cells under ``out_dir``, one per (tokenizer, task, length)."""
    needed = {(config.model(c.model).tokenizer, c.task, c.length) for c in cells(config)}
    return sorted(out(config, PROMPTS.format(tokenizer=t, task=k, length=n)) for t, k, n in needed)


def extraction_priority(config: Config, model: str, init: str, task: str, length: int | str, shards: int = 1) -> int:
    """Snakemake ``priority`` of an extraction job: its work, tokens forwarded x model size, i.e.
    prompts x length x hidden² x layers / 2**20, so the longest jobs start first and the run does
    not end on one long tail. Prompts: the cell's (:func:`reprflow.workflow.disk.cell_prompts`:
    the whole set, or only the token prompts for an init of ``scope: fig3``), divided among its
    ``shards``; model dims from :func:`reprflow.workflow.disk.model_dims`. The jobs take a free
    GPU in the same order (:func:`reprflow.devices.claim_gpu`). 0 when the dims are unknown."""
    from reprflow.workflow.disk import cell_prompts, model_dims  # lazy: targets stays import-light

    dims = model_dims(config.model(model), config)
    if dims is None:
        return 0
    n_prompts = -(-cell_prompts(config, task, init)[0] // shards)  # the largest shard
    return n_prompts * int(length) * dims.hidden**2 * dims.n_layers >> 20


def gate_priority(config: Config, cells: list[Cell]) -> int:
    """Snakemake ``priority`` of the jobs that gate extractions (model training and tiny-model
    builds; prompt sets get one more, as they are quick and gate more cells): above every
    extraction job's (:func:`extraction_priority`), so that on a machine with fewer job slots than
    ready jobs they start before any extraction, and a slow training (Mamba-1's, on a CPU) does not
    start last and leave the run ending on its cells. A sharded extraction's priority is its share
    of the unsharded one, so this stays above it. Their GPU claims
    (:func:`reprflow.devices.claim_gpu`) still queue at 0. ``cells``: the run's, :func:`cells`."""
    return 1 + max((extraction_priority(config, c.model, c.init, c.task, c.length) for c in cells), default=0)


def prompt_token_cap(config: Config, tokenizer: str, length: int) -> int | None:
    """The hard cap on prompt length for one prompt set: the smallest context window among the
    models that read it (same tokenizer, length fits), so every prompt fits every such model.
    None when all of them are unlimited (SSMs)."""
    windows = [m.max_context for m in config.models if m.tokenizer == tokenizer and m.fits(length) and m.max_context]
    return min(windows) if windows else None


def prompt_max_tokens(config: Config, tokenizer: str, task: str, length: int) -> int:
    """The most tokens a prompt of the (tokenizer, task, length) set can have: a custom task's
    ``length`` (a hard cap); for a paper task ``floor(length * (1 + tolerance))``, capped by
    :func:`prompt_token_cap` (reprflow.prompts.build_prompt_set's rule)."""
    if task in config.custom_tasks:
        return length
    most = math.floor(length * (1 + config.prompt_tolerance(task, length)))
    cap = prompt_token_cap(config, tokenizer, length)
    return most if cap is None else min(most, cap)


def figure_files(config: Config) -> list[str]:
    """All figures (relative to ``out_dir``): each averaged over the paper tasks, and one variant
    per task, custom tasks included."""
    suffixes = [""] + [f"_{task}" for task in config.tasks]
    return [f"results/figures/{name}{suffix}.png" for name in FIGURE_NAMES for suffix in suffixes]


def final_targets(config: Config) -> list[str]:
    """What ``rule all`` builds, under ``out_dir``: tables, figures, the theory check, the verdicts,
    the comparison with the paper's numbers and the report."""
    return [
        out(config, p)
        for p in (
            *TABLES,
            *figure_files(config),
            *THEORY.values(),
            FINDINGS,
            PAPER_COMPARISON,
            REPORT,
            PROVENANCE,
            *HTML_TABLES.values(),
        )
    ]
