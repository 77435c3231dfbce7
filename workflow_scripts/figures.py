"""Rule figures: Fig. 1, 2, 3, 4 and 7, averaged over tasks and per task."""

from reprflow.config import validate_config
from reprflow.pipeline.figures import write_figures
from reprflow.pipeline.runlog import workflow_step

with workflow_step(snakemake.log[0], "figures"):  # noqa: F821 (injected by Snakemake)
    write_figures(validate_config(snakemake.params.config), list(snakemake.output))  # noqa: F821
