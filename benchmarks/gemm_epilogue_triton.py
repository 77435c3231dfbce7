"""``x @ W.T`` with an elementwise epilogue that cuBLASLt lacks, as one Triton GEMM (Hopper TMA).

Tried for issue 15 and not adopted (``benchmarks/epilogue_fusion.py``, H200, 2026-12-04,
``benchmarks/results/epilogue_fusion_h200_2026-12-04_triton.log``): the GEMM itself runs about
10% below cuBLAS at these shapes, which eats what the fused epilogue saves (Pythia's erf GELU:
2.695 ms against 2.710 for cuBLAS + torch's GELU; Mamba's residual: 1.477 against 1.343 for
``torch.addmm``). Kept here so that the measurement can be repeated.

Two epilogues, each applied to the float32 accumulator before anything is rounded:

* ``"gelu_erf"``: ``gelu(x @ W.T + bias)`` with the exact (erf) GELU, Pythia's MLP activation.
  cuBLASLt's ``GELU_BIAS`` epilogue is the tanh approximation only, so transformers runs the
  GEMM and then a GELU kernel that reads and writes the (tokens x 4 hidden) activation again.
* ``"add_f32"``: ``residual + x @ W.T`` into a *new* float32 tensor, the Mamba blocks' ``out_proj``
  plus their float32 residual. ``torch.addmm(residual, ...)`` first copies ``residual`` into its
  output (cuBLAS computes ``C = A B + C`` in place), a device-to-device copy of the whole
  float32 residual stream per layer.

The kernel is persistent (one program per SM walks the output tiles, grouped along M for L2
reuse) and loads A and W through TMA descriptors; ``W`` is nn.Linear's ``(out, in)`` weight, so
the product is ``tl.dot(a, w.T)``. Hopper (sm_90) or newer, CUDA only.

Shapes: ``x`` (..., K) bf16/fp16, contiguous rows; ``weight`` (N, K), same dtype; ``bias`` (N,);
``residual`` (..., N) float32. Output (..., N): ``x``'s dtype for ``gelu_erf``, float32 for
``add_f32``.
"""

from __future__ import annotations

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # CPU installs
    triton = None

__all__ = ["EPILOGUES", "gemm_epilogue", "gemm_epilogue_available"]

EPILOGUES = ("gelu_erf", "add_f32")

#: (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_stages, num_warps, subtile)
DEFAULT_CONFIG = (128, 256, 64, 8, 3, 8, True)


def gemm_epilogue_available(device: torch.device | str) -> bool:
    """Whether the Triton GEMM can run on ``device`` (CUDA, compute capability >= 9, Triton)."""
    device = torch.device(device)
    return triton is not None and device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9


if triton is not None:

    @triton.jit
    def _tile_pid(tile_id, num_pid_in_group, num_pid_m, GROUP_M: tl.constexpr):
        group_id = tile_id // num_pid_in_group
        first_pid_m = group_id * GROUP_M
        group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
        pid_m = first_pid_m + (tile_id % group_size_m)
        pid_n = (tile_id % num_pid_in_group) // group_size_m
        return pid_m, pid_n

    @triton.jit
    def _epilogue(acc, bias_ptr, r_desc, offs_m, offs_n, N, EPILOGUE: tl.constexpr, BLOCK_N: tl.constexpr):
        if EPILOGUE == "gelu_erf":
            cols = offs_n + tl.arange(0, BLOCK_N)
            bias = tl.load(bias_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)
            v = acc + bias[None, :]
            return 0.5 * v * (1.0 + tl.math.erf(v * 0.7071067811865476))
        else:  # "add_f32"
            return acc + r_desc.load([offs_m, offs_n])

    @triton.jit
    def _gemm_epilogue_kernel(
        a_desc,
        w_desc,
        c_desc,
        r_desc,
        bias_ptr,
        M,
        N,
        K,
        EPILOGUE: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        GROUP_M: tl.constexpr,
        NUM_SMS: tl.constexpr,
        SUBTILE: tl.constexpr,
    ):
        start_pid = tl.program_id(0)
        num_pid_m = tl.cdiv(M, BLOCK_M)
        num_pid_n = tl.cdiv(N, BLOCK_N)
        k_tiles = tl.cdiv(K, BLOCK_K)
        num_tiles = num_pid_m * num_pid_n
        num_pid_in_group = GROUP_M * num_pid_n
        for tile_id in tl.range(start_pid, num_tiles, NUM_SMS, flatten=True):
            pid_m, pid_n = _tile_pid(tile_id, num_pid_in_group, num_pid_m, GROUP_M)
            offs_m = pid_m * BLOCK_M
            offs_n = pid_n * BLOCK_N
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for ki in range(k_tiles):
                offs_k = ki * BLOCK_K
                a = a_desc.load([offs_m, offs_k])
                w = w_desc.load([offs_n, offs_k])
                acc = tl.dot(a, w.T, acc)
            if SUBTILE:  # the epilogue on two (BLOCK_M, BLOCK_N / 2) halves: fewer live registers
                halves = tl.reshape(acc, (BLOCK_M, 2, BLOCK_N // 2)).permute(0, 2, 1).split()
                for j in tl.static_range(2):
                    offs_j = offs_n + j * (BLOCK_N // 2)
                    out = _epilogue(halves[j], bias_ptr, r_desc, offs_m, offs_j, N, EPILOGUE, BLOCK_N // 2)
                    c_desc.store([offs_m, offs_j], out.to(c_desc.dtype))
            else:
                out = _epilogue(acc, bias_ptr, r_desc, offs_m, offs_n, N, EPILOGUE, BLOCK_N)
                c_desc.store([offs_m, offs_n], out.to(c_desc.dtype))


_NUM_SMS: dict[int, int] = {}


def gemm_epilogue(
    x: Tensor,
    weight: Tensor,
    epilogue: str,
    *,
    bias: Tensor | None = None,
    residual: Tensor | None = None,
    config: tuple = DEFAULT_CONFIG,
) -> Tensor:
    """``epilogue(x @ weight.T)`` as one persistent Triton GEMM (see the module docstring).

    Parameters
    ----------
    x : Tensor of shape (..., K)
        bf16 or fp16 on a CUDA device of compute capability >= 9; rows contiguous.
    weight : Tensor of shape (N, K)
        Same dtype as ``x``, contiguous.
    epilogue : {"gelu_erf", "add_f32"}
    bias : Tensor of shape (N,)
        Required by ``"gelu_erf"``.
    residual : Tensor of shape (..., N), float32
        Required by ``"add_f32"``; read, never written.
    config : (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_stages, num_warps, subtile)

    Returns
    -------
    Tensor of shape (..., N)
        ``x.dtype`` for ``"gelu_erf"``, float32 for ``"add_f32"``.
    """
    if epilogue not in EPILOGUES:
        raise ValueError(f"gemm_epilogue: unknown epilogue {epilogue!r}; expected one of {EPILOGUES}")
    if not gemm_epilogue_available(x.device):
        raise RuntimeError("gemm_epilogue needs Triton and a CUDA GPU of compute capability >= 9")
    n, k = weight.shape
    if x.shape[-1] != k or x.dtype != weight.dtype or x.dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"gemm_epilogue: x {tuple(x.shape)} {x.dtype} and weight {tuple(weight.shape)} {weight.dtype}")
    a = x.reshape(-1, k)
    if a.stride(-1) != 1:
        a = a.contiguous()
    w = weight.contiguous()
    m = a.shape[0]
    block_m, block_n, block_k, group_m, stages, warps, subtile = config
    if epilogue == "gelu_erf":
        if bias is None or bias.shape != (n,):
            raise ValueError(f"gemm_epilogue('gelu_erf') needs a bias of shape ({n},)")
        out = torch.empty(m, n, dtype=x.dtype, device=x.device)
        r_desc = None
    else:
        if residual is None or residual.dtype != torch.float32 or residual.shape[-1] != n:
            raise ValueError(f"gemm_epilogue('add_f32') needs a float32 residual of shape (..., {n})")
        r = residual.reshape(-1, n)
        if r.stride(-1) != 1 or r.shape[0] != m:
            raise ValueError(f"gemm_epilogue('add_f32'): residual {tuple(residual.shape)} does not match x's rows")
        out = torch.empty(m, n, dtype=torch.float32, device=x.device)
        r_desc = TensorDescriptor.from_tensor(r, [block_m, block_n // 2 if subtile else block_n])
        bias = out  # unused pointer
    dev = x.device.index if x.device.index is not None else torch.cuda.current_device()
    if dev not in _NUM_SMS:
        _NUM_SMS[dev] = torch.cuda.get_device_properties(dev).multi_processor_count
    num_sms = _NUM_SMS[dev]
    tiles = triton.cdiv(m, block_m) * triton.cdiv(n, block_n)
    _gemm_epilogue_kernel[(min(num_sms, tiles),)](
        TensorDescriptor.from_tensor(a, [block_m, block_k]),
        TensorDescriptor.from_tensor(w, [block_n, block_k]),
        TensorDescriptor.from_tensor(out, [block_m, block_n // 2 if subtile else block_n]),
        r_desc,
        bias,
        m,
        n,
        k,
        EPILOGUE=epilogue,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        GROUP_M=group_m,
        NUM_SMS=num_sms,
        SUBTILE=subtile,
        num_stages=stages,
        num_warps=warps,
    )
    return out.view(*x.shape[:-1], n)
