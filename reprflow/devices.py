"""Device selection: the config's ``device: auto`` means CUDA when present, else CPU.

On a machine with several visible GPUs (a multi-GPU workstation running
``snakemake --cores N --resources gpu=K``, or a SLURM job given several GPUs), every
workflow job that resolves ``auto`` claims one GPU for itself: an exclusive ``flock`` on
``<lock dir>/gpu<i>.lock``, held until the process exits or calls :func:`release_gpu` (the OS
drops it even after SIGKILL), so concurrent jobs -- e.g. the shards of one cell -- spread over
the GPUs instead of all landing on ``cuda:0``. With one visible GPU (a SLURM job given one GPU,
whose ``CUDA_VISIBLE_DEVICES`` already says which) nothing is locked, unless :data:`SHARED_ENV`
says that jobs may outnumber the GPUs.

**Start-up ahead of the GPU** (``execution.jobs_per_gpu``, ``reprflow/workflow/scheduling.py``):
a local Snakemake run may start more GPU jobs than there are GPUs, so that the next job of a
GPU does its start-up (interpreter and imports, reading the prompts, the tokenizer, a
checkpoint's weights) while the current one computes, and claims the GPU the moment it is
released. Jobs waiting for a GPU take free ones in priority order, highest first (equal
priorities: in the order they began to wait): each waiting process keeps a ticket
``<lock dir>/wait-<pid>`` holding its priority, under an ``flock`` of its own (a dead waiter's
ticket is unlocked, hence ignored), and claims a free GPU only while fewer live tickets are
ahead of it than GPUs are free. The extraction jobs' priority is their Snakemake ``priority``
(:func:`reprflow.workflow.targets.extraction_priority`: the longest first), taken as a ticket
after their imports, before they read their prompts (:func:`waiting_for_gpu`), so a long job
still reading its prompts is not overtaken by a short one that was ready first.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

from reprflow.errors import ConfigError

if TYPE_CHECKING:
    import torch
# torch is imported where a function needs it, not here: the GPU tickets (claim_gpu,
# queue_for_gpu, release_gpu) are file locks, and a process that only takes or gives back a
# ticket should not pay torch's import (~3 s of CPU on a 2-core box)

logger = logging.getLogger(__name__)

__all__ = [
    "SHARED_ENV",
    "claim_gpu",
    "gpu_lock_dir",
    "leave_gpu_queue",
    "queue_for_gpu",
    "release_gpu",
    "resolve_device",
    "torch_threads",
    "waiting_for_gpu",
    "will_claim_gpu",
]

SHARED_ENV = "REPRFLOW_SHARED_GPUS"
"""Set to ``1`` by the Snakefile on a local run: GPU jobs may outnumber the GPUs, so a job claims
its GPU even when only one is visible. The Snakefile names it through
:data:`reprflow.workflow.scheduling.SHARED_ENV` (the same string, tested: importing it from there
would make that planning module a dependency of every stage)."""

_CLAIMED: dict[str, tuple[int, IO]] = {}  # lock dir -> (index, open lock file) of this process
_TICKETS: dict[str, tuple[float, float, Path, IO]] = {}  # lock dir -> (priority, since, path, open ticket)


def gpu_lock_dir() -> Path:
    """Where GPU claims live: ``$REPRFLOW_GPU_LOCK_DIR``, else a per-user folder in the temp dir."""
    env = os.environ.get("REPRFLOW_GPU_LOCK_DIR")
    return Path(env) if env else Path(tempfile.gettempdir()) / f"reprflow-gpu-locks-{os.getuid()}"


def queue_for_gpu(priority: float = 0.0, *, lock_dir: Path | None = None) -> None:
    """Take this process's place among the processes waiting for a GPU, with ``priority``
    (higher goes first), from now until it claims one (:func:`claim_gpu`) or exits. A second
    call keeps the first place."""
    lock_dir = Path(lock_dir) if lock_dir is not None else gpu_lock_dir()
    if str(lock_dir) in _TICKETS or str(lock_dir) in _CLAIMED:
        return
    lock_dir.mkdir(parents=True, exist_ok=True)
    since = time.time()
    # written and locked under a temporary name, then renamed: a ticket is never seen unlocked
    handle = tempfile.NamedTemporaryFile("w", dir=lock_dir, prefix=".ticket-", delete=False)  # noqa: SIM115
    fcntl.flock(handle, fcntl.LOCK_EX)
    handle.write(f"{float(priority)!r} {since!r}\n")
    handle.flush()
    path = lock_dir / f"wait-{os.getpid()}"
    os.replace(handle.name, path)
    _TICKETS[str(lock_dir)] = (float(priority), since, path, handle)


def leave_gpu_queue(*, lock_dir: Path | None = None) -> None:
    """Give up this process's place among those waiting for a GPU (:func:`queue_for_gpu`), e.g.
    when its start-up failed and it lives on (a notebook); no-op without one."""
    ticket = _TICKETS.pop(str(Path(lock_dir) if lock_dir is not None else gpu_lock_dir()), None)
    if ticket is not None:
        ticket[2].unlink(missing_ok=True)  # unlink, then unlock: never seen unlocked while listed
        ticket[3].close()


@contextmanager
def waiting_for_gpu(priority: float = 0.0, *, enabled: bool = True, lock_dir: Path | None = None) -> Iterator[None]:
    """Hold a place among the processes waiting for a GPU (:func:`queue_for_gpu`) through the body:
    the start-up a job does before it claims one (:func:`claim_gpu` in the body gives it up on its
    claim). If the body fails first, the place is given up too. ``enabled=False``: a no-op."""
    if enabled:
        queue_for_gpu(priority, lock_dir=lock_dir)
    try:
        yield
    finally:
        leave_gpu_queue(lock_dir=lock_dir)


def _waiting_ahead(lock_dir: Path, priority: float, since: float) -> int:
    """Live tickets of other processes ahead of (priority, since); stale ones are removed."""
    ahead = 0
    for path in lock_dir.glob("wait-*"):
        if path.name == f"wait-{os.getpid()}":
            continue
        try:
            with open(path) as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:  # held: its process is waiting
                    other, other_since = (float(v) for v in fh.read().split())
                    ahead += (other, -other_since) > (priority, -since)
                    continue
            path.unlink(missing_ok=True)  # unlocked: its process died (or just claimed and left)
        except (OSError, ValueError):
            continue
    return ahead


def _try_lock(path: Path) -> IO | None:
    handle = open(path, "a+")  # noqa: SIM115 (held for the claim's life)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def claim_gpu(n_devices: int, *, lock_dir: Path | None = None, poll_s: float = 0.1, priority: float = 0.0) -> int:
    """Claim one of ``n_devices`` GPUs for this process and return its index.

    Tries ``gpu0.lock``, ``gpu1.lock``, ... with a non-blocking exclusive ``flock`` and keeps
    the first it gets until :func:`release_gpu` or the process's end; later calls return the
    same index. While every GPU is claimed, or other waiting processes are ahead of it (module
    docstring; its ticket is the one :func:`queue_for_gpu` took, else one with ``priority``
    taken now), it waits, polling every ``poll_s`` seconds.
    """
    lock_dir = Path(lock_dir) if lock_dir is not None else gpu_lock_dir()
    key = str(lock_dir)
    if key in _CLAIMED:
        return _CLAIMED[key][0]
    queue_for_gpu(priority, lock_dir=lock_dir)
    priority, since = _TICKETS[key][:2]
    waited = False
    try:
        while True:
            ahead = _waiting_ahead(lock_dir, priority, since)
            held: list[tuple[int, IO]] = []
            for i in range(n_devices if ahead < n_devices else 0):  # take the free GPUs, to count them
                handle = _try_lock(lock_dir / f"gpu{i}.lock")
                if handle is not None:
                    held.append((i, handle))
                    if len(held) > ahead:  # one free GPU for each waiter ahead, and one for us
                        break
            for _, handle in held[:-1] if len(held) > ahead else held:
                handle.close()  # left to the waiters ahead
            if len(held) > ahead:
                index, handle = held[-1]
                handle.seek(0)
                handle.truncate()
                handle.write(f"{os.getpid()}\n")
                handle.flush()
                _CLAIMED[key] = (index, handle)
                logger.info(
                    "claimed GPU %d of %d (%s; %.1f s after it queued, priority %g)",
                    index,
                    n_devices,
                    lock_dir,
                    time.time() - since,
                    priority,
                )
                return index
            if not waited:
                logger.info(
                    "all %d GPUs are claimed by other reprflow jobs or left to %d waiting ahead (%s); waiting",
                    n_devices,
                    ahead,
                    lock_dir,
                )
                waited = True
            time.sleep(poll_s)
    finally:
        leave_gpu_queue(lock_dir=lock_dir)


def release_gpu(*, lock_dir: Path | None = None) -> None:
    """Give back the GPU this process claimed (no-op when it holds none): frees torch's cached
    memory on it, then drops the lock, so a waiting job can start on it while this one ends."""
    key = str(Path(lock_dir) if lock_dir is not None else gpu_lock_dir())
    claimed = _CLAIMED.pop(key, None)
    if claimed is None:
        return
    index, handle = claimed
    torch = sys.modules.get("torch")  # a process that never imported torch has no CUDA memory to free
    if torch is not None and torch.cuda.is_available():
        with torch.cuda.device(index):
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
    handle.close()
    logger.info("released GPU %d", index)


def will_claim_gpu(name: str | torch.device | None) -> bool:
    """Whether :func:`resolve_device` will claim a GPU for ``name`` (``auto`` on a machine with
    CUDA, and several visible GPUs or :data:`SHARED_ENV` set), without claiming one."""
    import torch

    if isinstance(name, torch.device) or name not in (None, "auto") or not torch.cuda.is_available():
        return False
    return torch.cuda.device_count() > 1 or os.environ.get(SHARED_ENV) == "1"


def resolve_device(
    name: str | torch.device | None,
    *,
    key: str = "device",
    error: type[ConfigError] = ConfigError,
    priority: float = 0.0,
) -> torch.device:
    """Turn ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` (or a :class:`torch.device`) into a :class:`torch.device`.

    The one device resolver of the package: the workflow's ``device`` keys, the extraction,
    :func:`reprflow.collect_states`, the metrics and the probes all accept what it accepts.
    ``None`` means ``auto``: CUDA when present, else CPU; with several visible GPUs it
    claims one (:func:`claim_gpu`, with ``priority`` unless :func:`queue_for_gpu` gave one)
    and makes it the current CUDA device (Triton kernels launch on the current device).

    Raises ``error`` (default :class:`ConfigError`), naming ``key``, when the name is not a
    device or CUDA is asked for but not available.
    """
    import torch

    if isinstance(name, torch.device):
        name = str(name)
    if name in (None, "auto"):
        if not torch.cuda.is_available():
            return torch.device("cpu")
        if not will_claim_gpu(name):
            return torch.device("cuda")
        index = claim_gpu(torch.cuda.device_count(), priority=priority)
        torch.cuda.set_device(index)
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
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"{key}: got {threads}; expected an integer >= 1")
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
