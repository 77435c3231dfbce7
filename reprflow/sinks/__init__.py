"""Sinks: where captured batches go.

The capture engine (:func:`reprflow.extract.capture_batches`) yields one
:class:`~reprflow.sinks.base.CapturedStates` per forward pass, on the device; sinks
consume them:

* :class:`~reprflow.sinks.store.ZarrStoreSink` -- a resumable, atomic activation store
  (it owns resume, the dtype policy and atomicity);
* :class:`~reprflow.sinks.memory.MemorySink` -- numpy arrays in memory
  (:func:`reprflow.collect_states`);
* :class:`~reprflow.sinks.metrics.TokenMetricsSink` -- token metrics computed per prompt
  on the device, only their results kept.

:class:`~reprflow.sinks.thread.BackgroundWriter` is the one background thread that
waits for host copies and writes, shared by the sinks.
"""

from reprflow.sinks.base import CapturedStates, RunInfo, Sink, feed
from reprflow.sinks.memory import MemorySink
from reprflow.sinks.metrics import TokenMetricsSink
from reprflow.sinks.store import ZarrStoreSink
from reprflow.sinks.thread import BackgroundWriter

__all__ = [
    "BackgroundWriter",
    "CapturedStates",
    "MemorySink",
    "RunInfo",
    "Sink",
    "TokenMetricsSink",
    "ZarrStoreSink",
    "feed",
]
