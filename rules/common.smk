# Validation, wildcard constraints and target lists. Logic lives in reprflow/ (tested there).
import logging
import os
from dataclasses import asdict
import sys

sys.path.insert(0, workflow.basedir)

from snakemake_interface_executor_plugins.settings import ExecMode

from reprflow.config import validate_config
from reprflow.errors import ReprflowError
from reprflow.workflow import disk, targets
from reprflow.workflow.model_json import check_context_windows
from reprflow.workflow.lineage import (
    STREAMED_METRICS_CODE,
    code_digest,
    other_tasks_code,
)  # every script rule's `code` param
from reprflow.workflow.scheduling import SHARED_ENV, default_gpu_resource
from reprflow.workflow.targets import (
    cells,
    extraction_priority,
    final_targets,
    gate_priority,
    prompt_files,
    prompt_token_cap,
    store_paths,
    table_cells,
)

_handler = logging.StreamHandler()
_handler.setFormatter(logging.Formatter("reprflow: %(message)s"))
logging.getLogger("reprflow.workflow").addHandler(_handler)
logging.getLogger("reprflow.workflow").setLevel(logging.INFO)
_LOG = logging.getLogger("reprflow.workflow")

try:
    CFG = validate_config(config)
    if CFG.custom_tasks:  # your own prompts: every record checked before any job runs
        from reprflow.prompts.custom import check_custom_tasks

        check_custom_tasks(CFG)
    check_context_windows(CFG)  # each model's window, where its config.json is known offline
except ReprflowError as exc:
    sys.exit(f"reprflow: invalid config: {exc}")

CELLS = cells(CFG, log=True)
GATE_PRIORITY = gate_priority(CFG, CELLS)  # prompts, training, tiny models: before any extraction job
TABLE_CELLS = table_cells(CFG)  # cells of `scope: all` inits: probes and table rows
OUT = CFG.out_dir


def out(path):
    """``path`` under config.out_dir (reprflow.workflow.targets.out)."""
    return targets.out(CFG, path)


# Every product of this config, relative paths from reprflow/workflow/targets.py under OUT.
MODELS = out(targets.MODELS)
PROMPTS = out(targets.PROMPTS)
ACTIVATIONS = out(targets.ACTIVATIONS)
SHARD = out(targets.SHARD)
TOKEN_METRICS = out(targets.TOKEN_METRICS)
PROBES = out(targets.PROBES)
TABLES = [out(p) for p in targets.TABLES]
REPORT = out(targets.REPORT)
THEORY = {k: out(v) for k, v in targets.THEORY.items()}
FIGURES = [out(p) for p in targets.figure_files(CFG)]
LOGS = out(targets.LOGS)
BENCHMARKS = out(targets.BENCHMARKS)


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


def cell_paths(pattern, cells=CELLS):
    return [cell.fmt(pattern) for cell in cells]


# execution.jobs_per_gpu GPU jobs per GPU (reprflow/workflow/scheduling.py): in the main process
# of a local run, provide the `gpu` resource from the visible GPU count when the user gave none.
if workflow.exec_mode == ExecMode.DEFAULT:
    _local = workflow.global_resources["_nodes"].value is None  # cluster executors set _nodes
    # start-up ahead of the GPU needs each job to claim its GPU, i.e. device: auto
    _per_gpu = CFG.raw["execution"]["jobs_per_gpu"] if CFG.execution("extraction")["device"] == "auto" else 1
    _gpus = default_gpu_resource(
        {name: None for name in workflow.global_resources},
        local=_local,
        jobs_per_gpu=_per_gpu,
    )
    if _local:  # jobs may outnumber GPUs: each claims its own (reprflow/devices.py)
        os.environ[SHARED_ENV] = "1"
    if _gpus is not None:
        workflow.global_resources["gpu"] = _gpus
        _LOG.info(
            "gpu resource: %d (%d GPU job(s) per visible GPU, one computing at a time, or 1 "
            "without a GPU: at most that many GPU jobs at once; --resources gpu=N overrides)",
            _gpus,
            _per_gpu,
        )
    # Disk preflight (reprflow/workflow/disk.py): announced in every run and dry run ...
    _LOG.info("%s", disk.summary(CFG, disk.pending_estimates(CFG)))


onstart:
    # ... and enforced before the first job of a real run, for the stores it is about to build
    if CFG.raw["execution"]["disk_check"] and not workflow.touch:
        _stores = {
            str(f)
            for job in workflow.dag.needrun_jobs()
            if job.rule.name.startswith("extract_activation")
            for f in job.output
        }
        disk.check_disk(CFG, disk.pending_estimates(CFG, _stores))
