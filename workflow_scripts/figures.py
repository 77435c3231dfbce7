"""Rule figures: Fig. 1, 2, 3, 4 and 7, averaged over tasks and per task."""

import contextlib
import os

from reprflow.config import validate_config
from reprflow.pipeline.figures import write_figures
from reprflow.pipeline.runlog import workflow_step

with workflow_step(snakemake.log[0], "figures"):  # noqa: F821 (injected by Snakemake)
    config = validate_config(snakemake.config)  # noqa: F821 (params.science tracks what matters)
    paths = [os.path.relpath(p, config.out_dir) for p in snakemake.output]  # noqa: F821
    with contextlib.chdir(config.out_dir):  # write_figures reads results/ relative to the output root
        write_figures(config, paths)
