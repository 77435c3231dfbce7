"""The project's Triton kernels, run on the CPU in Triton's interpreter against float64 or
transformers (one ``tests/kernels/interpret_*.py`` script each, in a subprocess so that
``TRITON_INTERPRET=1`` is set before Triton loads). Skipped where Triton is not installed
(CPU CI) or where its interpreter cannot run loops under the installed numpy (exit 77)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs Triton (its CPU interpreter)")
@pytest.mark.parametrize(
    "script",
    [
        "interpret_scan.py",  # the selective scan and its softplus/SiLU helpers
        "interpret_conv.py",  # the causal conv + SiLU
        "interpret_local_attention.py",  # GPT-Neo's sliding-window attention
        "interpret_rotary.py",  # GPT-NeoX's rotary embedding of q and k
        "interpret_ssd_states.py",  # Mamba-2's SSD chunk states passed between chunks
        "interpret_gated_norm.py",  # Mamba-2's gated RMSNorm, whole-row and chunked
    ],
)
def test_kernel_in_the_triton_interpreter(script):
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "PYTHONPATH": path, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, str(HERE / script)], env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode == 77:
        pytest.skip(proc.stdout.strip())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")
