"""Pythia's two LayerNorms of the parallel residual: torch's two kernels against one pass.

At Pythia-2.8B's shapes (rows = batch x tokens, hidden 2560), bf16, one GPU:

* ``layer_norm``: the parallel residual's two LayerNorms of the same ``h`` as torch runs them
  (two ``F.layer_norm`` kernels) against :func:`reprflow.kernels.layer_norm.layer_norm_pair`
  (one read, two writes).

Each row: median ms of ``--repeats`` calls (CUDA events), the bytes it must move over the
memory bandwidth measured at the start (a device-to-device copy), the share of elements equal
to torch's, and the relative error ``||got - want|| / ||want||`` against float64 from the
same bf16 inputs (on the first 2048 rows).

Usage (GPU)::

    PYTHONPATH=$PWD python benchmarks/pythia_passes.py [--rows 32768]
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from reprflow.kernels.layer_norm import layer_norm_pair

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from microbench import median_ms, rel_err  # noqa: E402


def copy_bandwidth(repeats: int) -> float:
    """Bytes/s of a 2 GiB device-to-device copy (read + write)."""
    a = torch.empty(1 << 30, dtype=torch.int16, device="cuda")
    b = torch.empty_like(a)
    ms = median_ms(lambda: b.copy_(a), repeats)
    return 2 * a.numel() * 2 / (ms / 1e3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=32768, help="batch x tokens (default 16 x 2048)")
    p.add_argument("--hidden", type=int, default=2560)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    bw = copy_bandwidth(args.repeats)
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | copy bandwidth {bw / 1e12:.2f} TB/s")
    g = torch.Generator(device="cuda").manual_seed(0)
    n, h = args.rows, args.hidden
    x = (torch.randn(n, h, device="cuda", generator=g) * 2 + 0.3).bfloat16()
    ws = [(1 + 0.1 * torch.randn(h, device="cuda", generator=g)).bfloat16() for _ in range(2)]
    bs = [(0.1 * torch.randn(h, device="cuda", generator=g)).bfloat16() for _ in range(2)]
    rows = []

    def torch_pair():
        return F.layer_norm(x, (h,), ws[0], bs[0], 1e-5), F.layer_norm(x, (h,), ws[1], bs[1], 1e-5)

    def fused_pair():
        return layer_norm_pair(x, ws[0], bs[0], ws[1], bs[1], eps=1e-5)

    want_t = torch_pair()
    xd = x[:2048].double()
    mean = xd.mean(-1, keepdim=True)
    xn = (xd - mean) / torch.sqrt(((xd - mean) ** 2).mean(-1, keepdim=True) + 1e-5)
    want64 = [xn * w.double() + b.double() for w, b in zip(ws, bs)]
    for name, fn, nbytes in (
        ("torch: 2 x F.layer_norm", torch_pair, 4 * n * h * 2),
        ("reprflow layer_norm_pair", fused_pair, 3 * n * h * 2),
    ):
        got = fn()
        ms = median_ms(fn, args.repeats)
        equal = sum(float((a == b).float().mean()) for a, b in zip(got, want_t)) / 2
        ulp = max(float((a.float() - b.float()).abs().max()) for a, b in zip(got, want_t))
        err = max(rel_err(a[:2048], w) for a, w in zip(got, want64))
        rows.append(("layer_norm x2", name, ms, nbytes / bw * 1e3, equal, err, ulp))
    del want_t

    print(f"\nrows {n}, hidden {h}, bf16; bound = bytes moved / copy bandwidth\n")
    print(
        "| pass | implementation | ms | memory bound ms | x bound | equal to torch | rel err vs float64 | max diff vs torch |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for what, name, ms, bound, equal, err, diff in rows:
        print(f"| {what} | {name} | {ms:.3f} | {bound:.3f} | {ms / bound:.2f} | {equal:.6f} | {err:.2e} | {diff:.3g} |")


if __name__ == "__main__":
    main()
