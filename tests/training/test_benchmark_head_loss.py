"""benchmarks/head_loss.py runs on the CPU at toy size and prints one row per head, all with the same loss."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_cpu_run_prints_the_table_with_equal_losses():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "head_loss.py"),
        "--device",
        "cpu",
        "--tokens",
        "256",
        "--width",
        "32",
        "--vocab",
        "300",
        "--chunks",
        "64",
        "256",
        "--repeats",
        "1",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in proc.stdout.splitlines() if line.startswith("| ") and "---" not in line][
        1:
    ]
    assert [r[0].strip() for r in rows] == [
        "naive (autocast logits, F.cross_entropy on float32)",
        "chunked 64",
        "chunked 256",
    ]
    losses = {round(float(r[-1]), 4) for r in rows}
    assert len(losses) == 1 and all(float(r[1]) > 0 for r in rows)
