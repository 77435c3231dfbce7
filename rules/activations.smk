# Phase 2: per-layer activations (residual stream, L+2 states) into one Zarr store per cell.
# A killed job leaves <store>.partial behind; the rerun resumes it.


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
        model=lambda w: asdict(CFG.model(w.model)),
        init=lambda w: asdict(CFG.init(w.init)),
        seed=CFG.seed,
        settings=CFG.section("extraction"),
        config_digest=lambda w: CFG.extraction_digest(w.model, w.init),
        origin=lambda w: f"config.models[{[m.name for m in CFG.models].index(w.model)}].hf_id",
    resources:
        gpu=CFG.section("extraction")["gpus"],
        mem_mb=32000 if CFG.section("extraction")["gpus"] else 4000,
        runtime=240 if CFG.section("extraction")["gpus"] else 30,
    conda:
        "../envs/gpu.yaml" if CFG.section("extraction")["gpus"] else "../envs/cpu.yaml"
    script:
        "../workflow_scripts/extract_activations.py"


rule all_activations:
    input:
        cell_paths(ACTIVATIONS),
