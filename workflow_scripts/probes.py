"""Rule probes: per-layer linear probes on last-token states (Adam, lr 0.05, 150 epochs)."""

from reprflow.config import validate_config
from reprflow.devices import resolve_device, torch_threads, will_claim_gpu
from reprflow.pipeline.probe_stage import run_probe_stage
from reprflow.pipeline.runlog import workflow_step

with (
    workflow_step(snakemake.log[0], "probes"),  # noqa: F821 (injected by Snakemake)
    torch_threads(snakemake.threads, key="execution.probes.threads"),  # noqa: F821 (the cores Snakemake booked)
):
    s = snakemake.params.settings  # noqa: F821
    run = validate_config(snakemake.config).execution("probes")  # noqa: F821 (not a param)
    # a GPU of several is claimed by fit_layer_probes once the first group of states is read
    claims = will_claim_gpu(run["device"])
    run_probe_stage(
        list(snakemake.input.stores),  # noqa: F821 (one store, or its shards)
        snakemake.output.csv,  # noqa: F821
        views=tuple(snakemake.params.views),  # noqa: F821
        epochs=s["epochs"],
        lr=s["lr"],
        seeds=tuple(s["seeds"]),
        val_fraction=s["val_fraction"],
        standardize=s["standardize"],
        n_train=s["n_train"],
        device=run["device"] if claims else resolve_device(run["device"], key="execution.probes.device"),
        max_batch_bytes=int(run["max_batch_gib"] * 2**30),
        matmul_precision=s["matmul_precision"],
        prompt_path=snakemake.input.prompts,  # noqa: F821
    )
