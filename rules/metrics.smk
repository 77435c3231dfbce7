# Phase 3a: token metrics per store: layerwise and inter-token cosine, CKA, Sm and St, both views.
# With extraction.tokens: stream the extraction job writes these files (rules/activations.smk)
# and this rule does not exist, so no output has two producers.

if not TOKENS_STREAMED:

    rule token_metrics:
        input:
            cell_stores,
        output:
            directory(TOKEN_METRICS),
        log:
            f"{LOGS}/metrics/{{model}}/{{init}}/{{task}}_n{{length}}.log",
        benchmark:
            f"{BENCHMARKS}/metrics/{{model}}/{{init}}/{{task}}_n{{length}}.tsv"
        params:
            code=code_digest("token_metrics.py"),
            settings=CFG.section("metrics"),  # science keys only; config.execution.metrics is read by the job
        resources:
            mem_mb=8000,
            runtime=60,
        conda:
            "../envs/cpu.yaml"
        script:
            "../workflow_scripts/token_metrics.py"
