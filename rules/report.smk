# Phase 4: tables, figures, verdicts and the report, read from results/metrics only (no model, no store).
# Products marked report(...) appear in Snakemake's HTML report (snakemake --report results/report.html),
# each with its caption from report/*.rst.
from pathlib import Path

from reprflow.workflow.targets import FINDINGS, HTML_TABLES, PAPER_COMPARISON, PROVENANCE


report: "../report/workflow.rst"


def _figure_report(path):
    """A figure with the caption of its figure number (report/fig1.rst ... report/fig7.rst)."""
    name = Path(path).stem
    number = name.split("_")[0]
    task = next((t for t in CFG.tasks if name.endswith("_" + t)), None)
    return report(
        path,
        caption=f"../report/{number}.rst",
        category="Figures",
        subcategory=task or "mean over tasks",
        labels={"figure": number, "task": task or "mean"},
    )


rule tables:
    input:
        token=cell_paths(TOKEN_METRICS),
        probes=cell_paths(PROBES, TABLE_CELLS),
    output:
        table1=report(TABLES[0], caption="../report/table1.rst", category="Tables", labels={"table": "Table 1 (csv)"}),
        table2=report(TABLES[1], caption="../report/table2.rst", category="Tables", labels={"table": "Table 2 (csv)"}),
    log:
        f"{LOGS}/report/tables.log",
    benchmark:
        f"{BENCHMARKS}/report/tables.tsv"
    params:
        code=code_digest("tables.py"),
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
        [_figure_report(p) for p in FIGURES],
    log:
        f"{LOGS}/report/figures.log",
    benchmark:
        f"{BENCHMARKS}/report/figures.tsv"
    params:
        code=code_digest("figures.py"),
        science=CFG.science(),  # the job reads the config itself; see Config.science
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/figures.py"


rule findings:
    input:
        token=cell_paths(TOKEN_METRICS),
        probes=cell_paths(PROBES, TABLE_CELLS),
    output:
        report(out(FINDINGS), caption="../report/findings.rst", category="Verdicts", labels={"table": "findings (csv)"}),
    log:
        f"{LOGS}/report/findings.log",
    benchmark:
        f"{BENCHMARKS}/report/findings.tsv"
    params:
        code=code_digest("findings.py"),
        science=CFG.science(),  # the job reads the config itself; see Config.science
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/findings.py"


rule paper_comparison:
    input:
        tables=TABLES,
    output:
        report(
            out(PAPER_COMPARISON),
            caption="../report/paper_comparison.rst",
            category="Verdicts",
            labels={"table": "paper comparison (csv)"},
        ),
    log:
        f"{LOGS}/report/paper_comparison.log",
    benchmark:
        f"{BENCHMARKS}/report/paper_comparison.tsv"
    params:
        code=code_digest("paper_comparison.py"),
        science=CFG.science(),  # the job reads the config itself; see Config.science
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/paper_comparison.py"


rule report:
    input:
        tables=TABLES,
        figures=FIGURES,
        findings=out(FINDINGS),
        paper_comparison=out(PAPER_COMPARISON),
        theory=THEORY.values(),
    output:
        report=report(REPORT, caption="../report/report_md.rst", category="Report (text)"),
        provenance=report(
            out(PROVENANCE),
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"table": "provenance (csv)"},
        ),
        findings_html=report(
            out(HTML_TABLES["findings"]),
            caption="../report/findings.rst",
            category="Verdicts",
            labels={"table": "findings (view)"},
        ),
        paper_comparison_html=report(
            out(HTML_TABLES["paper_comparison"]),
            caption="../report/paper_comparison.rst",
            category="Verdicts",
            labels={"table": "paper comparison (view)"},
        ),
        table1_html=report(
            out(HTML_TABLES["table1"]),
            caption="../report/table1.rst",
            category="Tables",
            labels={"table": "Table 1 (view)"},
        ),
        table2_html=report(
            out(HTML_TABLES["table2"]),
            caption="../report/table2.rst",
            category="Tables",
            labels={"table": "Table 2 (view)"},
        ),
        provenance_html=report(
            out(HTML_TABLES["provenance"]),
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"table": "provenance (view)"},
        ),
        theory_html=report(out(HTML_TABLES["theory"]), caption="../report/theory.rst", category="Theory check"),
    log:
        f"{LOGS}/report/report.log",
    benchmark:
        f"{BENCHMARKS}/report/report.tsv"
    params:
        code=code_digest("report.py"),
        science=CFG.science(),  # the job reads the config itself; see Config.science
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/report.py"
