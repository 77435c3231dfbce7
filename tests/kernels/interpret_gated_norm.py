"""Run Mamba-2's gated RMSNorm kernels (the whole-row one, the chunked one and the held one) in Triton's CPU
interpreter against transformers' arithmetic (a script, not a test module; see
``interpret_scan.py`` for how ``test_interpreted.py`` runs it and what the exit statuses mean)."""

import sys

import torch
from interpret_common import CANNOT_CHECK, interpreter_unusable

from reprflow.kernels.gated_rms_norm import (
    _gated_rms_norm_chunked_kernel,
    _gated_rms_norm_held_kernel,
    _gated_rms_norm_kernel,
    gated_rms_norm_reference,
)


def check(rows, channels, group_size, chunk, seed=0) -> None:
    """float32, z a strided slice (as in the mixer): both kernels against the reference."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, channels, generator=g)
    z = torch.randn(rows, 2 * channels + 8, generator=g)[:, :channels]
    w = 1 + 0.1 * torch.randn(channels, generator=g)
    want = gated_rms_norm_reference(x, z, w, eps=1e-5, group_size=group_size)
    grid = (rows, channels // group_size)
    row = torch.empty_like(x)
    block = 1 << (group_size - 1).bit_length()
    _gated_rms_norm_kernel[grid](x, z, w, row, group_size, 1e-5, x.stride(0), z.stride(0), row.stride(0), BLOCK=block)
    chunked = torch.empty_like(x)
    _gated_rms_norm_chunked_kernel[grid](
        x, z, w, chunked, group_size, 1e-5, x.stride(0), z.stride(0), chunked.stride(0),
        BLOCK=chunk, CHUNKS=-(-group_size // chunk),
    )  # fmt: skip
    held = {}
    for n_held in (1, 2):  # rows per program: 2 leaves the last program half empty when rows is odd
        held[n_held] = torch.empty_like(x)
        _gated_rms_norm_held_kernel[(-(-rows // n_held), channels // group_size)](
            x, z, w, held[n_held], rows, group_size, 1e-5, x.stride(0), z.stride(0), x.stride(0),
            BLOCK=chunk, CHUNKS=-(-group_size // chunk), ROWS=n_held,
        )  # fmt: skip
    for name, got in (("row", row), ("chunked", chunked), ("held 1", held[1]), ("held 2", held[2])):
        rel = float((got.double() - want.double()).norm() / want.double().norm())
        assert rel < 1e-6, (name, rows, channels, group_size, chunk, rel)


def main() -> int:
    why = interpreter_unusable()
    if why:
        print(why)
        return CANNOT_CHECK
    # Mamba2-2.7B's group (5120 = 5 x 1024); two groups of 768 in blocks of 256 (3 per group); a
    # group smaller than one block; a last block only partly inside the group
    check(3, 5120, 5120, 1024)
    check(2, 1536, 768, 256)
    check(2, 96, 96, 256)
    check(2, 1300, 1300, 512)
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
