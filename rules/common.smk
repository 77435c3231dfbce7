# Validation, wildcard constraints and target lists. Logic lives in reprflow/ (tested there).
import logging
from dataclasses import asdict
import sys

sys.path.insert(0, workflow.basedir)

from reprflow.config import validate_config
from reprflow.errors import ConfigError
from reprflow.workflow.targets import (
    ACTIVATIONS,
    METRICS_DIR,
    PROBES,
    PROMPTS,
    REPORT,
    SHARD,
    TABLES,
    THEORY,
    TOKEN_METRICS,
    cells,
    figure_files,
    final_targets,
    prompt_files,
    prompt_token_cap,
    store_paths,
)

_handler = logging.StreamHandler()
_handler.setFormatter(logging.Formatter("reprflow: %(message)s"))
logging.getLogger("reprflow.workflow").addHandler(_handler)
logging.getLogger("reprflow.workflow").setLevel(logging.INFO)

try:
    CFG = validate_config(config)
except ConfigError as exc:
    sys.exit(f"reprflow: invalid config: {exc}")

CELLS = cells(CFG, log=True)


wildcard_constraints:
    model="|".join(m.name for m in CFG.models),
    init="|".join(i.name for i in CFG.inits),
    task="|".join(CFG.tasks),
    tokenizer="|".join(sorted({m.tokenizer for m in CFG.models})),
    length=r"\d+",
    shard=r"\d+",
    nshards=r"\d+",


def model_dir(wildcards):
    """The tiny or trained model folder a rule must build first, or nothing for hub models."""
    spec = CFG.model(wildcards.model)
    return [spec.hf_id] if spec.tiny is not None or spec.train is not None else []


def prompt_file(wildcards):
    spec = CFG.model(wildcards.model)
    return PROMPTS.format(tokenizer=spec.tokenizer, task=wildcards.task, length=wildcards.length)


def cell_stores(wildcards):
    """The store of a cell, or its shards (read as one by the metric stages)."""
    return store_paths(CFG, wildcards.model, wildcards.init, wildcards.task, wildcards.length)


def cell_paths(pattern):
    return [cell.fmt(pattern) for cell in CELLS]
