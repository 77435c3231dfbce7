"""Helpers to run the real Snakemake workflow in a scratch copy of the project."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reprflow.config import PROJECT_ROOT

LINKED = ("Snakefile", "rules", "workflow_scripts", "reprflow", "config", "data/tokenizers", "data/lost_in_the_middle")


def make_workdir(dest: Path) -> Path:
    """A scratch project: code and inputs linked from the checkout, outputs local."""
    for rel in LINKED:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(PROJECT_ROOT / rel)
    return dest


def snakemake(workdir: Path, *args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=str(PROJECT_ROOT))
    exe = Path(sys.executable).with_name("snakemake")
    return subprocess.run([str(exe), *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def workdir(tmp_path) -> Path:
    return make_workdir(tmp_path / "project")


@pytest.fixture()
def run_snakemake():
    """``run_snakemake(workdir, *args)``: the real snakemake CLI, offline."""
    return snakemake
