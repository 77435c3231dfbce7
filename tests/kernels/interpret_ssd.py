"""Run reprflow's SSD output kernel (``chunk_scan``) in Triton's CPU interpreter against float64
(a script, not a test module; started by ``test_interpreted.py`` with ``TRITON_INTERPRET=1``).

Checks every launch shape class the kernel has: one or two heads per program, row blocks
equal to or larger than the key block, a partial last chunk, one or two groups, ``D`` per head
or per channel, and a head whose decay over a chunk is far beyond float32's exponent range
(the factored off-diagonal decay must neither overflow nor lose the near terms).
Exit status 0: all passed; 77: this interpreter cannot run loops; else a failure.
"""

import sys

import torch
from interpret_common import CANNOT_CHECK, interpreter_unusable

from reprflow.kernels.ssd_scan import chunk_scan


def chunk_scan_reference(cb, x, dt, dA, C, states, D):
    """The kernel's formula in float64, chunk by chunk and head by head."""
    batch, n_tokens, heads, _ = x.shape
    chunk, groups = dt.shape[-1], C.shape[2]
    f = lambda t: t.double()  # noqa: E731
    out = torch.zeros(x.shape, dtype=torch.float64)
    for c in range(dt.shape[2]):
        t0, t1 = c * chunk, min(n_tokens, (c + 1) * chunk)
        n = t1 - t0
        for h in range(heads):
            g = h // (heads // groups)
            a, d = f(dA[:, h, c, :n]), f(dt[:, h, c, :n])
            decay = torch.exp(a[:, :, None] - a[:, None, :]).tril()
            w = f(cb[:, c, g, :n, :n]) * decay * d[:, None, :]
            y = w @ f(x[:, t0:t1, h]) + torch.exp(a)[..., None] * (
                f(C[:, t0:t1, g]) @ f(states[:, c, h]).transpose(1, 2)
            )
            if D is not None:
                y = y + f(x[:, t0:t1, h]) * (f(D[h]) if D.dim() == 1 else f(D[h])[None, None, :])
            out[:, t0:t1, h] = y
    return out


def inputs(batch, n_tokens, heads, groups, head_dim, d_state, chunk, d_per_channel, seed):
    g = torch.Generator().manual_seed(seed)
    n_chunks = -(-n_tokens // chunk)
    x = torch.randn(batch, n_tokens, heads, head_dim, generator=g)
    B = torch.randn(batch, n_chunks * chunk, groups, d_state, generator=g)
    C = torch.randn(batch, n_chunks * chunk, groups, d_state, generator=g)
    B[:, n_tokens:] = 0
    C[:, n_tokens:] = 0
    cb = torch.einsum("bcmgn,bckgn->bcgmk", C.view(batch, n_chunks, chunk, groups, d_state),
                      B.view(batch, n_chunks, chunk, groups, d_state))  # fmt: skip
    dt = torch.rand(batch, heads, n_chunks, chunk, generator=g) * 0.1 + 1e-3
    A = -torch.linspace(0.5, 8.0, heads)
    A[-1] = -400.0  # decays by e^-40 per token at dt = 0.1: far past float32's range over a chunk
    dA = torch.cumsum(dt * A[None, :, None, None], dim=-1)
    states = torch.randn(batch, n_chunks, heads, head_dim, d_state, generator=g)
    D = torch.randn(heads, head_dim, generator=g) if d_per_channel else torch.randn(heads, generator=g)
    return cb, x, dt, dA, C[:, :n_tokens], states, D


def main() -> None:
    if why := interpreter_unusable():
        print(why)
        sys.exit(CANNOT_CHECK)
    cases = [  # batch, n_tokens, heads, groups, head_dim, d_state, chunk, D per channel, config
        (2, 300, 4, 1, 16, 16, 128, False, {"BM": 32, "BK": 16, "HB": 2, "num_warps": 4, "num_stages": 1}),
        (1, 200, 4, 2, 16, 32, 64, True, {"BM": 32, "BK": 32, "HB": 1, "num_warps": 4, "num_stages": 1}),
        (1, 130, 6, 3, 8, 16, 64, False, {"BM": 64, "BK": 16, "HB": 2, "num_warps": 4, "num_stages": 1}),
    ]
    for k, (*dims, d_per_channel, cfg) in enumerate(cases):
        cb, x, dt, dA, C, states, D = inputs(*dims, d_per_channel, seed=k)
        got = chunk_scan(cb, x, dt, dA, C, states, D, config=cfg).double()
        want = chunk_scan_reference(cb, x, dt, dA, C, states, D)
        err = float((got - want).norm() / want.norm())
        worst = float(((got - want).abs() / (want.abs() + 1e-3)).max())
        print(f"chunk_scan {dims} {cfg}: rel err {err:.2e}, worst element {worst:.2e}")
        if not torch.isfinite(got).all() or err > 1e-5 or worst > 1e-3:
            print("chunk_scan differs from float64", file=sys.stderr)
            sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
