"""Rule train_model: train one model of the suite and save it with save_pretrained."""

from reprflow.pipeline.runlog import workflow_step
from reprflow.training.loop import load_streams, train_model
from reprflow.training.recipe import TrainSpec

with workflow_step(snakemake.log[0], "train_model"):  # noqa: F821 (injected by Snakemake)
    smk = snakemake  # noqa: F821
    entry = next(m for m in smk.config["models"] if m["name"] == smk.wildcards.model)
    block = {**entry["train"], **smk.params.recipe}  # execution keys come from the config entry
    if block.get("threads") is None:
        block["threads"] = smk.threads
    spec = TrainSpec.from_dict(block)
    train_model(
        smk.params.family,
        spec,
        streams=load_streams(spec, smk.params.tokenizer),
        out_dir=smk.output.model,
        metrics_path=smk.output.metrics,
        summary_path=smk.output.summary,
        checkpoint_path=smk.params.checkpoint,
        positions=smk.params.positions,
    )
