# Theory check (paper §4, Appendix A): the paper's Theorems 1-6 as stated (theorems.csv, ...)
# and the project's extensions (stability.csv, ...); docs/theory.md.

_THEORY_REPORTED = {
    "theorems": "captions/theory_theorems.rst",
    "verdict": "captions/theory_verdict.rst",
    "figure": "captions/theory_figure.rst",
}


rule theory:
    output:
        **{
            key: (
                report(path, caption=_THEORY_REPORTED[key], category="Theory check")
                if key in _THEORY_REPORTED
                else path
            )
            for key, path in THEORY.items()
        },
    log:
        f"{LOGS}/theory/theory.log",
    benchmark:
        f"{BENCHMARKS}/theory/theory.tsv"
    params:
        code=code_digest("theory.py"),
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
