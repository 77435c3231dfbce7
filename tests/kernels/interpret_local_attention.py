"""Run the sliding-window attention kernel in Triton's CPU interpreter against float64 (a script).

Started by ``test_interpreted.py`` in a subprocess with ``TRITON_INTERPRET=1``
set before Triton is imported. Small shapes only (the interpreter is slow): n_tokens not a
multiple of the blocks, windows shorter and longer than a block, padded head dims (80),
strided (batch, n_tokens, heads, head_dim) inputs, and block configurations where the far
edge of the window, the unmasked middle and the diagonal each span one or more key blocks.
Triton's interpreter (3.9) multiplies bfloat16 blocks in ``tl.dot`` as their raw uint16
bits; where a probe shows it, :func:`_fix_bf16_dot` makes it widen them to float32 first
(what the tensor cores do: exact products, float32 sums). Exit status 0 and "ok": all passed (the last line before "ok" gives the largest errors);
77: this Triton's interpreter cannot run a loop with a run-time bound under this numpy;
anything else: a failure (message on stderr).
"""

import sys

import numpy as np
import torch
import triton
import triton.language as tl
from interpret_common import CANNOT_CHECK, interpreter_unusable

from reprflow.kernels.local_attention import sliding_window_attention, sliding_window_attention_reference

# relative Frobenius error bounds against float64 of the same rounded inputs
TOL = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 2e-2}


@triton.jit
def _dot_probe(a_ptr, b_ptr, o_ptr):
    r = tl.arange(0, 16)
    a = tl.load(a_ptr + r[:, None] * 16 + r[None, :])
    b = tl.load(b_ptr + r[:, None] * 16 + r[None, :])
    tl.store(o_ptr + r[:, None] * 16 + r[None, :], tl.dot(a, b))


def _fix_bf16_dot() -> bool:
    """Widen bfloat16 ``tl.dot`` operands to float32 in the interpreter if it gets them wrong."""
    from triton.runtime import interpreter

    a, b = (torch.randn(16, 16, generator=torch.Generator().manual_seed(s)).bfloat16() for s in (1, 2))
    out = torch.empty(16, 16)
    _dot_probe[(1,)](a, b, out)
    if torch.allclose(out, a.float() @ b.float(), rtol=1e-5, atol=1e-5):
        return False
    create_dot = interpreter.InterpreterBuilder.create_dot

    def widened(self, a, b, d, *args):
        a, b = (self.cast_impl(x, tl.float32) if x.dtype == tl.bfloat16 else x for x in (a, b))
        return create_dot(self, a, b, d, *args)

    interpreter.InterpreterBuilder.create_dot = widened
    return True


def _case(batch, heads, n_tokens, head_dim, window, dtype, config, scale, seed) -> float:
    g = torch.Generator().manual_seed(seed)
    # projections of shape (batch, n_tokens, heads * head_dim) viewed as (batch, heads, n_tokens, head_dim),
    # as GPT-Neo's _split_heads gives them; scores of a few units, like a trained model's
    q, k, v = (
        (torch.randn(batch, n_tokens, heads, head_dim, generator=g) * s).to(dtype).transpose(1, 2)
        for s in (0.5, 0.5, 1.0)
    )
    got = sliding_window_attention(q, k, v, window=window, scale=scale, config=config)
    want = sliding_window_attention_reference(q, k, v, window=window, scale=scale)
    assert got.shape == q.shape and got.dtype == dtype, (got.shape, got.dtype)
    assert got.transpose(1, 2).is_contiguous(), got.stride()  # memory (batch, n_tokens, heads, head_dim)
    err = float((got.double() - want).norm() / want.norm())
    assert np.isfinite(err) and err <= TOL[dtype], ((batch, heads, n_tokens, head_dim), window, dtype, config, err)
    return err


def main() -> int:
    reason = interpreter_unusable()
    if reason:
        print(reason)
        return CANNOT_CHECK
    if _fix_bf16_dot():
        print("interpreter: bfloat16 tl.dot operands widened to float32 (its own dot multiplies their bits)")
    small = {"BLOCK_M": 32, "BLOCK_N": 16, "num_warps": 4, "num_stages": 1}
    cases = [  # (batch, heads, n_tokens, head_dim, window, config, scale)
        (1, 2, 1, 64, 7, None, 1.0),  # one token
        (2, 2, 100, 64, 7, None, 1.0),  # T < BLOCK_M, window inside the diagonal block
        (1, 2, 300, 64, 64, None, 1.0),  # default blocks, T not a multiple of them
        (1, 1, 257, 80, 64, None, 0.125),  # padded head dim, scale != 1
        (1, 2, 300, 80, 7, small, 1.0),  # small blocks: window shorter than a block
        (1, 1, 300, 64, 64, small, 1.0),  # small blocks: masked edge, unmasked middle, diagonal
        (1, 1, 255, 64, 1, small, 1.0),  # window 1: each query sees only itself
        (1, 1, 200, 64, 300, small, 1.0),  # window longer than the sequence: plain causal
        (1, 1, 130, 64, 40, {"BLOCK_M": 16, "BLOCK_N": 32}, 1.0),  # BLOCK_M < BLOCK_N
        (1, 1, 600, 128, 256, None, 1.0),  # GPT-Neo-2.7B's head dim and window, default blocks
        (1, 1, 257, 96, 256, None, 1.0),  # head dim 96, one token past the window
        (1, 1, 400, 128, 256, {"BLOCK_M": 128, "BLOCK_N": 64}, 1.0),  # BLOCK_M = 2 BLOCK_N
        (1, 1, 70, 256, 7, None, 1.0),  # the largest head dim
    ]
    worst = {dtype: 0.0 for dtype in TOL}
    for i, (b, h, t, d, w, cfg, scale) in enumerate(cases):
        for dtype in TOL:
            err = _case(b, h, t, d, w, dtype, cfg, scale, seed=i)
            worst[dtype] = max(worst[dtype], err)
    print("max relative error: " + ", ".join(f"{str(k).removeprefix('torch.')} {v:.2e}" for k, v in worst.items()))
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
