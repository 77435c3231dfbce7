# Theory check (paper §4, Appendix A): Monte Carlo vs closed forms of the stability theorems.


rule theory:
    output:
        stability=THEORY[0],
        depth=THEORY[1],
        figure=THEORY[2],
        verdict=THEORY[3],
    log:
        "logs/theory/theory.log",
    benchmark:
        "logs/benchmarks/theory/theory.tsv"
    params:
        settings=CFG.section("theory"),
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/theory.py"
