"""Token ids of a prompt file, tokenised ahead in a background thread while the GPU computes.

Tokenising a paper prompt set (800 prompts x 2K tokens: 4 s on an H200 host) before the
first forward pass leaves the GPU idle for that long. :class:`TokenIds` instead tokenises
the prompts in the order the extraction will forward them, one chunk (a store window) at a
time, in one background thread; reading ``ids[i]`` waits only for the chunk that holds
``i``. So the first batch starts after one chunk, and later chunks are ready long before
their batches (a window takes the GPU longer than its tokenisation). The fast tokenizer
releases the GIL while it encodes, so the thread that launches kernels keeps running.

The ids and their checks are exactly those of one batched call (:func:`tokenize_prompts`
on every chunk): the same ids, and the same :class:`reprflow.errors.PromptError` for a record
whose ``n_tokens`` disagrees with the tokenizer -- raised in the thread that reads an id of
that chunk or a later one, or that waits for all (:meth:`TokenIds.wait_all`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from reprflow.errors import PromptError

__all__ = ["TokenIds", "tokenize_prompts"]


def tokenize_prompts(
    tokenizer: Any, prompts: Sequence[Mapping[str, Any]], indices: Sequence[int], *, prompt_file: str
) -> dict[int, list[int]]:
    """Token ids of the prompts at ``indices`` (one batched call), checked against each record's ``n_tokens``."""
    indices = list(indices)
    encoded = tokenizer([prompts[i]["prompt"] for i in indices])["input_ids"]
    ids = dict(zip(indices, encoded))
    for i in indices:
        expected = prompts[i]["n_tokens"]
        if len(ids[i]) != expected:
            raise PromptError(
                f"{prompt_file}: prompt {prompts[i].get('id', i)!r} tokenizes to {len(ids[i])} tokens with "
                f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} but the record says {expected}; "
                "the prompt file was built with another tokenizer -- rebuild it or pass the "
                "matching tokenizer"
            )
    return ids


class TokenIds(Mapping[int, list[int]]):
    """``index -> token ids`` of the prompts ``order``, filled chunk by chunk in that order.

    Parameters
    ----------
    tokenizer : PreTrainedTokenizerFast
        The prompt file's tokenizer. Used by the background thread only, until it is done.
    prompts : sequence of dict
        Prompt records (``prompt``, ``n_tokens``, ``id``).
    order : sequence of int
        The prompt indices, in the order they will be read (unique).
    prompt_file : str
        Names the file in errors.
    chunk : int
        Prompts per tokenizer call (the extraction passes its window size).
    background : bool
        Tokenise in a background thread; False tokenises everything in the constructor
        (one chunk at a time, same ids, no thread).

    Attributes
    ----------
    busy_s : float
        Seconds spent tokenising (in the background thread).
    wait_s : float
        Seconds the thread that made this object (the one that launches the forward
        passes) waited for ids not yet tokenised.

    Notes
    -----
    Use it as a context manager (or call :meth:`close`): leaving stops the thread after
    its current chunk. Reading an index outside ``order`` raises ``KeyError``.
    """

    def __init__(
        self,
        tokenizer: Any,
        prompts: Sequence[Mapping[str, Any]],
        order: Sequence[int],
        *,
        prompt_file: str,
        chunk: int,
        background: bool = True,
    ) -> None:
        self._order = [int(i) for i in order]
        self._position = {i: p for p, i in enumerate(self._order)}
        if len(self._position) != len(self._order):
            raise ValueError("TokenIds: order lists an index twice")
        self._chunk = max(1, int(chunk))
        self._ids: dict[int, list[int]] = {}
        self._done = 0  # positions of order tokenised so far
        self._error: BaseException | None = None
        self._ready = threading.Condition()
        self._stop = threading.Event()
        self.busy_s = 0.0
        self.wait_s = 0.0
        self._owner = threading.current_thread()
        self._thread: threading.Thread | None = None
        run = lambda: self._run(tokenizer, prompts, prompt_file)  # noqa: E731
        if background:
            self._thread = threading.Thread(target=run, name="reprflow-tokenizer", daemon=True)
            self._thread.start()
        else:
            run()
            self._raise_if_failed()

    def _run(self, tokenizer: Any, prompts: Sequence[Mapping[str, Any]], prompt_file: str) -> None:
        for start in range(0, len(self._order), self._chunk):
            if self._stop.is_set():
                return
            t0 = time.perf_counter()
            try:
                part = tokenize_prompts(
                    tokenizer, prompts, self._order[start : start + self._chunk], prompt_file=prompt_file
                )
            except BaseException as exc:  # re-raised in the reader's thread
                with self._ready:
                    self._error = exc
                    self._ready.notify_all()
                return
            finally:
                self.busy_s += time.perf_counter() - t0
            with self._ready:
                self._ids.update(part)
                self._done = min(len(self._order), start + self._chunk)
                self._ready.notify_all()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _wait_for(self, position: int) -> None:
        """Block until ``order[position]`` is tokenised (or the thread failed: re-raise its error)."""
        if position < self._done:
            return
        t0 = time.perf_counter()
        with self._ready:
            while position >= self._done:
                self._raise_if_failed()
                if self._thread is None or not self._thread.is_alive():
                    self._raise_if_failed()
                    raise RuntimeError("TokenIds: the tokenizer thread was stopped")
                self._ready.wait(timeout=0.1)
        if threading.current_thread() is self._owner:
            self.wait_s += time.perf_counter() - t0

    def __getitem__(self, i: int) -> list[int]:
        self._wait_for(self._position[i])
        return self._ids[i]

    def __iter__(self) -> Iterator[int]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, i: object) -> bool:
        return i in self._position

    def wait_all(self) -> TokenIds:
        """Block until every prompt is tokenised; re-raise a tokenisation error."""
        if self._order:
            self._wait_for(len(self._order) - 1)
        return self

    def close(self) -> None:
        """Stop the background thread after its current chunk."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> TokenIds:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
