"""Rule tables: results/table1.csv (mean over tasks) and table2.csv (per task)."""

from reprflow.pipeline.runlog import workflow_step
from reprflow.pipeline.tables import write_tables
from reprflow.config import validate_config

with workflow_step(snakemake.log[0], "tables"):  # noqa: F821 (injected by Snakemake)
    config = validate_config(snakemake.config)  # noqa: F821 (params.science tracks what matters)
    write_tables(config, snakemake.output.table1, snakemake.output.table2, root=config.out_dir)  # noqa: F821
