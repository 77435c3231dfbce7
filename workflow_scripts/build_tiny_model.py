"""Rule build_tiny_model: a tiny random model of one family, saved with save_pretrained."""

from reprflow.models.tiny import build_tiny_model
from reprflow.pipeline.runlog import workflow_step

with workflow_step(snakemake.log[0], "build_tiny_model"):  # noqa: F821 (injected by Snakemake)
    tiny = snakemake.params.tiny or {}  # noqa: F821
    build_tiny_model(
        snakemake.params.family,  # noqa: F821
        out_dir=snakemake.output[0],  # noqa: F821
        seed=tiny.get("seed", 0),
        overrides=tiny.get("overrides") or None,
    )
