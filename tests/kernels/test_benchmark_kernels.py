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


def test_batch_tokens_quick_cpu_run_times_every_shape_in_one_table(tmp_path):
    """benchmarks/batch_tokens.py: one row per (family, shape), both passes, Mamba-1's scan per shape."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "batch_tokens.py"), "--quick", "--device", "cpu"]
    cmd += ["--families", "mamba", "--shapes", "16x2", "8x4", "--batches", "1", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (tmp_path / "batch_tokens.md").read_text()
    assert proc.stdout.rstrip().endswith(table.rstrip().splitlines()[-1])
    for tokens, batch in ((16, 2), (8, 4)):
        assert f"| mamba | {tokens} | {batch} | 32 |" in table
        assert f"| {tokens} x {batch} | mamba_scan | torch |" in table
    assert proc.stdout.count("  mamba   ") == 4  # two shapes, two passes


def test_batch_tokens_refuses_a_malformed_shape():
    cmd = [sys.executable, str(ROOT / "benchmarks" / "batch_tokens.py"), "--shapes", "4096by8"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "shape '4096by8': write TOKENSxBATCH" in proc.stderr
