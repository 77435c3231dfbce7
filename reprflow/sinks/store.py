"""The Zarr store sink: captured batches -> one resumable, atomic activation store.

It owns everything about persistence that the capture engine must not know:

* **resume**: :meth:`ZarrStoreSink.open` reuses a complete store, resumes a partial one
  (and says so on the console) and lists the windows still to compute;
* **dtype**: on the first batch of a fresh store it reads the peak |x| on the device (one
  sync) and applies the policy :func:`reprflow.store.choose_store_dtype`, so that token
  states are converted on the device afterwards (:func:`start_token_states_copy`); the
  writer thread creates the arrays (and, for a fresh store whose input digest is deferred,
  the partial store itself: that waits for the tokenizer, never the GPU);
* **atomicity and checks**: :class:`reprflow.store.StoreWriter` writes under
  ``.partial``, checks every value and renames on :meth:`ZarrStoreSink.finalize`.

States leave the device through :func:`reprflow.transfer.copy_to_host` (pinned buffers,
a side CUDA stream) as soon as a batch is consumed; the waiting, checks, compression and
disk writes run in the background writer thread (:class:`reprflow.sinks.thread.BackgroundWriter`),
which takes a window's last-token states, or one token prompt's states (written at once
rather than held until its window ends).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reprflow.sinks.base import CapturedStates, RunInfo
from reprflow.sinks.thread import BackgroundWriter
from reprflow.store import StoreSpec, StoreWriter, choose_store_dtype
from reprflow.transfer import PendingHost, copy_to_host

logger = logging.getLogger(__name__)

__all__ = ["PendingTokenStates", "ZarrStoreSink", "console", "start_token_states_copy"]


def console(message: str) -> None:
    """Tell the user now: stderr (the console of a Snakemake job) and the log."""
    logger.info("%s", message)
    print(f"reprflow: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class PendingTokenStates:
    """One prompt's token states [n_states, n_tokens, hidden] on their way to the host.

    They are converted to the store's dtype on the device (for float16, bf16 -> fp16 is
    exact for |x| in [2**-14, 65504) and float32 -> fp16 rounds to nearest even, as numpy's
    cast would; for float32 every conversion is exact) and travel with their peak |x|
    computed on the device before conversion, so the writer needs no host-side scan.
    Nothing waits for the GPU until :meth:`result`, which the writer thread calls.
    """

    states: PendingHost
    peak: PendingHost  # 0-d float32 max |x| of the unconverted states

    def result(self) -> tuple[np.ndarray, float]:
        """The states as a numpy array (float16 for a float16 store, else float32) and their peak |x|.

        The peak is the device-side max |x| before conversion (NaN if any NaN), for
        :meth:`reprflow.store.StoreWriter.write_tokens`, which refuses non-finite values
        and float16 overflow.
        """
        return self.states.wait().numpy(), float(self.peak.wait())


def start_token_states_copy(states: torch.Tensor, *, disk_dtype: str) -> PendingTokenStates:
    """Start the host copy of one prompt's token states for a store of ``disk_dtype`` (float16/float32)."""
    peak = copy_to_host(states.abs().amax().float())
    dtype = torch.float16 if disk_dtype == "float16" else torch.float32
    return PendingTokenStates(states=copy_to_host(states.to(dtype)), peak=peak)


def _materialize_last(shape: tuple[int, int, int], parts: Sequence[tuple[np.ndarray, PendingHost]]) -> np.ndarray:
    """Wait for a window's last-token copies; return ``last`` [n_states, n_window, hidden] float32."""
    last = np.empty(shape, dtype=np.float32)
    for positions, pending in parts:
        last[:, positions, :] = pending.wait().numpy()
    return last


class ZarrStoreSink:
    """Writes captured batches into one activation store (see the module docstring).

    Use: ``sink = ZarrStoreSink(path, spec, ...)``; ``if sink.open(): done`` (complete
    store exists); compute the windows ``sink.pending_windows`` and hand their batches to
    :meth:`consume` (through :func:`reprflow.sinks.base.feed`); then :meth:`finalize`.

    Parameters
    ----------
    path : path-like
        Final store path.
    spec : StoreSpec
        Shapes, windows, token prompts and requested dtype.
    attrs, labels, n_tokens, lengths, content_sha256
        As for :class:`reprflow.store.StoreWriter` (``content_sha256`` may be a callable:
        the digest is then taken by the writer thread when it creates a fresh store).
    overlap : bool
        Write in the background writer thread while the next batches are computed.
    """

    name = "store"

    def __init__(
        self,
        path: str | os.PathLike,
        spec: StoreSpec,
        *,
        attrs: Mapping[str, Any],
        labels: np.ndarray,
        n_tokens: np.ndarray,
        lengths: np.ndarray,
        content_sha256: str | Callable[[], str],
        overlap: bool = True,
    ) -> None:
        self.path = Path(path)
        self.spec = spec
        self.writer = StoreWriter(
            path, spec, attrs=attrs, labels=labels, n_tokens=n_tokens, lengths=lengths, content_sha256=content_sha256
        )
        self.token_prompts = frozenset(spec.token_prompt_ids)
        self.overlap = overlap
        self.pending_windows: list[int] = []
        self.dtype: str | None = None
        self._parts: dict[int, list[tuple[np.ndarray, PendingHost]]] = {}
        self._thread: BackgroundWriter | None = None
        self.seconds = {"copy_wait": 0.0, "write": 0.0, "create": 0.0}

    # ------------------------------------------------------------------ resume
    def open(self) -> bool:
        """True if the complete store already exists (nothing to do); else list the pending windows."""
        if self.writer.open():
            return True
        self.pending_windows = self.writer.pending_windows()
        self._announce_resume()
        self.dtype = self.writer.decided_dtype()  # None until the first batch of a fresh store
        return False

    def _announce_resume(self) -> None:
        """Say on the console that a partial store is resumed (or was restarted), and how far it is."""
        spec, writer = self.spec, self.writer
        if writer.restart_reason is not None:
            console(
                f"{writer.partial}: a partial store from another run ({writer.restart_reason}) was deleted; "
                "starting over"
            )
        todo = set(self.pending_windows)
        done = [w for w in range(spec.n_windows) if w not in todo]
        if done:
            written = sum(b - a for a, b in map(spec.window_range, done))
            console(
                f"resuming {writer.partial}: {written:,} of {spec.n_samples:,} prompts already written "
                f"({len(done)} of {spec.n_windows} windows); extracting the remaining "
                f"{spec.n_samples - written:,}"
            )

    # ------------------------------------------------------------------ sink protocol
    def start(self, info: RunInfo) -> None:
        self._thread = BackgroundWriter(self._write, overlap=self.overlap, name="reprflow-store-writer")

    def _fix_dtype(self, batch: CapturedStates) -> str:
        """Fresh store: choose the on-disk dtype from the first batch's peak (one device sync).

        The arrays are created by the writer thread (first in its queue): creating them may
        create the partial store, which waits for the input digest, i.e. for every prompt
        to be tokenised (:class:`reprflow.token_ids.TokenIds`), and the GPU must not wait.
        """
        peak = batch.states.last.abs().amax()
        slots = [s for s, p in enumerate(batch.token_prompts) if p in self.token_prompts]
        if slots:
            peak = torch.maximum(peak, batch.states.tokens[:, slots].abs().amax())
        peak = float(peak)
        dtype = choose_store_dtype(self.spec.store_dtype, peak)
        self._thread.put(("dtype", int(batch.window), (dtype, peak)))
        return dtype

    def consume(self, batch: CapturedStates) -> None:
        """Start the host copies of one batch; queue its token prompts, and its window once whole."""
        w = batch.window
        if w is None:  # forwarded for other sinks only
            return
        if self.dtype is None:
            self.dtype = self._fix_dtype(batch)
        w_start, w_stop = self.spec.window_range(w)
        # float32 on the device: the host-side bf16 conversion is the slower path
        positions = np.asarray(batch.rows, dtype=np.int64) - w_start
        self._parts.setdefault(w, []).append((positions, copy_to_host(batch.states.last.float())))
        for slot, pid in enumerate(batch.token_prompts):
            if pid in self.token_prompts:  # [n_states, n_tokens, hidden], unpadded
                states = batch.states.tokens[:, slot, : batch.length_of(pid)]
                self._thread.put(("tokens", pid, start_token_states_copy(states, disk_dtype=self.dtype)))
        if batch.closes_window:
            shape = (self.spec.n_states, w_stop - w_start, self.spec.hidden)
            self._thread.put(("window", w, functools.partial(_materialize_last, shape, self._parts.pop(w))))

    def _write(self, item: tuple) -> None:
        kind, key, payload = item
        t0 = time.perf_counter()
        if kind == "dtype":  # payload: (dtype, peak) chosen from the first batch of window `key`
            dtype, peak = payload
            self.writer.create_arrays(dtype, observed_max_abs=peak, window=key)
            self.seconds["create"] += time.perf_counter() - t0
            return
        if kind == "tokens":  # payload: PendingTokenStates
            states, peak = payload.result()
            t1 = time.perf_counter()
            self.writer.write_tokens(key, states, peak=peak)
        else:  # payload: callable that waits for the window's last-token copies
            last = payload()
            t1 = time.perf_counter()
            self.writer.write_window(key, last)
        self.seconds["copy_wait"] += t1 - t0
        self.seconds["write"] += time.perf_counter() - t1

    def profile(self) -> dict[str, float]:
        """Seconds of this run: writer thread waiting for device-to-host copies (``copy_wait``),
        checking, converting, compressing and writing (``write``), creating the store
        (``create``: includes waiting for the input digest); the caller blocked on a full
        queue (``stall``) and waiting for the last writes at the end (``drain``)."""
        t = self._thread
        return {**self.seconds, "stall": t.stall_s if t else 0.0, "drain": t.drain_s if t else 0.0}

    def close(self) -> None:
        """Wait until every queued window is written; re-raise a writer error."""
        if self._thread is not None:
            self._thread.close()

    def abort(self) -> None:
        """Stop the writer thread (joined), then unlock the store; windows not written keep their
        markers unset (a rerun resumes, in this process or another)."""
        if self._thread is not None:
            self._thread.cancel()
        self.writer.close()

    def finalize(self, extra_attrs: Mapping[str, Any] | None = None) -> Path:
        """Mark the store complete and give it its final name (:meth:`StoreWriter.finalize`)."""
        return self.writer.finalize(extra_attrs)
