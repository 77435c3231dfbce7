"""Instruction counts of the Mamba-1 Triton scan's time loop, from its sm_90 SASS, on a CPU.

Triton compiles for a GPU target without a GPU (its bundled ``ptxas`` and ``cuobjdump``
do the rest), so the cost of a change to the kernel can be read before a GPU run: for
each launch configuration this compiles the bf16 kernel with every optional input
on (D, z, delta_bias, softplus) at Mamba-2.8B strides (5120 channels; the integer
arguments are specialised as multiples of 16, as at those shapes), disassembles it and
counts, per warp-step (one token of 32 channels x d_state 16 states, i.e. one loop
iteration / unroll), the instructions of the main time loop and its ``MUFU``
(special-function) instructions. At 8 cycles per ``MUFU`` warp instruction per SM
sub-partition and 1 issue per cycle, a loop needs at least max(instructions, 8 x MUFU)
cycles per warp-step; the exp bound is 8 x 16 = 128.

That is a lower bound, not a prediction: on an H200 (2026-12-03) this kernel's 201
instructions per warp-step under Triton 3.6 (1.57x the exp bound) ran at 2.68x it, and a
lane-per-channel kernel with 137 (about 1.1x) ran slower still (docs/kernels.md, "Tried
and reverted"). Only a GPU measurement (benchmarks/scan_sweep.py) decides.

Usage (repository root; Triton installed, no GPU needed)::

    PYTHONPATH=$PWD python benchmarks/scan_sass.py
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from reprflow.kernels.selective_scan import _selective_scan_fwd_kernel

BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
FLAGS = {"HAS_D": True, "HAS_Z": True, "HAS_DT_BIAS": True, "SOFTPLUS": True}


def compile_sass(kernel, pointers: dict[str, str], constants: dict, num_warps: int, workdir: Path) -> tuple[str, int]:
    """(SASS text, registers per thread) of ``kernel`` compiled for sm_90."""
    sig = {name: "i32" for name in kernel.arg_names}
    sig.update(pointers)
    sig.update({name: "constexpr" for name in constants})
    attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(kernel.arg_names) if name not in constants}
    src = ASTSource(
        fn=kernel,
        signature=sig,
        attrs=attrs,
        constexprs={(kernel.arg_names.index(k),): v for k, v in constants.items()},
    )
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})
    cubin = workdir / "k.cubin"
    cubin.write_bytes(compiled.asm["cubin"])
    sass = subprocess.run(
        [str(BIN / "cuobjdump"), "-sass", str(cubin)], capture_output=True, text=True, check=True
    ).stdout
    usage = subprocess.run(
        [str(BIN / "cuobjdump"), "-res-usage", str(cubin)], capture_output=True, text=True, check=True
    ).stdout
    return sass, int(re.search(r"REG:(\d+)", usage).group(1))


def main_loop(sass: str) -> collections.Counter:
    """Opcode counts of the largest backward-branch loop (the unrolled time loop)."""
    ins = [(int(m.group(1), 16), m.group(2).strip()) for m in re.finditer(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass)]
    best: list[str] = []
    for addr, text in ins:
        m = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", text)
        if m and int(m.group(1), 16) < addr:
            body = [t for a, t in ins if int(m.group(1), 16) <= a <= addr]
            best = max(best, body, key=len)
    ops = collections.Counter()
    for text in best:
        ops[re.sub(r"^@!?U?P\w+\s+", "", text).split()[0].split(".")[0]] += 1
    return ops


def rows() -> list[tuple[str, str, int, float, float]]:
    bf16 = {p: "*bf16" for p in ("u_ptr", "dt_ptr", "z_ptr", "out_ptr")}
    f32 = {p: "*fp32" for p in ("dskip_ptr", "dtb_ptr")}
    cases = [
        (
            "triton",
            f"BLOCK_D=32 warps=1 unroll={un}",
            _selective_scan_fwd_kernel,
            {**bf16, "b_ptr": "*bf16", "c_ptr": "*bf16", "a_ptr": "*fp32", **f32},
            {"D_STATE": 16, "BLOCK_D": 32, "UNROLL": un, **FLAGS},
            1,
            un,
        )
        for un in (4, 2, 8)
    ]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, label, kernel, pointers, constants, nw, warp_steps in cases:
            sass, regs = compile_sass(kernel, pointers, constants, nw, Path(tmp))
            ops = main_loop(sass)
            out.append((name, label, regs, sum(ops.values()) / warp_steps, ops["MUFU"] / warp_steps))
    return out


def main() -> int:
    print(
        f"Mamba-1 scan time loop, sm_90 SASS (Triton {triton.__version__}), per warp-step (32 channels x 16 states)\n"
    )
    print("| kernel | config | registers | instructions | MUFU | cycles >= max(instr, 8 x MUFU) | x exp bound (128) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, label, regs, n, mufu in rows():
        cyc = max(n, 8 * mufu)
        print(f"| {name} | {label} | {regs} | {n:.0f} | {mufu:.1f} | {cyc:.0f} | {cyc / 128:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
