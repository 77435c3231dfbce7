"""Device selection: the config's ``device: auto`` means CUDA when present, else CPU.

On a machine with several visible GPUs (a multi-GPU workstation running
``snakemake --cores N --resources gpu=K``, or a SLURM job given several GPUs), every
workflow job that resolves ``auto`` claims one GPU for itself: an exclusive ``flock`` on
``<lock dir>/gpu<i>.lock``, held until the process exits (the OS drops it even after
SIGKILL), so concurrent jobs -- e.g. the shards of one cell -- spread over the GPUs
instead of all landing on ``cuda:0``. With one visible GPU (a SLURM job given one GPU,
whose ``CUDA_VISIBLE_DEVICES`` already says which) nothing is locked.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import torch

from reprflow.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["claim_gpu", "gpu_lock_dir", "resolve_device", "torch_threads"]

_CLAIMED: dict[str, tuple[int, IO]] = {}  # lock dir -> (index, open lock file) of this process


def gpu_lock_dir() -> Path:
    """Where GPU claims live: ``$REPRFLOW_GPU_LOCK_DIR``, else a per-user folder in the temp dir."""
    env = os.environ.get("REPRFLOW_GPU_LOCK_DIR")
    return Path(env) if env else Path(tempfile.gettempdir()) / f"reprflow-gpu-locks-{os.getuid()}"


def claim_gpu(n_devices: int, *, lock_dir: Path | None = None, poll_s: float = 2.0) -> int:
    """Claim one of ``n_devices`` GPUs for this process and return its index.

    Tries ``gpu0.lock``, ``gpu1.lock``, ... with a non-blocking exclusive ``flock`` and
    keeps the first it gets for the life of the process; later calls return the same
    index. When every GPU is claimed by other processes, waits (polling every ``poll_s``
    seconds) until one is released.
    """
    lock_dir = Path(lock_dir) if lock_dir is not None else gpu_lock_dir()
    key = str(lock_dir)
    if key in _CLAIMED:
        return _CLAIMED[key][0]
    lock_dir.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        for i in range(n_devices):
            handle = open(lock_dir / f"gpu{i}.lock", "a+")  # noqa: SIM115 (held for the process's life)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            _CLAIMED[key] = (i, handle)
            return i
        if not waited:
            logger.info("all %d GPUs are claimed by other reprflow jobs (%s); waiting for one", n_devices, lock_dir)
            waited = True
        time.sleep(poll_s)


def resolve_device(
    name: str | torch.device | None, *, key: str = "device", error: type[ConfigError] = ConfigError
) -> torch.device:
    """Turn ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` (or a :class:`torch.device`) into a :class:`torch.device`.

    The one device resolver of the package: the workflow's ``device`` keys, the extraction,
    :func:`reprflow.collect_states`, the metrics and the probes all accept what it accepts.
    ``None`` means ``auto``: CUDA when present, else CPU; with several visible GPUs it
    claims one (:func:`claim_gpu`) and makes it the current CUDA device (Triton kernels
    launch on the current device).

    Raises ``error`` (default :class:`ConfigError`), naming ``key``, when the name is not a
    device or CUDA is asked for but not available.
    """
    if isinstance(name, torch.device):
        name = str(name)
    if name in (None, "auto"):
        if not torch.cuda.is_available():
            return torch.device("cpu")
        n = torch.cuda.device_count()
        if n == 1:
            return torch.device("cuda")
        index = claim_gpu(n)
        torch.cuda.set_device(index)
        logger.info("claimed GPU %d of %d (%s)", index, n, gpu_lock_dir())
        return torch.device(f"cuda:{index}")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise error(f"{key}: {name!r} is not a device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise error(f"{key}: {name!r} requested but CUDA is not available on this machine; use 'auto' or 'cpu'")
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    return device


@contextmanager
def torch_threads(threads: int | None, *, key: str) -> Iterator[None]:
    """Set torch's intra-op thread count (process-wide state) for the body, and restore it on
    exit, so a stage run in-process (a notebook, a test) leaves the next one as it found it.
    ``None`` leaves it alone; ``key`` names the config key in the error for ``threads < 1``."""
    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"{key}: got {threads}; expected an integer >= 1")
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
