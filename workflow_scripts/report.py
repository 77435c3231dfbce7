"""Rule report: results/report.md (verdicts, tables, figures, provenance), results/provenance.csv and
the HTML pages of the tables (results/html/*.html) shown in Snakemake's HTML report."""

from reprflow.config import validate_config
from reprflow.pipeline.report import write_html_tables, write_provenance, write_report
from reprflow.pipeline.runlog import workflow_step
from reprflow.workflow.targets import HTML_TABLES

with workflow_step(snakemake.log[0], "report"):  # noqa: F821 (injected by Snakemake)
    config = validate_config(snakemake.config)  # noqa: F821 (params.science tracks what matters)
    write_report(config, snakemake.output.report, root=config.out_dir)  # noqa: F821
    write_provenance(config, snakemake.output.provenance, root=config.out_dir)  # noqa: F821
    write_html_tables(config, {k: snakemake.output[f"{k}_html"] for k in HTML_TABLES}, root=config.out_dir)  # noqa: F821
