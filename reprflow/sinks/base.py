"""What the capture engine hands to its sinks: run info once, then captured batches.

The engine (:func:`reprflow.extract.capture_batches`) yields one :class:`CapturedStates`
per forward pass, on the model's device; every sink (:class:`Sink`) consumes each of them
and decides itself what leaves the device, when, and where it goes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from reprflow.capture import CapturedBatch

__all__ = ["CapturedStates", "RunInfo", "Sink", "feed"]


@dataclass(frozen=True)
class RunInfo:
    """What every sink learns before the first batch.

    Attributes
    ----------
    state_names : tuple of str
        The K_all = L + 2 captured states: ``embed, block_1 .. block_L, final_norm``.
    views : mapping of str to list of int
        Layer views (``hf``, ``residual``) as indices into the state axis
        (:func:`reprflow.models.layouts.view_indices`).
    hidden : int
        Width of the residual stream.
    n_prompts : int
        Prompts of the run (prompt indices are ``0 .. n_prompts - 1``).
    """

    state_names: tuple[str, ...]
    views: Mapping[str, list[int]]
    hidden: int
    n_prompts: int


@dataclass(frozen=True)
class CapturedStates:
    """One forward batch, captured on the device, with where its rows come from.

    Attributes
    ----------
    rows : tuple of int
        Prompt index of every batch row, in batch order (length-bucketed, not sorted).
    lengths : tuple of int
        Real (unpadded) tokens of every row.
    window : int or None
        The store window the batch belongs to; None for a batch forwarded for other
        sinks only (e.g. token prompts of windows a resumed store already holds).
    closes_window : bool
        True for the last batch of its window.
    states : CapturedBatch
        On the model's device: ``last`` [n_states, batch, hidden] (last real token of every
        row) and ``tokens`` [n_states, n_token_rows, n_tokens, hidden] (zero past each
        row's length) or None.
    token_prompts : tuple of int
        Prompt index of each row of ``states.tokens``, in order.
    """

    rows: tuple[int, ...]
    lengths: tuple[int, ...]
    window: int | None
    closes_window: bool
    states: CapturedBatch
    token_prompts: tuple[int, ...]

    def length_of(self, prompt: int) -> int:
        """Real tokens of prompt ``prompt`` (one of ``rows``)."""
        return self.lengths[self.rows.index(prompt)]


class Sink(Protocol):
    """A consumer of captured batches (store, memory, streamed metrics).

    ``token_prompts`` is the set of prompt indices whose full token states the sink needs
    (the engine captures the union over its sinks). The engine calls :meth:`start` once,
    :meth:`consume` for every batch, then :meth:`close` (wait for background work and
    re-raise its errors), or :meth:`abort` when anything failed. A sink may also have a
    ``name`` and a ``profile()`` returning seconds per part of its work; the extraction
    records them under that name in the store attr ``timing["stages"]``.
    """

    token_prompts: frozenset[int]

    def start(self, info: RunInfo) -> None: ...

    def consume(self, batch: CapturedStates) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


def feed(batches: Iterable[CapturedStates], sinks: Sequence[Sink]) -> None:
    """Hand every batch to every sink, then close them; on any error abort them all and re-raise."""
    try:
        for batch in batches:
            for sink in sinks:
                sink.consume(batch)
        for sink in sinks:
            sink.close()
    except BaseException:
        for sink in sinks:
            sink.abort()
        raise
