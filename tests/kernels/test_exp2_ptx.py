"""2**x split between the special-function unit and the FMA pipe (reprflow.kernels.exp2_ptx).

On the CPU: the polynomial path, emulated step by step in float32, against float64 over the whole
float32 exponent range, and the PTX block's shape. On a GPU: the PTX itself, in a Gluon kernel,
element by element against float64.
"""

import re

import numpy as np
import pytest
import torch

from reprflow.kernels.exp2_ptx import EXP2_POLY, exp2_poly_reference, exp2_ptx, exp2_ptx_constraints

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_polynomial_matches_float64_over_the_exponent_range():
    """Relative error <= 2e-7 (ex2.approx.f32's bound is 2^-22 = 2.4e-7) from -126 to 126, dense
    near 0 (the scan's small time steps) and across every integer boundary; 2**0 is exactly 1 and no
    2**x with x <= 0 exceeds 1 (a decay never grows the state)."""
    x = np.concatenate(
        [
            np.linspace(-126.0, 126.0, 2_000_001),
            -np.logspace(-9, np.log10(126.0), 200_001),
            np.arange(-126, 126) + 0.5,  # the rounding ties
            np.arange(-126, 127, dtype=np.float64),
        ]
    ).astype(np.float32)
    got = exp2_poly_reference(x).astype(np.float64)
    want = np.exp2(x.astype(np.float64))
    rel = np.abs(got / want - 1.0)
    assert rel.max() < 2e-7, (float(rel.max()), float(x[rel.argmax()]))
    assert got[x == 0.0].tolist() == [1.0] * int((x == 0.0).sum())
    assert float(got[x <= 0].max()) == 1.0


def test_polynomial_clamps_outside_the_normal_range():
    """Below -126 the result is 2**-126 (not garbage from the exponent arithmetic wrapping), above
    126 it is 2**126."""
    got = exp2_poly_reference(np.array([-126.4, -127.0, -200.0, -1e30, 126.4, 300.0, 1e30], dtype=np.float32))
    want = np.array([-126.0, -126.0, -126.0, -126.0, 126.0, 126.0, 126.0])
    np.testing.assert_allclose(got.astype(np.float64), np.exp2(want), rtol=2e-7)


def test_coefficients_are_those_of_2_to_the_f():
    """c0 = 1 exactly; c1 .. c5 near the Taylor coefficients (ln 2)^k / k! of 2**f (a minimax fit moves
    them slightly)."""
    assert EXP2_POLY[0] == 1.0
    taylor = [np.log(2.0) ** k / np.prod(np.arange(1, k + 1)) for k in range(6)]
    np.testing.assert_allclose(EXP2_POLY, taylor, rtol=0.03)


@pytest.mark.parametrize("n,n_poly", [(16, 1), (16, 0), (8, 3), (4, 4)])
def test_ptx_block_splits_the_values(n, n_poly):
    """``n - n_poly`` ex2.approx lines, then ``n_poly`` polynomial scopes; output i reads input n + i."""
    ptx = exp2_ptx(n, n_poly)
    lines = ptx.splitlines()
    assert len(lines) == n
    for i, line in enumerate(lines):
        if i < n - n_poly:
            assert line == f"ex2.approx.ftz.f32 ${i}, ${n + i};"
        else:
            assert "ex2" not in line and line.startswith("{") and line.endswith("}")
            assert f"max.f32 xc, ${n + i}," in line and line.rstrip(" }").endswith(f"mov.b32 ${i}, pb;")
            assert len(re.findall(r"fma\.rn\.f32", line)) == 5
    assert exp2_ptx_constraints(n) == ",".join(["=f"] * n + ["f"] * n)


def test_ptx_block_rejects_a_bad_split():
    with pytest.raises(ValueError, match="n_poly must be in 0..16"):
        exp2_ptx(16, 17)


def test_scan_decay_split_per_lane():
    """The Gluon scan's rule (pure Python): blocks of up to 16 of a lane's states, fma_exps of every 16
    by polynomial, rounded down for smaller blocks."""
    from reprflow.kernels.selective_scan_gluon import decay_exp2_split

    assert decay_exp2_split(16, 1, 1) == (16, 1)
    assert decay_exp2_split(16, 1, 0) == (16, 0)
    assert decay_exp2_split(16, 2, 1) == (8, 0)
    assert decay_exp2_split(16, 2, 2) == (8, 1)
    assert decay_exp2_split(64, 1, 1) == (16, 1)
    assert decay_exp2_split(8, 8, 16) == (1, 1)
    with pytest.raises(ValueError, match="fma_exps must be in 0..16"):
        decay_exp2_split(16, 1, 17)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("n_poly", [0, 1, 16])
def test_ptx_on_the_gpu_matches_float64(n_poly):
    """The PTX block itself, 16 values per lane as in the scan, element by element: relative error
    <= 3e-7 where 2**x is a normal float32; below -126 both paths give (nearly) zero."""
    from reprflow.kernels.selective_scan_gluon import gluon_available

    if not gluon_available():
        pytest.skip("Triton's Gluon does not import here")
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl

    @gluon.jit
    def _exp2_kernel(x_ptr, y_ptr, PTX: gl.constexpr, CONS: gl.constexpr):
        layout: gl.constexpr = gl.BlockedLayout([16, 1], [1, 32], [1, 1], [0, 1])
        rows = gl.arange(0, 16, layout=gl.SliceLayout(1, layout))
        cols = gl.program_id(0) * 32 + gl.arange(0, 32, layout=gl.SliceLayout(0, layout))
        offs = gl.expand_dims(cols, 0) * 16 + gl.expand_dims(rows, 1)
        x = gl.load(x_ptr + offs)
        y = gl.inline_asm_elementwise(PTX, CONS, [x], dtype=gl.float32, is_pure=True, pack=16)
        gl.store(y_ptr + offs, y)

    x = torch.cat([torch.linspace(-130.0, 20.0, 2**20 - 4096), -torch.logspace(-8, 2, 4096)]).cuda()
    x = x[torch.randperm(x.numel(), generator=torch.Generator().manual_seed(0)).cuda()]  # every lane slot sees all
    y = torch.empty_like(x)
    _exp2_kernel[(x.numel() // 512,)](x, y, PTX=exp2_ptx(16, n_poly), CONS=exp2_ptx_constraints(16), num_warps=1)
    want = torch.exp2(x.double())
    normal = x >= -126.0
    rel = ((y.double() - want) / want)[normal].abs()
    assert float(rel.max()) < 3e-7, (n_poly, float(rel.max()))
    assert float(y[~normal].abs().max()) <= 2.0**-126
