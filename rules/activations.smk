# Phase 2: per-layer activations (residual stream, L+2 states) into one Zarr store per cell,
# or into `execution.extraction.shards` shard stores per cell, one job (and GPU) each.
# A killed job leaves <store>.zarr.partial behind; the rerun resumes it.
#
# Params are the science keys only (config.extraction, the model and init entries, the seed) and
# the digest of the code the job runs:
# config.execution (batch size, device, GPUs, shards) and the model's position in `models:`
# are read by the job from the config and never trigger a rerun.
#
# extraction.tokens: stream -- the extraction job also writes the cell's token-metric files
# (TOKEN_METRICS, the files of the token_metrics rule, which then does not exist), so the
# config.metrics section is one of its params; stores get no token states. Sharded: shard 0's
# job writes them (rule extract_activation_shard0), the other shards store last tokens only.

EXECUTION = CFG.execution("extraction")
TOKENS_STREAMED = CFG.section("extraction")["tokens"] == "stream"
N_SHARDS = EXECUTION["shards"]
EXTRACTION_PARAMS = dict(
    # the modules the job imports (reprflow/workflow/lineage.py); storing token states, not the streamed metrics' code
    code=code_digest("extract_activations.py", skip=() if TOKENS_STREAMED else STREAMED_METRICS_CODE),
    model=lambda w: CFG.science_model(w.model),  # train's device, threads: not params
    init=lambda w: asdict(CFG.init(w.init)),  # with `scope`: a fig3 store holds the token prompts only
    seed=CFG.seed,
    settings=CFG.section("extraction"),
    config_digest=lambda w: CFG.extraction_digest(w.model, w.init, w.task, int(w.length)),
    metrics=CFG.section("metrics") if TOKENS_STREAMED else None,
)
# the one job per cell that writes the streamed metrics: unsharded, or shard 0 (below)
STREAMED_METRICS = {"token_metrics": directory(TOKEN_METRICS)} if TOKENS_STREAMED and N_SHARDS == 1 else {}
# the store first, then the streamed metrics: one mapping, whose order snakefmt cannot change (it
# moves a `**mapping` entry ahead of named ones, which would reorder the job's outputs)
EXTRACTION_OUTPUTS = {"store": directory(ACTIVATIONS), **STREAMED_METRICS}


rule extract_activations:
    input:
        prompts=prompt_file,
        model=model_dir,
    output:
        **EXTRACTION_OUTPUTS,
    log:
        f"{LOGS}/activations/{{model}}/{{init}}/{{task}}_n{{length}}.log",
    benchmark:
        f"{BENCHMARKS}/activations/{{model}}/{{init}}/{{task}}_n{{length}}.tsv"
    params:
        **EXTRACTION_PARAMS,
        shard=None,
    # longest jobs (tokens forwarded x model size) first: no long tail at the end
    priority: lambda w: extraction_priority(CFG, w.model, w.init, w.task, w.length, N_SHARDS)
    resources:
        gpu=EXECUTION["gpus"],
        mem_mb=32000 if EXECUTION["gpus"] else 4000,
        runtime=240 if EXECUTION["gpus"] else 30,
    conda:
        "../envs/gpu.yaml" if EXECUTION["gpus"] else "../envs/cpu.yaml"
    script:
        "../workflow_scripts/extract_activations.py"


use rule extract_activations as extract_activation_shard with:
    output:
        store=directory(SHARD),
    log:
        f"{LOGS}/activations/{{model}}/{{init}}/{{task}}_n{{length}}_shard{{shard}}of{{nshards}}.log",
    benchmark:
        f"{BENCHMARKS}/activations/{{model}}/{{init}}/{{task}}_n{{length}}_shard{{shard}}of{{nshards}}.tsv"
    params:
        **EXTRACTION_PARAMS,
        shard=lambda w: (int(w.shard), int(w.nshards)),
    wildcard_constraints:
        shard=r"[1-9]\d*" if TOKENS_STREAMED else r"\d+",  # streamed: shard 0 is the rule below


if TOKENS_STREAMED and N_SHARDS > 1:

    use rule extract_activations as extract_activation_shard0 with:
        output:
            store=directory(SHARD.replace("{shard}", "0").replace("{nshards}", str(N_SHARDS))),
            token_metrics=directory(TOKEN_METRICS),
        log:
            f"{LOGS}/activations/{{model}}/{{init}}/{{task}}_n{{length}}_shard0of{N_SHARDS}.log",
        benchmark:
            f"{BENCHMARKS}/activations/{{model}}/{{init}}/{{task}}_n{{length}}_shard0of{N_SHARDS}.tsv"
        params:
            **EXTRACTION_PARAMS,
            shard=(0, N_SHARDS),


rule all_activations:
    input:
        [p for c in CELLS for p in store_paths(CFG, c.model, c.init, c.task, c.length)],
