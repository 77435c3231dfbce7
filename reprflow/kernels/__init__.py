"""GPU fast paths for the forward passes of the paper's four model families.

Each module does one job:

- :mod:`reprflow.kernels.selective_scan`: Mamba-1 selective scan (Triton kernel on CUDA,
  a pure-torch reference everywhere);
- :mod:`reprflow.kernels.causal_conv1d`: depthwise causal conv + SiLU on time-major
  tensors (Triton on CUDA, ``F.conv1d`` reference);
- :mod:`reprflow.kernels.gpt_neo_attention`: GPT-Neo global/local attention through
  ``scaled_dot_product_attention``;
- :mod:`reprflow.kernels.mamba_mixers`: full-sequence forwards of HF's ``MambaMixer`` and
  ``Mamba2Mixer`` that call the kernels above (and ``mamba_ssm``'s Triton SSD kernels);
- :mod:`reprflow.kernels.ssd`: the Mamba-2 SSD recurrence in torch (reference);
- :mod:`reprflow.kernels.optional`: import of the optional ``mamba_ssm`` Triton kernels
  without its compiled extension, and of the compiled ``selective_scan_cuda`` and
  ``causal_conv1d``;
- :mod:`reprflow.kernels.select`: the chooser: per op and shape class, the fastest
  candidate that matches the float64 reference (measured at first use), or the one
  forced by ``REPRFLOW_KERNEL_<OP>``;
- :mod:`reprflow.kernels.ops`: the Mamba ops (scan, conv, SSD) and their candidates.

:func:`reprflow.fastpath.prepare_model` installs them (docs/kernels.md); nothing here is
applied on import. Triton is optional: on a machine without it (CPU CI) only the torch references
and the SDPA attention are used.
"""

from __future__ import annotations

import importlib.util

__all__ = ["triton_available"]


def triton_available() -> bool:
    """Whether Triton can be imported (it ships with CUDA builds of torch)."""
    return importlib.util.find_spec("triton") is not None
