"""Peak memory of the metrics against their input, measured in a fresh process.

Each check runs the calls in a subprocess (``ru_maxrss`` is a process-wide high-water
mark) on a float32 prompt and compares the peak resident memory above the baseline
(input made, libraries warm) with the input's size. Blocks of 128 KiB and more are
mapped and unmapped one by one (glibc ``MALLOC_MMAP_THRESHOLD_``), as the large blocks of
a paper-size prompt are, so heap fragmentation does not blur the measure. ``CHUNK_BYTES``
is set to 2 MiB there, so a chunked computation shows a flat profile at a shape that runs
in seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np

import reprflow.metrics as M
from reprflow.metrics._arrays import as_tensor

_PROBE = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np
    import torch
    import reprflow.metrics as M
    from reprflow.metrics import _arrays

    torch.set_num_threads(1)
    shape, calls = json.loads(sys.argv[1])
    _arrays.CHUNK_BYTES = 2**21
    H = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    for call in calls:  # warm: lazy imports and allocator pools, on a tiny prompt
        eval(call, {"M": M, "H": H[:, :8, :16].copy()})
    def rss():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    base = rss()
    peaks = {}
    for call in calls:
        eval(call, {"M": M, "H": H})
        peaks[call] = rss() - base
    print(json.dumps({"input": H.nbytes, "peaks": peaks}))
    """
)


def _extra_memory(shape: tuple[int, int, int], calls: list[str]) -> tuple[int, dict[str, int]]:
    """Input bytes and, after each call in order, the process's peak RSS above the baseline."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps([shape, calls])],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["input"], result["peaks"]


def test_cka_matrix_input_check_makes_no_float64_copy_of_the_prompt():
    # The finiteness check summed the float32 prompt with dtype=float64, which on the CPU
    # first copies it to float64 (2x the input; 5.5 GB at (66, 4096, 2560)).
    size, peaks = _extra_memory((66, 128, 1024), ["M.cka_matrix(H)"])
    assert peaks["M.cka_matrix(H)"] < 0.8 * size, (size, peaks)


_ONE_SHOT = [
    "M.layerwise_cosine(H)",
    "M.binned_layerwise_cosine(H)",
    "M.inter_token_cosine(H)",
    "M.smoothness(H)",
    "M.stability(H)",
    "M.mean_state_rms(H)",
]


def test_one_shot_metrics_work_in_token_chunks():
    # They cast the whole prompt to float64 and built several float64 temporaries of it:
    # 2x to 6x the float32 input (up to 16 GB at (66, 4096, 2560)). Now a few chunks.
    size, peaks = _extra_memory((66, 256, 1024), _ONE_SHOT)
    assert max(peaks.values()) < 0.5 * size, (size, peaks)


def test_cka_matrix_stays_within_its_block_budget():
    # The diagonal square of each Gram row block was copied out of the block (reshape of a
    # strided view), up to a second block_bytes; it is now a contiguous part of the block.
    budget = 8 * 66 * 256 * 200  # 200 of 256 rows per block: a 21 MB square
    size, peaks = _extra_memory((66, 256, 512), [f"M.cka_matrix(H, block_bytes={budget})"])
    assert max(peaks.values()) < 1.3 * budget, (size, budget, peaks)


def test_read_only_input_is_shared_not_copied(tmp_path):
    # as_tensor copied a non-writable array whole (np.load(mmap_mode="r") of a (66, 4096,
    # 2560) float32 prompt: 2.8 GB) because torch.from_numpy warns on it; now it shares it.
    np.save(tmp_path / "h.npy", np.random.default_rng(0).standard_normal((3, 16, 8), dtype=np.float32))
    h = np.load(tmp_path / "h.npy", mmap_mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = as_tensor(h, name="H", ndim=3, cast=False)
        cos = M.layerwise_cosine(h)
    assert t.data_ptr() == h.ctypes.data
    np.testing.assert_array_equal(cos, M.layerwise_cosine(np.array(h)))
