"""Rule prompts: one KVPR or MDQA prompt set, sized with the model family's tokenizer."""

from reprflow.pipeline.prompt_stage import build_prompt_file
from reprflow.pipeline.runlog import workflow_step

with workflow_step(snakemake.log[0], "prompts"):  # noqa: F821 (injected by Snakemake)
    w, settings = snakemake.wildcards, snakemake.params.settings  # noqa: F821
    build_prompt_file(
        snakemake.output.prompts,  # noqa: F821
        task=w.task,
        length=int(w.length),
        tokenizer=w.tokenizer,
        seed=snakemake.params.seed,  # noqa: F821
        settings=settings,
        max_tokens=snakemake.params.max_tokens,  # noqa: F821
    )
