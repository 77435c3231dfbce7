"""benchmarks/streams.py: how it cuts a pass into micro-batches, how its table states each variant's
gain against the whole pass on one stream, and its one clear error without a CUDA GPU."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import streams  # noqa: E402


def test_micro_batches_cover_every_prompt_once_in_order():
    ids = torch.arange(10 * 3).reshape(10, 3)
    parts = streams.micro_batches(ids, 4)
    assert [p.shape[0] for p in parts] == [3, 3, 2, 2]
    assert torch.equal(torch.cat(parts), ids)
    with pytest.raises(ValueError, match="cannot cut 10 prompts into 11"):
        streams.micro_batches(ids, 11)


def test_table_gives_each_variants_gain_against_one_stream():
    rows = [
        {"model": "m", "tokens": 2048, "batch": 32, "variant": "one stream", "rates": [100.0, 98.0, 102.0]},
        {"model": "m", "tokens": 2048, "batch": 32, "variant": "2 streams", "rates": [99.0, 97.0, 98.0]},
    ]
    lines = streams.table(rows, "test GPU").splitlines()
    assert "| m | 2048 x 32 | one stream | 100 (98-102) |  |" in lines
    assert "| m | 2048 x 32 | 2 streams | 98 (97-99) | -2.00% |" in lines


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_refuses_without_a_cuda_gpu(capsys):
    with pytest.raises(SystemExit) as exc:
        streams.main([])
    assert exc.value.code == 2
    assert "CUDA streams need a CUDA GPU" in capsys.readouterr().err
