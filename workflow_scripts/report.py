"""Rule report: results/report.md with tables, figures and provenance."""

from reprflow.config import validate_config
from reprflow.pipeline.report import write_report
from reprflow.pipeline.runlog import workflow_step

with workflow_step(snakemake.log[0], "report"):  # noqa: F821 (injected by Snakemake)
    write_report(validate_config(snakemake.params.config), snakemake.output[0])  # noqa: F821
