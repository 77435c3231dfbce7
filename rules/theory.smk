# Theory check (paper §4, Appendix A): Monte Carlo vs closed forms of the stability theorems.


rule theory:
    output:
        **{k: report(v, caption="../report/theory.rst", category="Theory check") for k, v in THEORY.items()},
    log:
        "logs/theory/theory.log",
    benchmark:
        "logs/benchmarks/theory/theory.tsv"
    params:
        settings=CFG.section("theory"),
    resources:
        gpu=CFG.section("theory").get("gpus", 0),
        mem_mb=16000,
        runtime=60,
    conda:
        "../envs/gpu.yaml" if CFG.section("theory").get("gpus", 0) else "../envs/cpu.yaml"
    script:
        "../workflow_scripts/theory.py"


rule all_theory:
    input:
        THEORY.values(),
