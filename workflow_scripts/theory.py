"""Rule theory: Monte Carlo check of the paper's stability theorems (§4, Appendix A)."""

from pathlib import Path

from reprflow.config import validate_config
from reprflow.pipeline.runlog import workflow_step
from reprflow.pipeline.theory_stage import run_theory

with workflow_step(snakemake.log[0], "theory"):  # noqa: F821 (injected by Snakemake)
    run = validate_config(snakemake.config).execution("theory")  # noqa: F821 (not a param)
    settings = {**snakemake.params.settings, "device": run["device"], "threads": run["threads"]}  # noqa: F821
    run_theory(Path(snakemake.output.stability).parent, **settings)  # noqa: F821
