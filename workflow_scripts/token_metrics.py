"""Rule token_metrics: cosine, inter-token cosine, CKA, Sm and St for one store, both views."""

from reprflow.config import validate_config
from reprflow.devices import resolve_device
from reprflow.pipeline.runlog import workflow_step
from reprflow.pipeline.token_metrics import compute_token_metrics

with workflow_step(snakemake.log[0], "token_metrics"):  # noqa: F821 (injected by Snakemake)
    s = snakemake.params.settings  # noqa: F821
    run = validate_config(snakemake.config).execution("metrics")  # noqa: F821 (not a param)
    compute_token_metrics(
        list(snakemake.input),  # noqa: F821 (one store, or its shards)
        snakemake.output[0],  # noqa: F821
        views=tuple(s["views"]),
        debiased_cka=s["debiased_cka"],
        device=resolve_device(run["device"]),
        max_tokens_in_memory=run["max_tokens_in_memory"],
        precision=s["precision"],
    )
