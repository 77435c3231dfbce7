"""The on-disk cache of measured kernel decisions, shared by the processes of a run.

``REPRFLOW_KERNEL_CACHE`` names a JSON file holding one object, key -> value, with two kinds of
entry:

- the kernel chooser's choice per op and shape class (``reprflow/kernels/select.py``): the name
  of the fastest candidate;
- the launch configurations Triton's autotuning picked per size class for ``mamba_ssm``'s SSD
  kernels (``reprflow/kernels/autotune_by_size.py``): per autotuner, its autotune keys and the
  index of the chosen configuration.

Every key ends with :func:`identity`: the GPU's name, the versions of torch, triton, mamba_ssm and
causal_conv1d, and a digest of reprflow's kernel sources, so that another GPU model, another
package version or a changed kernel is measured again. The workflow's extraction jobs set the
variable to ``<out_dir>/logs/kernel_cache.json`` unless it is set
(``workflow_scripts/extract_activations.py``), so each shape class is measured once per run, not
once per job.

Writes are atomic (a reader never sees half a file). Two processes writing at once may drop one
entry, which is then measured again by the next job: harmless. A file that cannot be read or
written is logged at WARNING and ignored: the cache never stops a computation.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = ["ENV", "cache_path", "identity", "kernels_digest", "read_entries", "versions", "write_entry"]

#: the environment variable naming the cache file
ENV = "REPRFLOW_KERNEL_CACHE"


def cache_path() -> Path | None:
    """The cache file named by ``REPRFLOW_KERNEL_CACHE``, or None when unset or empty."""
    value = os.environ.get(ENV, "")
    return Path(value) if value else None


@functools.lru_cache(maxsize=1)
def versions() -> str:
    """``"torch X, triton Y, mamba_ssm Z, causal_conv1d W"`` (``-`` for a package not installed)."""
    from importlib import metadata

    parts = [f"torch {torch.__version__}"]
    for dist in ("triton", "mamba_ssm", "causal_conv1d"):
        try:
            parts.append(f"{dist} {metadata.version(dist.replace('_', '-'))}")
        except metadata.PackageNotFoundError:
            parts.append(f"{dist} -")
    return ", ".join(parts)


@functools.lru_cache(maxsize=1)
def kernels_digest() -> str:
    """First 12 hex digits of the sha256 of reprflow's kernel sources (``reprflow/kernels/*.py``)."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def identity(device: torch.device) -> str:
    """What a measurement on ``device`` depends on besides its shapes: GPU name, versions, code."""
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return f"{gpu} | {versions()} | reprflow kernels {kernels_digest()}"


def read_entries(path: Path) -> dict[str, Any]:
    """Every entry of the cache file (empty when the file is missing or unreadable)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        logger.warning("kernel cache %s unreadable (%s); measuring again", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def write_entry(path: Path, key: str, value: Any) -> None:
    """Add or replace one entry of the cache file, atomically; a failure is logged, not raised."""
    from reprflow.atomic import atomic_write_bytes

    data = read_entries(path)
    data[key] = value
    try:
        atomic_write_bytes(json.dumps(data, indent=1, sort_keys=True).encode(), path)
    except OSError as exc:
        logger.warning("kernel cache %s not written (%s); the next process measures again", path, exc)
