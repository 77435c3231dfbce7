"""benchmarks/cuda_graphs.py: its table states each graph's gain or why the capture failed, and it
refuses to run without a CUDA GPU (graphs are a CUDA feature) with one clear error."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import cuda_graphs  # noqa: E402


def test_table_gives_the_median_gain_or_the_capture_error():
    rows = [
        {
            "model": "mamba-2.8b",
            "tokens": 2048,
            "batch": 32,
            "eager": [100.0, 90.0, 110.0],
            "graph": [99.0, 103.0, 101.0],
            "error": "",
        },
        {
            "model": "pythia-2.8b",
            "tokens": 2048,
            "batch": 16,
            "eager": [50.0],
            "graph": [],
            "error": "RuntimeError: boom",
        },
    ]
    text = cuda_graphs.table(rows, "test GPU")
    lines = text.splitlines()
    assert "test GPU" in lines[0]
    # medians 100 and 101: +1.00%; ranges as min-max
    assert "| mamba-2.8b | 2048 x 32 | 100 (90-110) | 101 (99-103) | +1.00% |" in lines
    assert "| pythia-2.8b | 2048 x 16 | 50 (50-50) | - | capture failed: RuntimeError: boom |" in lines


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_refuses_without_a_cuda_gpu(capsys):
    with pytest.raises(SystemExit) as exc:
        cuda_graphs.main(["--families", "mamba"])
    assert exc.value.code == 2
    assert "CUDA graphs need a CUDA GPU" in capsys.readouterr().err
