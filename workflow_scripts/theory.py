"""Rule theory: Monte Carlo check of the paper's stability theorems (§4, Appendix A)."""

from pathlib import Path

from reprflow.pipeline.runlog import workflow_step
from reprflow.pipeline.theory_stage import run_theory

with workflow_step(snakemake.log[0], "theory"):  # noqa: F821 (injected by Snakemake)
    settings = {k: v for k, v in snakemake.params.settings.items() if k != "gpus"}  # noqa: F821
    run_theory(Path(snakemake.output.stability).parent, **settings)  # noqa: F821
