# Phase 4: tables, figures, verdicts and the report, read from results/metrics only (no model, no store).
# Products marked report(...) appear in Snakemake's HTML report (snakemake --report results/report.html),
# each with its caption from report/*.rst.
from pathlib import Path

from reprflow.pipeline.results import probe_cells, token_cells
from reprflow.workflow.targets import FINDINGS, HTML_TABLES, PROVENANCE


report: "../report/workflow.rst"


def _figure_report(path):
    """A figure with the caption of its figure number (report/fig1.rst ... report/fig7.rst)."""
    name = Path(path).stem
    number = name.split("_")[0]
    task = next((t for t in CFG.tasks if name.endswith("_" + t)), None)
    return report(path, caption=f"../report/{number}.rst", category="Figures",
                  subcategory=task or "mean over tasks", labels={"figure": number, "task": task or "mean"})


rule tables:
    input:
        token=[c.fmt(TOKEN_METRICS) for c in probe_cells(CFG)],
        probes=[c.fmt(PROBES) for c in probe_cells(CFG)],
    output:
        table1=report(TABLES[0], caption="../report/table1.rst", category="Tables", labels={"table": "Table 1 (csv)"}),
        table2=report(TABLES[1], caption="../report/table2.rst", category="Tables", labels={"table": "Table 2 (csv)"}),
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
        token=[c.fmt(TOKEN_METRICS) for c in token_cells(CFG)],
        probes=[c.fmt(PROBES) for c in probe_cells(CFG)],
    output:
        [_figure_report(p) for p in figure_files(CFG)],
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


rule findings:
    input:
        token=[c.fmt(TOKEN_METRICS) for c in token_cells(CFG)],
        probes=[c.fmt(PROBES) for c in probe_cells(CFG)],
    output:
        report(FINDINGS, caption="../report/findings.rst", category="Verdicts", labels={"table": "findings (csv)"}),
    log:
        "logs/report/findings.log",
    benchmark:
        "logs/benchmarks/report/findings.tsv"
    params:
        config=CFG.raw,
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow_scripts/findings.py"


rule report:
    input:
        tables=TABLES,
        figures=figure_files(CFG),
        findings=FINDINGS,
        theory=THEORY.values(),
    output:
        report=report(REPORT, caption="../report/report_md.rst", category="Report (text)"),
        provenance=report(PROVENANCE, caption="../report/provenance.rst", category="Provenance",
                          labels={"table": "provenance (csv)"}),
        findings_html=report(HTML_TABLES["findings"], caption="../report/findings.rst", category="Verdicts",
                             labels={"table": "findings (view)"}),
        table1_html=report(HTML_TABLES["table1"], caption="../report/table1.rst", category="Tables",
                           labels={"table": "Table 1 (view)"}),
        table2_html=report(HTML_TABLES["table2"], caption="../report/table2.rst", category="Tables",
                           labels={"table": "Table 2 (view)"}),
        provenance_html=report(HTML_TABLES["provenance"], caption="../report/provenance.rst", category="Provenance",
                               labels={"table": "provenance (view)"}),
        theory_html=report(HTML_TABLES["theory"], caption="../report/theory.rst", category="Theory check"),
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
