"""Rule tables: results/table1.csv (mean over tasks) and table2.csv (per task)."""

from reprflow.pipeline.runlog import workflow_step
from reprflow.pipeline.tables import write_tables
from reprflow.config import validate_config

with workflow_step(snakemake.log[0], "tables"):  # noqa: F821 (injected by Snakemake)
    write_tables(validate_config(snakemake.params.config), snakemake.output.table1, snakemake.output.table2)  # noqa: F821
