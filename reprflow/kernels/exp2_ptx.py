"""``2**x`` in float32 for GPU kernels, split between the special-function unit and the FMA pipe.

Hopper's special-function unit (``MUFU.EX2``, 16 lanes per SM per clock) has 1/8 of the FMA
pipes' rate, and the Mamba-1 scan needs one ``2**x`` per token, channel and state: its decays
queue on that unit while the FMA pipe idles at ~45%. FlashAttention-4's remedy is to compute part
of the exponentials in software on the FMA pipe. :func:`exp2_ptx` writes one inline-PTX block that
computes ``n`` values of ``2**x``: the first ``n - n_poly`` with ``ex2.approx.ftz.f32`` (one
``MUFU.EX2`` each), the last ``n_poly`` with :data:`EXP2_POLY` (10 instructions each on the FMA and
integer pipes, no ``MUFU``). Measured on an H100 (``docs/kernels.md``, "Measured and adopted: Mamba-1's
decays, one in sixteen on the FMA pipe"), one polynomial per 16 decays makes the scan 7-9% faster.

The polynomial path, exactly as :func:`exp2_poly_reference` emulates it:

1. ``x`` is clamped to [-126, 126] (``max``, ``min``);
2. ``j = x + 1.5 * 2**23`` rounds it to the nearest integer ``i`` in ``j``'s low mantissa bits;
   ``f = x - (j - 1.5 * 2**23)`` is the rest, in [-0.5, 0.5];
3. ``p = c0 + f (c1 + f (c2 + f (c3 + f (c4 + f c5))))`` approximates ``2**f`` (five FMAs;
   c0 = 1, c1 .. c5 a minimax fit of the relative error on [-0.5, 0.5]);
4. ``bits(p) + (bits(j) << 23)`` adds ``i`` to ``p``'s exponent (the shift drops every bit of ``j``
   but ``i``'s low nine, two's complement for ``i < 0``).

Its relative error is at most 1.6e-7 over [-126, 126] (``ex2.approx.f32``: 2^-22, 2.4e-7); below
-126 it returns ``2**-126`` where ``ex2.approx.ftz`` returns 0, above 126 ``2**126`` where the unit
returns up to infinity. The scan's decays ``2**(delta * A * log2 e)`` have ``x <= 0``.
"""

from __future__ import annotations

import functools
import struct

import numpy as np

__all__ = ["EXP2_POLY", "exp2_poly_reference", "exp2_ptx", "exp2_ptx_constraints"]


def _f32_hex(v: float) -> str:
    """PTX's hexadecimal float32 literal of ``v`` (``0f3F800000`` for 1.0)."""
    return "0f%08X" % struct.unpack("<I", struct.pack("<f", v))[0]


#: c0 .. c5 of the degree-5 polynomial for ``2**f`` on [-0.5, 0.5], as float32: ``c0 = 1`` exactly (so
#: ``2**0 = 1`` and no decay of a small step exceeds 1), c1 .. c5 a minimax fit of the relative error
#: with c0 fixed (9.1e-8 in float64), then searched ulp by ulp for the float32 evaluation (1.6e-7)
EXP2_POLY = (
    1.0,
    0.6931470036506653,
    0.24022245407104492,
    0.05550732836127281,
    0.009671512991189957,
    0.001326472731307149,
)
_ROUNDER = 12582912.0  # 1.5 * 2**23: x + it rounds x to an integer held in the low mantissa bits
_LOW, _HIGH = -126.0, 126.0


def _poly_block(out: str, x: str) -> str:
    """One ``2**x`` by the polynomial, in its own PTX scope (``out``, ``x``: operand names)."""
    c = [_f32_hex(v) for v in EXP2_POLY]
    r = _f32_hex(_ROUNDER)
    horner = " ".join(f"fma.rn.f32 p, p, f, {c[k]};" for k in (3, 2, 1, 0))
    return (
        "{ .reg .f32 xc, j, f, p; .reg .b32 jb, pb, eb;"
        f" max.f32 xc, {x}, {_f32_hex(_LOW)}; min.f32 xc, xc, {_f32_hex(_HIGH)};"
        f" add.rn.f32 j, xc, {r}; sub.rn.f32 f, j, {r}; sub.rn.f32 f, xc, f;"
        f" fma.rn.f32 p, f, {c[5]}, {c[4]}; {horner}"
        f" mov.b32 jb, j; mov.b32 pb, p; shl.b32 eb, jb, 23; add.s32 pb, pb, eb; mov.b32 {out}, pb; }}"
    )


@functools.cache  # the scan asks for the same block at every launch
def exp2_ptx(n: int, n_poly: int) -> str:
    """Inline PTX for ``n`` float32 values of ``2**x``: outputs ``$0 .. $(n-1)``, inputs ``$n .. $(2n-1)``.

    The first ``n - n_poly`` by ``ex2.approx.ftz.f32``, the last ``n_poly`` by the polynomial.
    For ``gl.inline_asm_elementwise(exp2_ptx(n, k), exp2_ptx_constraints(n), [x], pack=n, ...)``.
    """
    if not 0 <= n_poly <= n:
        raise ValueError(f"exp2_ptx: n_poly must be in 0..{n}, got {n_poly}")
    lines = [
        f"ex2.approx.ftz.f32 ${i}, ${n + i};" if i < n - n_poly else _poly_block(f"${i}", f"${n + i}") for i in range(n)
    ]
    return "\n".join(lines)


@functools.cache
def exp2_ptx_constraints(n: int) -> str:
    """The constraint string of :func:`exp2_ptx`'s block: ``n`` float32 outputs, then ``n`` inputs."""
    return ",".join(["=f"] * n + ["f"] * n)


def exp2_poly_reference(x: np.ndarray) -> np.ndarray:
    """The polynomial path of :func:`exp2_ptx` step by step in numpy float32 (FMAs rounded once).

    For checking the coefficients and the exponent arithmetic on a CPU against float64.
    """
    x = np.asarray(x, dtype=np.float32)
    xc = np.minimum(np.maximum(x, np.float32(_LOW)), np.float32(_HIGH))
    rounder = np.float32(_ROUNDER)
    j = (xc + rounder).astype(np.float32)
    f = (xc - (j - rounder).astype(np.float32)).astype(np.float32)
    c = np.asarray(EXP2_POLY, dtype=np.float32)
    p = np.full_like(f, c[5])
    for k in (4, 3, 2, 1, 0):  # an FMA: the product exact in float64, one rounding to float32
        p = (p.astype(np.float64) * f.astype(np.float64) + np.float64(c[k])).astype(np.float32)
    bits = p.view(np.uint32) + (j.view(np.uint32) << np.uint32(23))
    return bits.view(np.float32)
