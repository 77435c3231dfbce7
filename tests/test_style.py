"""The house style, checked by the pinned tools with the settings in pyproject.toml: ruff's lint
rules, ruff's formatter and snakefmt (Snakefile and rules/). A failure prints the tool's report."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "cmd",
    [["ruff", "check", "."], ["ruff", "format", "--check", "."], ["snakefmt", "--check", "Snakefile", "rules"]],
    ids=["ruff-check", "ruff-format", "snakefmt"],
)
def test_style(cmd):
    tool = BIN / cmd[0]
    assert tool.is_file(), f"{tool} missing: install the pinned requirements (bash scripts/setup_env.sh)"
    proc = subprocess.run([str(tool), *cmd[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
