"""Rule report: results/report.md with tables, figures and provenance."""

from reprflow.config import validate_config
from reprflow.pipeline.report import write_report
from reprflow.pipeline.runlog import workflow_step

with workflow_step(snakemake.log[0], "report"):  # noqa: F821 (injected by Snakemake)
    config = validate_config(snakemake.config)  # noqa: F821 (params.science tracks what matters)
    write_report(config, snakemake.output[0], root=config.out_dir)  # noqa: F821
