"""benchmarks/kernels.py runs end to end at toy size on CPU and prints its table last."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_cpu_run_prints_the_table(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "kernels.py"),
        "--quick",
        "--device",
        "cpu",
        "--families",
        "mamba",
        "--tokens",
        "16",
        "--batches",
        "1",
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (tmp_path / "kernels.md").read_text()
    assert proc.stdout.rstrip().endswith(table.rstrip().splitlines()[-1])  # the table is printed last
    for family in ("mamba",):
        for path in ("hf naive", "hf best", "reprflow (no compiled)", "reprflow"):
            assert f"| {family} | {path} |" in table
    assert "| mamba_scan | torch |" in table and "| causal_conv | torch |" in table
    assert "132 SMs x 16 SFU/clk x 1.98 GHz" in table
