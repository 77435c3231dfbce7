# Theory check (paper §4, Appendix A): Monte Carlo vs closed forms of the stability theorems.


rule theory:
    output:
        **THEORY,
    log:
        f"{LOGS}/theory/theory.log",
    benchmark:
        f"{BENCHMARKS}/theory/theory.tsv"
    params:
        settings=CFG.section("theory"),
    resources:
        gpu=CFG.execution("theory")["gpus"],
        mem_mb=16000,
        runtime=60,
    conda:
        "../envs/gpu.yaml" if CFG.execution("theory")["gpus"] else "../envs/cpu.yaml"
    script:
        "../workflow_scripts/theory.py"


rule all_theory:
    input:
        THEORY.values(),
