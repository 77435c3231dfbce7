"""Run the Triton scan kernel in Triton's CPU interpreter against float64 (a script, not a test module).

Started by ``test_interpreted.py`` in a subprocess with ``TRITON_INTERPRET=1``
set before Triton is imported (the interpreter is chosen when ``@triton.jit`` runs). Exit
status 0: all checks passed; 77: this Triton's interpreter cannot run a loop with a
run-time bound under this numpy (Triton 3.6 with numpy >= 2.4: ``int()`` of a 1-element
array), so nothing could be checked; anything else: a failure (message on stderr).
"""

import itertools
import math
import sys

import torch
import triton
import triton.language as tl
from interpret_common import CANNOT_CHECK, interpreter_unusable

from reprflow.kernels.selective_scan import _silu, _softplus, selective_scan_reference, selective_scan_triton


@triton.jit
def _helpers(x_ptr, sp_ptr, silu_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    x = tl.load(x_ptr + offs, mask=m, other=0.0)
    tl.store(sp_ptr + offs, _softplus(x), mask=m)
    tl.store(silu_ptr + offs, _silu(x), mask=m)


def check_helpers() -> None:
    """Softplus and SiLU over a wide range, against float64."""
    x = torch.cat([torch.linspace(-130.0, 130.0, 26001), torch.tensor([0.0, -1e-30, 1e-30, 20.0, 20.5, -20.0])])
    outs = [torch.empty_like(x) for _ in range(2)]
    _helpers[(triton.cdiv(x.numel(), 1024),)](x, *outs, x.numel(), BLOCK=1024)
    sp, silu = (o.double() for o in outs)
    xd = x.double()

    def rel(got, want):  # relative error where float32 holds the value as a normal number, else absolute
        normal = want.abs() >= 2.0**-126
        assert bool(((got[~normal] - want[~normal]).abs() < 2.0**-125).all())
        return torch.where(normal, (got - want).abs() / want.abs(), 0.0)

    # exp(x) as exp2(x * log2 e) in float32 is off by up to |x| * log2(e) * 2**-24 * ln 2 ~ |x| * 6e-8
    # relative (the rounding of the product; libdevice's expf avoids it, at ~10 more instructions):
    # below 1e-6 for the |x| < 10 of real time steps and gates
    bound = 1e-6 + 8e-8 * xd.abs()  # + the polynomials (2.2e-7) and a few float32 roundings
    want_sp = torch.nn.functional.softplus(xd, threshold=1000.0)
    assert bool((rel(sp, want_sp) < bound).all()), ("softplus", float((rel(sp, want_sp) / bound).max()))
    want_silu = xd * torch.sigmoid(xd)
    mid = xd.abs() <= 80  # below -88, exp(-z) overflows and silu returns 0 for ~1e-37
    err_silu = rel(silu[mid], want_silu[mid])
    assert bool((err_silu < bound[mid]).all()), ("silu", float(err_silu.max()))
    assert bool(((silu - want_silu)[~mid].abs() < 1e-30).all())


def _case(fn, batch, n_tokens, channels, d_state, has_d, has_z, has_bias, softplus, seed, **kw) -> float:
    g = torch.Generator().manual_seed(seed)
    xz = torch.randn(batch, n_tokens, 2 * channels, generator=g)
    u, z = xz[..., :channels], xz[..., channels:]  # strided views, as the mixer passes them
    raw = torch.randn(batch, n_tokens, channels, generator=g)
    delta = raw - 1.0 if softplus else 0.3 * raw.abs()  # without softplus, time steps must be >= 0
    dbl = torch.randn(batch, n_tokens, 3 + 2 * d_state, generator=g)
    B, C = dbl[..., 3 : 3 + d_state], dbl[..., 3 + d_state :]
    A = -torch.exp(torch.randn(channels, d_state, generator=g))
    D = torch.randn(channels, generator=g) if has_d else None
    bias = (torch.randn(channels, generator=g) if softplus else torch.rand(channels, generator=g)) if has_bias else None
    z = z if has_z else None
    got = fn(u, delta, A, B, C, D, z, delta_bias=bias, delta_softplus=softplus, **kw)
    f64 = lambda t: None if t is None else t.double()  # noqa: E731
    want = selective_scan_reference(
        u.double(),
        delta.double(),
        A.double(),
        B.double(),
        C.double(),
        f64(D),
        f64(z),
        delta_bias=f64(bias),
        delta_softplus=softplus,
        compute_dtype=torch.float64,
    )
    assert got.shape == u.shape and got.dtype == u.dtype
    return float((got.double() - want).norm() / want.norm())


def check_scans() -> None:
    """The kernel on tiny shapes: odd T (not a multiple of the unroll; shorter than it),
    odd channel counts (partial channel blocks), every optional input on and off, softplus
    on and off (all 16 combinations for the default configuration, a share for the others)."""
    flags = list(itertools.product([True, False], repeat=4))  # has_d, has_z, has_bias, softplus
    cases = [  # (fn, batch, n_tokens, channels, d_state, config kwargs)
        (selective_scan_triton, 2, 13, 40, 16, {}),  # the default configuration
        (selective_scan_triton, 1, 7, 33, 8, {"unroll": 8}),  # T < unroll
        (selective_scan_triton, 2, 9, 64, 16, {"block_d": 64, "num_warps": 2, "unroll": 2}),
        (selective_scan_triton, 1, 16, 20, 16, {"unroll": 8}),  # T = 2 blocks
    ]
    for i, (fn, b, t, d, n, kw) in enumerate(cases):
        for j, fl in enumerate(flags if i == 0 else flags[i :: len(cases)]):
            err = _case(fn, b, t, d, n, *fl, seed=100 * i + j, **kw)
            assert math.isfinite(err) and err < 2e-6, (fn.__name__, (b, t, d, n), kw, fl, err)


def main() -> int:
    reason = interpreter_unusable()
    if reason:
        print(reason)
        return CANNOT_CHECK
    check_helpers()
    check_scans()
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
