"""Rule paper_comparison: results/paper_comparison.csv, Tables 1-2 against the paper's printed numbers."""

from reprflow.config import validate_config
from reprflow.pipeline.paper_comparison import write_paper_comparison
from reprflow.pipeline.runlog import workflow_step

with workflow_step(snakemake.log[0], "paper_comparison"):  # noqa: F821 (injected by Snakemake)
    config = validate_config(snakemake.config)  # noqa: F821 (params.science tracks what matters)
    tables = snakemake.input.tables  # noqa: F821
    write_paper_comparison(config, tables[0], tables[1], snakemake.output[0])  # noqa: F821
