"""Task-agnostic sampling: seeded streams, balanced gold positions, and the length cap.

Every random choice comes from ``numpy.random.default_rng(key)`` with an integer tuple ``key``
that starts with the prompt set's ``seed_key = (seed, task, target_tokens)``:

- ``seed_key + (2,)``: the final gold positions;
- ``seed_key + (stream, n_items)``: MDQA question order (``stream`` 0: final, 1: calibration);
- ``seed_key + (1, n_items, 0)``: calibration gold positions;
- ``seed_key + (stream, n_items, index, attempt)``: prompt ``index`` (KVPR: its UUIDs; MDQA:
  its distractor sample and order, and a replacement question if its own cannot fit).

No two of these keys are equal, and :func:`prompt_rng` makes distinct keys give distinct
streams. The first draw of prompt ``index`` does not depend on how many prompts are drawn; a
redraw (over the cap, or byte-identical to an earlier accepted prompt) happens in a fixed order,
so the same seed gives the same prompts on any machine.

A prompt set never holds two byte-identical prompts: :func:`sample_prompts` redraws a prompt
equal to one already accepted (lower index first within a round, earlier rounds first).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from reprflow.errors import PromptError

__all__ = [
    "Draft",
    "PromptPlan",
    "SampledPrompts",
    "prompt_rng",
    "balanced_labels",
    "count_tokens",
    "sample_prompts",
]

logger = logging.getLogger(__name__)

#: A prompt over the cap is redrawn at most this many times before sampling gives up.
MAX_ATTEMPTS = 50
#: Texts tokenized per fast-tokenizer batch call.
TOKENIZE_BATCH = 256


@dataclass(frozen=True)
class Draft:
    """One candidate prompt.

    Attributes
    ----------
    prompt : str
    answer : str or tuple of str
        KVPR: the gold value; MDQA: the accepted answer strings.
    adjusted : bool
        True when the item choice was steered by length (MDQA only; see ``mdqa.py``).
    group : int or None
        What must stay on one side of a train/validation split: MDQA the question's split group
        (:func:`reprflow.prompts.mdqa.gold_passage_groups`: the smallest oracle index among the
        questions linked to it by a shared gold passage); KVPR None (each prompt is its own
        group; the builder uses its index).
    question : int or None
        MDQA: the oracle index of the question used; KVPR None.
    """

    prompt: str
    answer: str | tuple[str, ...]
    adjusted: bool
    group: int | None = None
    question: int | None = None


class PromptPlan(Protocol):
    """What :func:`sample_prompts` needs from a task: draw prompt ``index`` with gold at ``label``."""

    n_items: int

    def draft(self, index: int, label: int, *, attempt: int, budget: int | None) -> Draft:  # pragma: no cover
        ...


@dataclass
class SampledPrompts:
    """Prompts drawn by :func:`sample_prompts`, all at or under the cap.

    Attributes
    ----------
    drafts : list of Draft, length n_prompts
    n_tokens : ndarray of shape (n_prompts,), int64
    attempts : ndarray of shape (n_prompts,), int64
        Draws used per prompt (1 = the first draw fitted the cap and was new).
    first_n_tokens : ndarray of shape (n_prompts,), int64
        Lengths of the first draws, before any redraw.
    complete : bool
        False when sampling stopped after the first draws (see ``max_over_cap_fraction``);
        then only ``first_n_tokens`` and ``attempts`` are meaningful.
    n_duplicates : int
        Draws rejected for being byte-identical to an accepted prompt.
    """

    drafts: list[Draft]
    n_tokens: np.ndarray
    attempts: np.ndarray
    first_n_tokens: np.ndarray
    complete: bool = True
    seconds: float = field(default=0.0)
    n_duplicates: int = 0

    @property
    def resampled_fraction(self) -> float:
        """Fraction of prompts redrawn: first draw over the cap (or, rarely, a repeat)."""
        return float(np.mean(self.attempts > 1)) if len(self.attempts) else 0.0

    @property
    def adjusted_fraction(self) -> float:
        """Fraction of prompts whose items were steered by length."""
        return float(np.mean([d.adjusted for d in self.drafts])) if self.drafts else 0.0

    @property
    def intervened_fraction(self) -> float:
        """Fraction of prompts that are not the natural first draw (redrawn or steered)."""
        if not self.drafts:
            return 0.0
        return float(np.mean([d.adjusted or a > 1 for d, a in zip(self.drafts, self.attempts)]))


def prompt_rng(seed_key: Sequence[int], *more: int) -> np.random.Generator:
    """A generator for the key ``seed_key + more`` (ints in [0, 2**32)).

    ``SeedSequence`` ignores trailing zeros (``[1, 2]`` and ``[1, 2, 0]`` give the same
    stream), so the key is passed with its length + 1 appended: distinct keys, even of
    different lengths, always give distinct entropy.
    """
    key = [int(x) for x in (*seed_key, *more)]
    if any(not 0 <= x < 2**32 for x in key):
        raise PromptError(f"random stream key {key}: every entry must be an int in [0, 2**32)")
    return np.random.default_rng([*key, len(key) + 1])


def balanced_labels(n_prompts: int, n_items: int, rng: np.random.Generator) -> np.ndarray:
    """Gold positions with every position used equally often (within one), in shuffled order.

    Each of the ``n_items`` positions appears ``n_prompts // n_items`` times; the
    ``n_prompts % n_items`` extra labels go to evenly spaced positions
    ``floor(j * n_items / remainder)``. The array is then permuted with ``rng``.

    Returns
    -------
    ndarray of shape (n_prompts,), int64, values in [0, n_items)
    """
    if n_items < 1:
        raise PromptError(f"balanced_labels: n_items must be >= 1, got {n_items}")
    full, rem = divmod(n_prompts, n_items)
    extra = (np.arange(rem, dtype=np.int64) * n_items) // rem if rem else np.zeros(0, dtype=np.int64)
    labels = np.concatenate([np.tile(np.arange(n_items, dtype=np.int64), full), extra])
    return rng.permutation(labels)


def count_tokens(texts: Sequence[str], tokenizer) -> np.ndarray:
    """Token counts of ``texts`` (no special tokens), via batched fast-tokenizer calls.

    Returns
    -------
    ndarray of shape (len(texts),), int64
    """
    out = np.empty(len(texts), dtype=np.int64)
    for start in range(0, len(texts), TOKENIZE_BATCH):
        chunk = list(texts[start : start + TOKENIZE_BATCH])
        ids = tokenizer(chunk, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        out[start : start + len(chunk)] = [len(x) for x in ids]
    return out


def sample_prompts(
    plan: PromptPlan,
    labels: np.ndarray,
    tokenizer,
    *,
    max_tokens: int | None,
    max_over_cap_fraction: float | None = None,
    progress: str | None = None,
) -> SampledPrompts:
    """Draw one prompt per label; redraw any prompt longer than ``max_tokens`` or already drawn.

    With ``max_tokens=None`` no task steers by length: these are the *natural* prompts, as
    Liu et al. would build them (first draws, except the rare byte-identical repeat).

    A prompt over the cap is redrawn (``attempt + 1``) with the same index and gold position;
    its length budget shrinks by the accumulated overshoot, which lets length-aware tasks
    (MDQA) choose shorter items, or another question when its own cannot fit. KVPR redraws
    all its UUIDs. A prompt byte-identical to one already accepted is redrawn the same way
    (its budget unchanged), so the result holds no two equal prompts.

    Parameters
    ----------
    plan : PromptPlan
    labels : ndarray of shape (n_prompts,), int
        Gold position of each prompt.
    tokenizer : transformers.PreTrainedTokenizerFast
    max_tokens : int or None
        Hard cap on every prompt's ``n_tokens``; None for natural prompts.
    max_over_cap_fraction : float, optional
        Stop after the first draws, returning ``complete=False``, when more than this
        fraction of them exceed the cap (the calibration's admissibility test).
    progress : str, optional
        Show a tqdm bar with this description.

    Raises
    ------
    PromptError
        If a prompt still exceeds the cap, or repeats an accepted prompt, after
        :data:`MAX_ATTEMPTS` draws.
    """
    t0 = time.perf_counter()
    n = len(labels)
    drafts: list[Draft | None] = [None] * n
    n_tokens = np.zeros(n, dtype=np.int64)
    attempts = np.zeros(n, dtype=np.int64)
    first = np.zeros(n, dtype=np.int64)
    slack = np.zeros(n, dtype=np.int64)
    pending = np.arange(n)
    accepted: set[str] = set()
    n_dup = 0
    bar = tqdm(total=n, desc=progress, unit="prompt", disable=progress is None, leave=False)
    try:
        for attempt in range(MAX_ATTEMPTS):
            if not len(pending):
                break
            still = []
            for start in range(0, len(pending), TOKENIZE_BATCH):
                idx = pending[start : start + TOKENIZE_BATCH]
                batch = [
                    plan.draft(
                        int(i),
                        int(labels[i]),
                        attempt=attempt,
                        budget=None if max_tokens is None else int(max_tokens - slack[i]),
                    )
                    for i in idx
                ]
                counts = count_tokens([d.prompt for d in batch], tokenizer)
                if attempt == 0:
                    first[idx] = counts
                for i, d, c in zip(idx, batch, counts):
                    attempts[i] = attempt + 1
                    if max_tokens is not None and c > max_tokens:
                        slack[i] += c - max_tokens
                        still.append(i)
                    elif d.prompt in accepted:
                        n_dup += 1
                        still.append(i)
                    else:
                        accepted.add(d.prompt)
                        drafts[i], n_tokens[i] = d, c
                        bar.update(1)
            pending = np.asarray(still, dtype=np.int64)
            over = 0 if max_tokens is None else int(np.sum(first > max_tokens))
            if attempt == 0 and max_over_cap_fraction is not None and over > max_over_cap_fraction * n:
                return SampledPrompts(drafts, n_tokens, attempts, first, complete=False)  # type: ignore[arg-type]
    finally:
        bar.close()
    if len(pending):
        i = int(pending[0])
        why = "repeat an accepted prompt"
        if max_tokens is not None:
            why = f"exceed max_tokens={max_tokens} or {why}"
        raise PromptError(
            f"{len(pending)} of {n} prompts (first: index {i}, gold position {int(labels[i])}) still {why} "
            f"with n_items={plan.n_items} after {MAX_ATTEMPTS} draws; lower n_items or raise max_tokens"
        )
    seconds = time.perf_counter() - t0
    if progress is not None:
        logger.info(
            "%s: %d prompts, %d tokens in %.1f s (%.0f tokens/s), %d redrawn (over the cap or repeated), "
            "%d repeats rejected",
            progress,
            n,
            int(n_tokens.sum()),
            seconds,
            n_tokens.sum() / seconds if seconds > 0 else float("nan"),
            int(np.sum(attempts > 1)),
            n_dup,
        )
    return SampledPrompts(  # type: ignore[arg-type]
        drafts, n_tokens, attempts, first, seconds=seconds, n_duplicates=n_dup
    )
