"""Run the fused SSD chunk-state + state-passing kernel in Triton's CPU interpreter against float64
(a script, not a test module; see ``interpret_scan.py`` for how ``test_interpreted.py`` runs it and
what the exit statuses mean)."""

import sys

import torch
from interpret_common import CANNOT_CHECK, interpreter_unusable

from reprflow.kernels.ssd_states import chunk_states_passed, chunk_states_reference


def check(batch, n_tokens, heads, head_dim, groups, d_state, chunk, dtype, *, block_k=32, seed=0) -> None:
    """One call with x and B as strided views of one tensor (as the Mamba-2 mixer passes them)."""
    g = torch.Generator().manual_seed(seed)
    n_chunks = -(-n_tokens // chunk)
    xbc = torch.randn(batch, n_tokens, heads * head_dim + groups * d_state + 8, generator=g).to(dtype)
    x = xbc[..., : heads * head_dim].view(batch, n_tokens, heads, head_dim)
    B = xbc[..., heads * head_dim : heads * head_dim + groups * d_state].view(batch, n_tokens, groups, d_state)
    # dt after softplus (positive, small) and the within-chunk cumulative sum of dt * A (A < 0);
    # past the last token dt is 0, so the sum stays flat there, as mamba_ssm's cumsum kernel leaves it
    dt = torch.rand(batch, heads, n_chunks * chunk, generator=g) * 0.1
    dt[:, :, n_tokens:] = 0.0
    A = -torch.rand(heads, generator=g) * 4 - 0.5
    dt = dt.view(batch, heads, n_chunks, chunk)
    dA = torch.cumsum(dt * A[None, :, None, None], dim=-1)
    want = chunk_states_reference(x, B, dt, dA)
    got = chunk_states_passed(x, B, dt, dA, out_dtype=torch.float32, block_k=block_k)
    assert got.shape == want.shape and got.dtype == torch.float32
    assert torch.all(got[:, 0] == 0)
    if n_chunks == 1:  # only the (zero) state entering the one chunk
        assert torch.all(got == 0)
        return
    rel = float((got.double() - want).norm() / want.norm())
    bound = 1e-2 if dtype == torch.bfloat16 else 1e-5
    assert rel < bound, (batch, n_tokens, heads, head_dim, groups, d_state, chunk, dtype, rel)
    low = chunk_states_passed(x, B, dt, dA, out_dtype=torch.bfloat16, block_k=block_k)  # as the output kernel reads it
    assert low.dtype == torch.bfloat16 and float((low.double() - want).norm() / want.norm()) < 1e-2


def main() -> int:
    why = interpreter_unusable()
    if why:
        print(why)
        return CANNOT_CHECK
    # a partial last chunk, several chunks, one chunk only; two groups of heads; head_dim below and
    # at a block; d_state 16 and 64; block_k 16 and 32. float32 only: the interpreter's bf16 tl.dot
    # is wrong (Triton 3.8: errors of 1e10 on 16 x 16 tiles); bf16 is tested on the GPU
    # (test_ssd_states.py)
    check(2, 200, 4, 32, 2, 16, 64, torch.float32)
    check(1, 128, 2, 64, 1, 64, 64, torch.float32, block_k=16)
    check(1, 40, 3, 16, 1, 32, 64, torch.float32)
    check(2, 130, 2, 32, 1, 16, 32, torch.float32)
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
