"""Rule custom_prompts: a custom task's prompt set from its JSONL file (config.custom_tasks)."""

from reprflow.pipeline.prompt_stage import build_custom_prompt_file
from reprflow.pipeline.runlog import workflow_step

with workflow_step(snakemake.log[0], "custom_prompts"):  # noqa: F821 (injected by Snakemake)
    w, spec = snakemake.wildcards, snakemake.params.spec  # noqa: F821
    if int(w.length) != spec["length"]:
        from reprflow.errors import ConfigError

        raise ConfigError(
            f"custom task {w.task} runs at its length {spec['length']} only "
            f"(config.custom_tasks.{w.task}.length), not at {w.length}"
        )
    build_custom_prompt_file(
        snakemake.output.prompts,  # noqa: F821
        task=w.task,
        spec=spec,
        tokenizer=w.tokenizer,
        max_tokens=snakemake.params.max_tokens,  # noqa: F821
    )
