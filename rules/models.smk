# Tiny demo models: built from configs and saved with save_pretrained, then loaded like hub models.


rule build_tiny_model:
    output:
        directory(MODELS),
    log:
        f"{LOGS}/models/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/models/{{model}}.tsv"
    params:
        code=code_digest("build_tiny_model.py"),
        family=lambda w: CFG.model(w.model).family,
        tiny=lambda w: CFG.model(w.model).tiny,
    priority: GATE_PRIORITY
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/build_tiny_model.py"


rule all_models:
    input:
        [m.hf_id for m in CFG.models if m.tiny is not None],
