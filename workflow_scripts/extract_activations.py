"""Rule extract_activations: prompts -> model -> one resumable Zarr store."""

from reprflow.pipeline.extract_stage import run_extraction
from reprflow.pipeline.runlog import workflow_step

with workflow_step(snakemake.log[0], "extract_activations"):  # noqa: F821 (injected by Snakemake)
    p, w = snakemake.params, snakemake.wildcards  # noqa: F821
    run_extraction(
        snakemake.input.prompts,  # noqa: F821
        snakemake.output[0],  # noqa: F821
        model=p.model,
        init=p.init,
        task=w.task,
        length=int(w.length),
        seed=p.seed,
        settings=p.settings,
        config_digest=p.config_digest,
        origin=p.origin,
        shard=p.shard,
    )
