"""Shared by the ``interpret_*.py`` scripts: can Triton's CPU interpreter run loops here?

The scripts run in a subprocess with ``TRITON_INTERPRET=1`` (``tests/kernels/test_interpreted.py``);
this module is imported from their own directory. Exit status 77 means "cannot check here".
"""

import numpy as np
import torch
import triton
import triton.language as tl

CANNOT_CHECK = 77


@triton.jit
def _probe(x_ptr, n):
    for i in tl.range(0, n):
        tl.store(x_ptr + i, i)


def interpreter_unusable() -> str | None:
    """Why this Triton's interpreter cannot run a loop with a run-time bound, or None.

    Triton 3.6 under numpy >= 2.4 fails on ``int()`` of a 1-element array; Triton 3.8+ works.
    """
    x = torch.zeros(3, dtype=torch.int32)
    try:
        _probe[(1,)](x, 3)
    except Exception as exc:  # noqa: BLE001 - the known interpreter incompatibility
        if "0-dimensional" in str(exc) or "length-1" in str(exc):
            return f"interpreter unusable: triton {triton.__version__}, numpy {np.__version__}: {exc}"
        raise
    return None
