# Phase 4: tables, figures and the report, read from results/metrics only (no model, no store).


rule tables:
    input:
        token=cell_paths(TOKEN_METRICS),
        probes=cell_paths(PROBES),
    output:
        table1=TABLES[0],
        table2=TABLES[1],
    log:
        "logs/report/tables.log",
    benchmark:
        "logs/benchmarks/report/tables.tsv"
    params:
        config=CFG.raw,
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/tables.py"


rule figures:
    input:
        token=cell_paths(TOKEN_METRICS),
        probes=cell_paths(PROBES),
    output:
        figure_files(CFG),
    log:
        "logs/report/figures.log",
    benchmark:
        "logs/benchmarks/report/figures.tsv"
    params:
        config=CFG.raw,
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/figures.py"


rule report:
    input:
        tables=TABLES,
        figures=figure_files(CFG),
        theory=THEORY.values(),
    output:
        REPORT,
    log:
        "logs/report/report.log",
    benchmark:
        "logs/benchmarks/report/report.tsv"
    params:
        config=CFG.raw,
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/report.py"
