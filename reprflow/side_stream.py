"""GPU work handed to another thread runs on a side CUDA stream, next to the forward passes.

The thread that launches the forward passes records a :func:`ready` event after the
kernels that produce some tensors and hands both to a worker thread (e.g. the streamed
token metrics, :class:`reprflow.sinks.TokenMetricsSink`). The worker computes inside
:func:`on_side_stream`: its kernels go to a dedicated stream that first waits for that
event, so they can run concurrently with the next forward passes instead of queueing
behind (or in front of) them on one stream. The kernels and their order are unchanged,
so are the results.

The inputs were allocated on the compute stream; ``record_stream`` tells the caching
allocator that the side stream reads them, so their memory is not handed to a later
forward pass before the side stream is done with it. On the CPU (or with no event)
everything runs where it is, as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch

__all__ = ["on_side_stream", "ready"]

_STREAMS: dict[tuple[torch.device, str], torch.cuda.Stream] = {}


def ready(device: torch.device) -> torch.cuda.Event | None:
    """An event recorded now on ``device``'s current stream (None on the CPU)."""
    if device.type != "cuda":
        return None
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(device))
    return event


def _stream(device: torch.device, name: str) -> torch.cuda.Stream:
    key = (device, name)
    if key not in _STREAMS:
        _STREAMS[key] = torch.cuda.Stream(device=device)
    return _STREAMS[key]


@contextmanager
def on_side_stream(
    tensors: Iterable[torch.Tensor], event: torch.cuda.Event | None, *, name: str = "side"
) -> Iterator[None]:
    """Run the body's CUDA work on the side stream ``name``, after ``event``.

    Parameters
    ----------
    tensors : iterable of Tensor
        The inputs the body reads (produced before ``event`` on the compute stream).
    event : torch.cuda.Event or None
        From :func:`ready`; None runs the body on the current stream (CPU tensors).
    name : str
        One stream per name and device (e.g. ``"metrics"``).
    """
    tensors = list(tensors)
    if event is None or not tensors or tensors[0].device.type != "cuda":
        yield
        return
    stream = _stream(tensors[0].device, name)
    stream.wait_event(event)
    for t in tensors:
        t.record_stream(stream)
    with torch.cuda.stream(stream):
        yield
