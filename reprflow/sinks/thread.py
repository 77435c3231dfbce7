"""The background writer: one thread that handles queued items while the caller computes.

Sinks hand it work (``put``) that waits for host copies and writes or reduces them, so the
thread that launches kernels never waits for the host. The queue is bounded
(``max_items``), which bounds the memory in flight; an error in the thread is re-raised in
the caller by the next ``put`` or by ``close``. With ``overlap=False`` every item is
handled at once in the caller's thread (same results, no thread).

Counters tell whether the writer keeps up: ``busy_s`` (seconds spent handling items),
``stall_s`` (seconds the caller waited in :meth:`put` for room in a full queue -- the time
a GPU is starved by its writer; about 0 when the writer keeps up; without ``overlap`` all
of the handling) and ``drain_s`` (seconds :meth:`close` waited for the queue to drain:
the writer's tail after the last batch).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["QUEUE_ITEMS", "BackgroundWriter"]

QUEUE_ITEMS = 4
"""Default bound of the queue: items (a window's last-token states, one prompt's token states)."""


class BackgroundWriter:
    """Runs ``handle(item)`` for every queued item, in order, in one background thread.

    Parameters
    ----------
    handle : callable
        ``handle(item)``; runs in the writer thread (or inline without ``overlap``).
    overlap : bool
        Use a thread; False handles each item inside :meth:`put`.
    name : str
        Thread name (shows in stack dumps).
    max_items : int
        Queue bound; :meth:`put` blocks while the queue is full.
    """

    def __init__(
        self, handle: Callable[[Any], None], *, overlap: bool, name: str, max_items: int = QUEUE_ITEMS
    ) -> None:
        self.handle = handle
        self.busy_s = 0.0
        self.stall_s = 0.0
        self.drain_s = 0.0
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        if overlap:
            self.queue: queue.Queue = queue.Queue(maxsize=max_items)
            self.abort = threading.Event()
            self.thread = threading.Thread(target=self._run, name=name, daemon=True)
            self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                item = self.queue.get(timeout=0.1)
            except queue.Empty:
                if self.abort.is_set():
                    return
                continue
            if item is None or self.abort.is_set():
                return
            t0 = time.perf_counter()
            try:
                self.handle(item)
            except BaseException as exc:  # re-raised in the caller's thread by put()/close()
                self.error = exc
                return
            finally:
                self.busy_s += time.perf_counter() - t0

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    def put(self, item: Any) -> None:
        """Queue ``item`` (not None); re-raise an earlier error of the thread."""
        if self.thread is None:
            t0 = time.perf_counter()
            try:
                self.handle(item)
            finally:
                self.busy_s += time.perf_counter() - t0
                self.stall_s += time.perf_counter() - t0  # inline: the caller waits for all of it
            return
        self._raise_if_failed()
        try:
            self.queue.put_nowait(item)
            return
        except queue.Full:
            pass
        t0 = time.perf_counter()
        try:
            while True:
                self._raise_if_failed()
                try:
                    self.queue.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue
        finally:
            self.stall_s += time.perf_counter() - t0

    def close(self) -> None:
        """Wait until every queued item is handled; re-raise an error of the thread."""
        if self.thread is None:
            return
        t0 = time.perf_counter()
        while self.thread.is_alive():
            try:
                self.queue.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        self.thread.join()
        self.drain_s += time.perf_counter() - t0
        self._raise_if_failed()

    def cancel(self) -> None:
        """Stop the thread without handling the items still queued."""
        if self.thread is not None:
            self.abort.set()
            self.thread.join()
