# Phase 4: tables, figures and the report, read from results/metrics only (no model, no store).


rule tables:
    input:
        token=cell_paths(TOKEN_METRICS),
        probes=cell_paths(PROBES, TABLE_CELLS),
    output:
        table1=TABLES[0],
        table2=TABLES[1],
    log:
        f"{LOGS}/report/tables.log",
    benchmark:
        f"{BENCHMARKS}/report/tables.tsv"
    params:
        science=CFG.science(),  # the job reads the config itself; see Config.science
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/tables.py"


rule figures:
    input:
        token=cell_paths(TOKEN_METRICS),
        probes=cell_paths(PROBES, TABLE_CELLS),
    output:
        FIGURES,
    log:
        f"{LOGS}/report/figures.log",
    benchmark:
        f"{BENCHMARKS}/report/figures.tsv"
    params:
        science=CFG.science(),  # the job reads the config itself; see Config.science
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/figures.py"


rule report:
    input:
        tables=TABLES,
        figures=FIGURES,
        theory=THEORY.values(),
    output:
        REPORT,
    log:
        f"{LOGS}/report/report.log",
    benchmark:
        f"{BENCHMARKS}/report/report.tsv"
    params:
        science=CFG.science(),  # the job reads the config itself; see Config.science
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/report.py"
