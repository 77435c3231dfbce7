"""Run the Triton causal conv + SiLU kernel in Triton's CPU interpreter against float64 (a script,
not a test module; see ``interpret_scan.py`` for how ``test_interpreted.py`` runs it and what the
exit statuses mean)."""

import sys

import torch
from interpret_common import CANNOT_CHECK, interpreter_unusable

from reprflow.kernels.causal_conv1d import causal_conv1d_silu_reference, causal_conv1d_silu_triton


def check(batch, n_tokens, channels, width, dtype, *, bias=True, mask=False, seed=0, tiled=False) -> None:
    """One call on a strided view (the in_proj output's first half), against the float64 reference."""
    g = torch.Generator().manual_seed(seed)
    xz = torch.randn(batch, n_tokens, 2 * channels + 8, generator=g).to(dtype)
    x = xz[..., :channels]
    w = torch.randn(channels, width, generator=g).to(dtype)
    b = torch.randn(channels, generator=g).to(dtype) if bias else None
    m = None
    if mask:
        m = torch.ones(batch, n_tokens, dtype=torch.long)
        m[0, n_tokens // 2 :] = 0
    want = causal_conv1d_silu_reference(x.double(), w.double(), None if b is None else b.double(), mask=m)
    got = causal_conv1d_silu_triton(x, w, b, mask=m, tiled=tiled)
    assert got.dtype == dtype and got.shape == x.shape and got.is_contiguous()
    rel = float((got.double() - want).norm() / want.norm())
    bound = 1e-2 if dtype == torch.bfloat16 else 1e-6
    assert rel < bound, (batch, n_tokens, channels, width, dtype, tiled, rel)
    if mask:
        assert torch.all(got[0, n_tokens // 2 :] == 0)


def main() -> int:
    why = interpreter_unusable()
    if why:
        print(why)
        return CANNOT_CHECK
    # tokens (32 per block): a partial last block, fewer than one block, several blocks; channels
    # (512 per block): fewer than a block, two whole blocks, two plus a partial one; widths 4
    # (Mamba's), 2 and 3
    check(2, 77, 200, 4, torch.float32, mask=True)
    check(1, 5, 40, 4, torch.float32, bias=False)
    check(1, 130, 1024, 4, torch.float32)
    check(1, 70, 1100, 3, torch.float32, mask=True)
    check(2, 66, 48, 2, torch.float32)
    check(2, 100, 64, 4, torch.bfloat16)
    # the tiled kernel (64 tokens x 128 channels per program): the same cases
    check(2, 77, 200, 4, torch.float32, mask=True, tiled=True)
    check(1, 5, 40, 4, torch.float32, bias=False, tiled=True)
    check(1, 130, 1024, 4, torch.float32, tiled=True)
    check(1, 70, 1100, 3, torch.float32, mask=True, tiled=True)
    check(2, 66, 48, 2, torch.float32, tiled=True)
    check(2, 100, 64, 4, torch.bfloat16, tiled=True)
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
