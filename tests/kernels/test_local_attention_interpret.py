"""The Triton sliding-window attention kernel, run on the CPU in Triton's interpreter against
float64 (tests/kernels/interpret_local_attention.py, in a subprocess so that
``TRITON_INTERPRET=1`` is set before Triton loads). Skipped where Triton is not installed
(CPU CI) or where its interpreter cannot run loops under the installed numpy."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs Triton (its CPU interpreter)")
def test_local_attention_kernel_in_the_triton_interpreter_matches_float64():
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "PYTHONPATH": path, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "kernels" / "interpret_local_attention.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode == 77:
        pytest.skip(proc.stdout.strip())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")
