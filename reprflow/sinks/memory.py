"""The in-memory sink: captured batches -> numpy arrays (for :func:`reprflow.collect_states`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from reprflow.errors import ReprflowError
from reprflow.sinks.base import CapturedStates, RunInfo
from reprflow.transfer import PendingHost, copy_to_host

__all__ = ["MemorySink"]


class MemorySink:
    """Keeps the states of a few chosen states (a view) of every prompt in host memory.

    Parameters
    ----------
    n_prompts : int
        Prompts of the run.
    states : sequence of int
        Indices into the state axis to keep, in order (e.g. a view's indices).
    positions : {"last", "all"}
        ``"last"``: the last real token of every prompt; ``"all"``: every token of every
        prompt (all prompts are token prompts).

    Notes
    -----
    Copies start on the device as each batch is consumed (pinned, asynchronous on a
    GPU); :meth:`result` waits for them. Everything arrives as float32. With ``"last"``
    each batch's copy is written into the one [n_kept, n_prompts, hidden] result when the
    next batch arrives (by then it has landed), so host memory holds the result plus two
    batches, not every batch's copy and then the result beside them (2x; 34 GB at 25,000
    prompts x 66 states x 2560).
    """

    def __init__(self, n_prompts: int, *, states: Sequence[int], positions: str) -> None:
        if positions not in ("last", "all"):
            raise ReprflowError(f"positions={positions!r}: expected 'last' or 'all'")
        self.n_prompts = n_prompts
        self.states = [int(i) for i in states]
        self.positions = positions
        self.token_prompts = frozenset(range(n_prompts)) if positions == "all" else frozenset()
        self._index: torch.Tensor | None = None
        self._last: list[tuple[tuple[int, ...], PendingHost]] = []  # copies not yet in _out
        self._out: np.ndarray | None = None  # [n_kept, n_prompts, hidden], "last" only
        self._tokens: dict[int, PendingHost] = {}

    def start(self, info: RunInfo) -> None:
        if self.positions == "last":  # pages are committed as batches land, not here
            self._out = np.empty((len(self.states), self.n_prompts, info.hidden), dtype=np.float32)

    def consume(self, batch: CapturedStates) -> None:
        if self._index is None:
            self._index = torch.tensor(self.states, device=batch.states.last.device)
        if self.positions == "last":  # [n_kept, batch, hidden]
            self._last.append((batch.rows, copy_to_host(batch.states.last.index_select(0, self._index).float())))
            self._drain(keep=1)
            return
        for slot, pid in enumerate(batch.token_prompts):  # [n_kept, n_tokens, hidden], unpadded
            states = batch.states.tokens[:, slot, : batch.length_of(pid)].index_select(0, self._index)
            self._tokens[pid] = copy_to_host(states.float())

    def close(self) -> None:
        pass

    def abort(self) -> None:
        self._last.clear()
        self._tokens.clear()
        self._out = None

    def _drain(self, *, keep: int) -> None:
        """Write all but the newest ``keep`` pending batch copies into the result, and drop them."""
        while len(self._last) > keep:
            rows, pending = self._last.pop(0)
            self._out[:, list(rows), :] = pending.wait().numpy()

    def result(self) -> np.ndarray | list[np.ndarray]:
        """``last``: [n_kept, n_prompts, hidden]; ``all``: one [n_kept, n_tokens_i, hidden] per prompt (float32)."""
        if self.positions == "last":
            self._drain(keep=0)
            return self._out
        missing = [i for i in range(self.n_prompts) if i not in self._tokens]
        if missing:
            raise ReprflowError(f"MemorySink: prompts {missing[:5]} were never captured")
        return [self._tokens[i].wait().numpy() for i in range(self.n_prompts)]
