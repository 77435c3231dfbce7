"""Copies between host and device that do not block the host.

``to_device(x, device)`` sends a host tensor to a GPU from pinned memory, asynchronously.

Device to host: ``copy_to_host(x)`` starts the copy of a CUDA tensor into page-locked host memory on a
dedicated copy stream (after the work already queued on the compute stream that
produces ``x``) and returns at once; :meth:`PendingHost.wait` blocks until the bytes
have landed. The forward pass of the next batch runs while the copy engine moves the
previous one, and the thread that waits (the store writer) is not the one that
launches kernels. CPU tensors are returned as they are, already "landed".

Pinned buffers come from torch's caching host allocator, so after the first window they
are recycled rather than allocated; ``record_stream`` keeps the device source alive
until the copy stream has read it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["PendingHost", "copy_to_host", "to_device"]

_COPY_STREAMS: dict[torch.device, torch.cuda.Stream] = {}


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host tensor to ``device``; to a GPU from pinned memory, without blocking the host."""
    if device.type != "cuda":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)


@dataclass(frozen=True)
class PendingHost:
    """A host copy of one tensor, possibly still in flight.

    Attributes
    ----------
    host : Tensor
        The destination, on the CPU (pinned for a CUDA source); same shape and dtype as
        the source, contiguous. Do not read it before :meth:`wait`.
    event : torch.cuda.Event or None
        Recorded on the copy stream after the copy; None for a CPU source.
    """

    host: torch.Tensor
    event: torch.cuda.Event | None = None

    def wait(self) -> torch.Tensor:
        """Block until the copy has landed; return the host tensor."""
        if self.event is not None:
            self.event.synchronize()
        return self.host


def _copy_stream(device: torch.device) -> torch.cuda.Stream:
    if device not in _COPY_STREAMS:
        _COPY_STREAMS[device] = torch.cuda.Stream(device=device)
    return _COPY_STREAMS[device]


def copy_to_host(x: torch.Tensor) -> PendingHost:
    """Start copying ``x`` to host memory without blocking the caller.

    Parameters
    ----------
    x : Tensor
        Any shape and dtype. A CUDA tensor is made contiguous on the current (compute)
        stream, then copied on the device's copy stream into a pinned buffer.

    Returns
    -------
    PendingHost
        ``wait()`` gives a CPU tensor equal to ``x``. For a CPU ``x`` that is ``x``
        itself (detached), with nothing in flight.
    """
    if x.device.type != "cuda":
        return PendingHost(x.detach())
    src = x.detach().contiguous()
    host = torch.empty(src.shape, dtype=src.dtype, pin_memory=True)
    compute = torch.cuda.current_stream(src.device)
    stream = _copy_stream(src.device)
    stream.wait_stream(compute)  # the copy starts after the kernels that produce src
    with torch.cuda.stream(stream):
        host.copy_(src, non_blocking=True)
        event = torch.cuda.Event()
        event.record(stream)
    src.record_stream(stream)  # the allocator must not reuse src before the copy has read it
    return PendingHost(host, event)
