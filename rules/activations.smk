# Phase 2: per-layer activations (residual stream, L+2 states) into one Zarr store per cell,
# or into `extraction.shards` shard stores per cell, one job (and GPU) each.
# A killed job leaves <store>.zarr.partial behind; the rerun resumes it.

EXTRACTION = CFG.section("extraction")
EXTRACTION_PARAMS = dict(
    model=lambda w: asdict(CFG.model(w.model)),
    init=lambda w: asdict(CFG.init(w.init)),
    seed=CFG.seed,
    settings=EXTRACTION,
    config_digest=lambda w: CFG.extraction_digest(w.model, w.init),
    origin=lambda w: f"config.models[{[m.name for m in CFG.models].index(w.model)}].hf_id",
)


rule extract_activations:
    input:
        prompts=prompt_file,
        model=model_dir,
    output:
        directory(ACTIVATIONS),
    log:
        "logs/activations/{model}/{init}/{task}_n{length}.log",
    benchmark:
        "logs/benchmarks/activations/{model}/{init}/{task}_n{length}.tsv"
    params:
        **EXTRACTION_PARAMS,
        shard=None,
    resources:
        gpu=EXTRACTION["gpus"],
        mem_mb=32000 if EXTRACTION["gpus"] else 4000,
        runtime=240 if EXTRACTION["gpus"] else 30,
    conda:
        "../envs/gpu.yaml" if EXTRACTION["gpus"] else "../envs/cpu.yaml"
    script:
        "../workflow_scripts/extract_activations.py"


use rule extract_activations as extract_activation_shard with:
    output:
        directory(SHARD),
    log:
        "logs/activations/{model}/{init}/{task}_n{length}_shard{shard}of{nshards}.log",
    benchmark:
        "logs/benchmarks/activations/{model}/{init}/{task}_n{length}_shard{shard}of{nshards}.tsv"
    params:
        **EXTRACTION_PARAMS,
        shard=lambda w: (int(w.shard), int(w.nshards)),


rule all_activations:
    input:
        [p for c in CELLS for p in store_paths(CFG, c.model, c.init, c.task, c.length)],
