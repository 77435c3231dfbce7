"""Rule report: results/report.md (verdicts, tables, figures, provenance) and results/provenance.csv."""

from reprflow.config import validate_config
from reprflow.pipeline.report import write_provenance, write_report
from reprflow.pipeline.runlog import workflow_step

with workflow_step(snakemake.log[0], "report"):  # noqa: F821 (injected by Snakemake)
    config = validate_config(snakemake.params.config)  # noqa: F821
    write_report(config, snakemake.output.report)  # noqa: F821
    write_provenance(config, snakemake.output.provenance)  # noqa: F821
