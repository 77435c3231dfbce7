"""Rule findings: results/findings.csv, a verdict per paper finding, arm and view."""

from reprflow.config import validate_config
from reprflow.pipeline.findings import write_findings
from reprflow.pipeline.runlog import workflow_step

with workflow_step(snakemake.log[0], "findings"):  # noqa: F821 (injected by Snakemake)
    write_findings(validate_config(snakemake.params.config), snakemake.output[0])  # noqa: F821
