# Phase 2: per-layer activations (residual stream, L+2 states) into one Zarr store per cell,
# or into `execution.extraction.shards` shard stores per cell, one job (and GPU) each.
# A killed job leaves <store>.zarr.partial behind; the rerun resumes it.
#
# Params are the science keys only (config.extraction, the model and init entries, the seed):
# config.execution (batch size, device, GPUs, shards) and the model's position in `models:`
# are read by the job from the config and never trigger a rerun.

EXECUTION = CFG.execution("extraction")
EXTRACTION_PARAMS = dict(
    model=lambda w: asdict(CFG.model(w.model)),
    init=lambda w: {k: v for k, v in asdict(CFG.init(w.init)).items() if k != "scope"},  # scope: cells only
    seed=CFG.seed,
    settings=CFG.section("extraction"),
    config_digest=lambda w: CFG.extraction_digest(w.model, w.init),
)


rule extract_activations:
    input:
        prompts=prompt_file,
        model=model_dir,
    output:
        directory(ACTIVATIONS),
    log:
        f"{LOGS}/activations/{{model}}/{{init}}/{{task}}_n{{length}}.log",
    benchmark:
        f"{BENCHMARKS}/activations/{{model}}/{{init}}/{{task}}_n{{length}}.tsv"
    params:
        **EXTRACTION_PARAMS,
        shard=None,
    # longest jobs (model size x length: hidden² x layers x length) first: no long tail at the end
    priority: lambda w: extraction_priority(CFG, w.model, w.length)
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
        directory(SHARD),
    log:
        f"{LOGS}/activations/{{model}}/{{init}}/{{task}}_n{{length}}_shard{{shard}}of{{nshards}}.log",
    benchmark:
        f"{BENCHMARKS}/activations/{{model}}/{{init}}/{{task}}_n{{length}}_shard{{shard}}of{{nshards}}.tsv"
    params:
        **EXTRACTION_PARAMS,
        shard=lambda w: (int(w.shard), int(w.nshards)),


rule all_activations:
    input:
        [p for c in CELLS for p in store_paths(CFG, c.model, c.init, c.task, c.length)],
