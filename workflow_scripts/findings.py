"""Rule findings: results/findings.csv, a verdict per paper finding, arm and view."""

from reprflow.config import validate_config
from reprflow.pipeline.findings import write_findings
from reprflow.pipeline.runlog import workflow_step

with workflow_step(snakemake.log[0], "findings"):  # noqa: F821 (injected by Snakemake)
    config = validate_config(snakemake.config)  # noqa: F821 (params.science tracks what matters)
    write_findings(config, snakemake.output[0], root=config.out_dir)  # noqa: F821
