"""Optional third-party kernels: ``mamba_ssm``'s Triton SSD, ``selective_scan_cuda`` and
``causal_conv1d``'s compiled ``causal_conv1d_fn``.

``mamba_ssm`` can be installed without compiling (``MAMBA_SKIP_CUDA_BUILD=TRUE
MAMBA_FORCE_BUILD=TRUE pip install --no-build-isolation --no-deps mamba-ssm``, see
envs/gpu.yaml). Its Triton kernels (the Mamba-2 SSD scan, the gated RMSNorm) then work,
but ``import mamba_ssm`` fails, because the package ``__init__`` imports the compiled
``selective_scan_cuda`` extension that was not built.

The usual workaround, a stub ``selective_scan_cuda`` module, is harmful with
transformers >= 5.2x: transformers then resolves Mamba-1's ``selective_scan_fn`` from
``mamba_ssm`` and calls into the stub. Instead, :func:`load_mamba_ssm_triton` registers
``mamba_ssm`` as a bare package (its ``__init__`` not run) when the real import fails,
and imports only the Triton submodules. transformers then finds the Mamba-2 Triton
kernels and, for Mamba-1, falls back to its own torch path, as without ``mamba_ssm``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import types
from dataclasses import dataclass
from typing import Callable

logger = logging.getLogger(__name__)

__all__ = ["MambaSsmKernels", "load_mamba_ssm_triton", "compiled_selective_scan", "compiled_causal_conv1d"]


@dataclass(frozen=True)
class MambaSsmKernels:
    """The ``mamba_ssm`` functions the Mamba-2 fast path calls.

    Attributes
    ----------
    chunk_scan_combined : callable
        ``mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined``, its kernels' autotuning
        kept per size class (:class:`reprflow.kernels.autotune_by_size.AutotuneBySize`).
    version : str
        ``mamba_ssm`` distribution version.
    bare_package : bool
        True when ``mamba_ssm`` was registered without running its ``__init__``.
    """

    chunk_scan_combined: Callable
    version: str
    bare_package: bool


_CACHE: dict[str, MambaSsmKernels | None] = {}


def _distribution_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def _import_package_bare(name: str) -> bool:
    """Register package ``name`` in ``sys.modules`` without executing its ``__init__``."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return False
    pkg = types.ModuleType(name)
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec
    pkg.__package__ = name
    pkg.__file__ = spec.origin
    sys.modules[name] = pkg
    return True


def load_mamba_ssm_triton() -> MambaSsmKernels | None:
    """Import ``mamba_ssm``'s Triton SSD kernels, or return None when unavailable.

    Returns
    -------
    MambaSsmKernels or None
        None when ``mamba_ssm`` or Triton is not installed (logged at INFO).
    """
    if "kernels" in _CACHE:
        return _CACHE["kernels"]
    kernels = None
    bare = False
    if importlib.util.find_spec("mamba_ssm") is not None and importlib.util.find_spec("triton") is not None:
        if "mamba_ssm" not in sys.modules:
            try:
                importlib.import_module("mamba_ssm")
            except ImportError as exc:  # the compiled extension is missing
                logger.info("import mamba_ssm failed (%s); loading its Triton kernels only", exc)
                bare = _import_package_bare("mamba_ssm")
        else:
            bare = not hasattr(sys.modules["mamba_ssm"], "__version__")
        try:
            ssd = importlib.import_module("mamba_ssm.ops.triton.ssd_combined")
            from reprflow.kernels.autotune_by_size import AutotuneBySize, ssd_autotuners

            kernels = MambaSsmKernels(
                chunk_scan_combined=AutotuneBySize(ssd.mamba_chunk_scan_combined, ssd_autotuners()),
                version=_distribution_version("mamba_ssm"),
                bare_package=bare,
            )
        except ImportError as exc:
            logger.info("mamba_ssm Triton kernels unavailable: %s", exc)
    else:
        logger.info("mamba_ssm not installed: Mamba-2 uses transformers' torch path")
    _CACHE["kernels"] = kernels
    return kernels


def compiled_selective_scan() -> Callable | None:
    """``mamba_ssm``'s compiled Mamba-1 ``selective_scan_fn``, or None.

    Only a real ``selective_scan_cuda`` extension (one with ``fwd``) counts; a stub
    module does not.
    """
    if importlib.util.find_spec("selective_scan_cuda") is None:
        return None
    try:
        ext = importlib.import_module("selective_scan_cuda")
        if not hasattr(ext, "fwd"):
            return None
        mod = importlib.import_module("mamba_ssm.ops.selective_scan_interface")
    except ImportError:
        return None
    return mod.selective_scan_fn


def compiled_causal_conv1d() -> Callable | None:
    """``causal_conv1d``'s compiled ``causal_conv1d_fn`` (channel-first signature), or None."""
    if importlib.util.find_spec("causal_conv1d") is None:
        return None
    try:
        mod = importlib.import_module("causal_conv1d")
        return mod.causal_conv1d_fn
    except (ImportError, AttributeError) as exc:
        logger.info("causal_conv1d unavailable: %s", exc)
        return None
