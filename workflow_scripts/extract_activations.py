"""Rule extract_activations: prompts -> model -> one resumable Zarr store (and, with
extraction.tokens: stream, the cell's token-metric files from the same forward passes)."""

import os

from reprflow.config import validate_config
from reprflow.kernels import kernel_cache
from reprflow.pipeline.extract_stage import run_extraction
from reprflow.pipeline.runlog import workflow_step
from reprflow.workflow.targets import LOGS, extraction_priority, out

with workflow_step(snakemake.log[0], "extract_activations"):  # noqa: F821 (injected by Snakemake)
    p, w = snakemake.params, snakemake.wildcards  # noqa: F821
    # config.execution is not a param (changing it reruns nothing): read it from the config
    config = validate_config(snakemake.config)  # noqa: F821
    # kernel choices and mamba_ssm's autotuning, measured once per run, not once per job
    # (reprflow/kernels/kernel_cache.py); an explicit REPRFLOW_KERNEL_CACHE wins
    os.environ.setdefault(kernel_cache.ENV, os.path.abspath(out(config, f"{LOGS}/kernel_cache.json")))
    index = [m.name for m in config.models].index(p.model["name"])
    metrics_dir = getattr(snakemake.output, "token_metrics", None)  # noqa: F821 (streamed cells only)
    shards = config.execution("extraction")["shards"]
    run_extraction(
        snakemake.input.prompts,  # noqa: F821
        snakemake.output.store,  # noqa: F821
        model=p.model,
        init=p.init,
        task=w.task,
        length=int(w.length),
        seed=p.seed,
        settings={**p.settings, **config.execution("extraction")},
        config_digest=p.config_digest,
        origin=f"config.models[{index}].hf_id",
        shard=p.shard,
        metrics_dir=metrics_dir,
        metrics=None if metrics_dir is None else {**p.metrics, **config.execution("metrics")},
        # the rule's priority: waiting jobs take a free GPU longest first (reprflow/devices.py)
        gpu_priority=extraction_priority(config, w.model, w.init, w.task, w.length, shards),
    )
