"""Item-count calibration: pick ``n_items`` so that the median prompt length hits a target.

Two stages, each on a seeded calibration sample of ``sample_size`` prompts per count:

1. **Search on natural prompts.** A *natural* prompt is what Liu et al. would build: first
   draws, no cap, no length-aware choice. Its median length ``m(n)`` grows steadily with the
   item count ``n``. The search measures ``n = 2`` and ``n = 4`` to estimate tokens per item,
   jumps to the estimate, extrapolates while short of the target, then interpolates inside
   the bracket until ``m(lo) < target <= m(hi)`` with ``hi = lo + 1``.
2. **Choice under the cap.** The counts ``lo - 1 .. hi + 1`` are drawn again exactly as the
   final set will be (cap enforced by redraws; MDQA may pick shorter distractors). A count is
   *admissible* when at most :data:`MAX_RESAMPLED_FRACTION` of its first draws exceed the cap
   (more would select prompts by how their random items tokenize). Among admissible counts
   whose median is within ``tolerance`` of the target:

   - if some have at most :data:`MAX_INTERVENED_FRACTION` of prompts redrawn or steered,
     the one with the closest median wins;
   - otherwise (only heavy steering reaches the target, e.g. MDQA at 300 tokens), the one
     with the fewest redrawn or steered prompts wins.

   Ties go to fewer items. If no count qualifies, :class:`PromptError` names the task, target,
   tokenizer and the medians of the counts around the target.

Searching on natural lengths matters: under a cap, steered medians pile up just below the cap,
and a search on them would drift to counts whose prompts are almost all steered.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from reprflow.errors import PromptError
from reprflow.prompts.sampling import balanced_labels, prompt_rng, sample_prompts

__all__ = [
    "MAX_RESAMPLED_FRACTION",
    "MAX_INTERVENED_FRACTION",
    "CalibrationPoint",
    "Calibration",
    "calibrate_item_count",
]

logger = logging.getLogger(__name__)

#: A count is admissible only if at most this fraction of its first draws exceed the cap.
MAX_RESAMPLED_FRACTION = 0.5
#: Counts with at most this fraction of redrawn or length-steered prompts are preferred.
MAX_INTERVENED_FRACTION = 0.5
#: Random stream of calibration samples (the final prompt set uses stream 0).
CALIBRATION_STREAM = 1


@dataclass(frozen=True)
class CalibrationPoint:
    """Calibration sample statistics for one candidate item count.

    Attributes
    ----------
    n_items : int
    natural_median : float
        Median length of the natural prompts (no cap, no steering).
    median : float or None
        Median length under the cap; None if this count was not drawn under the cap, or could
        not be (no MDQA question fits).
    rel_error : float or None
        ``(median - target) / target``.
    resampled_fraction : float or None
        Fraction of first draws over the cap.
    intervened_fraction : float or None
        Fraction of prompts redrawn or length-steered.
    admissible : bool
    """

    n_items: int
    natural_median: float
    median: float | None = None
    rel_error: float | None = None
    resampled_fraction: float | None = None
    intervened_fraction: float | None = None
    admissible: bool = False


@dataclass(frozen=True)
class Calibration:
    """Result of :func:`calibrate_item_count`; ``candidates`` is sorted by ``n_items``."""

    n_items: int
    median: float
    rel_error: float
    sample_size: int
    candidates: tuple[CalibrationPoint, ...]

    def to_dict(self) -> dict:
        """JSON-ready dict (for the prompt-set manifest)."""
        return asdict(self)


def _labels(sampler, n_items: int, sample_size: int) -> np.ndarray:
    return balanced_labels(sample_size, n_items, prompt_rng(sampler.seed_key, CALIBRATION_STREAM, n_items, 0))


def _natural_median(sampler, n_items: int, tokenizer, sample_size: int) -> float:
    plan = sampler.plan(n_items, sample_size, stream=CALIBRATION_STREAM, max_tokens=None)
    got = sample_prompts(plan, _labels(sampler, n_items, sample_size), tokenizer, max_tokens=None)
    return float(np.median(got.n_tokens))


def _capped_point(
    sampler, n_items: int, natural: float, tokenizer, *, target: int, max_tokens: int, sample_size: int
) -> CalibrationPoint:
    try:
        plan = sampler.plan(n_items, sample_size, stream=CALIBRATION_STREAM, max_tokens=max_tokens)
        got = sample_prompts(
            plan,
            _labels(sampler, n_items, sample_size),
            tokenizer,
            max_tokens=max_tokens,
            max_over_cap_fraction=MAX_RESAMPLED_FRACTION,
        )
    except PromptError as exc:
        logger.debug("calibration n_items=%d infeasible under the cap: %s", n_items, exc)
        return CalibrationPoint(n_items, natural)
    resampled = float(np.mean(got.first_n_tokens > max_tokens))
    if not got.complete:
        return CalibrationPoint(n_items, natural, resampled_fraction=resampled)
    med = float(np.median(got.n_tokens))
    return CalibrationPoint(
        n_items=n_items,
        natural_median=natural,
        median=med,
        rel_error=(med - target) / target,
        resampled_fraction=resampled,
        intervened_fraction=got.intervened_fraction,
        admissible=True,
    )


def _bracket(median, target: int, lo_bound: int, hi_bound: int) -> tuple[int | None, int | None]:
    """Adjacent counts ``lo < hi`` with ``median(lo) < target <= median(hi)`` (either may be None at a bound)."""
    a, b = lo_bound, min(lo_bound + 2, hi_bound)
    lo = hi = None
    for n in (a, b):
        if median(n) < target:
            lo = n if lo is None else max(lo, n)
        else:
            hi = n if hi is None else min(hi, n)
    ma, mb = median(a), median(b)
    n = int(round(a + (target - ma) * (b - a) / (mb - ma))) if mb > ma else b + 1
    for _ in range(64):
        if hi is not None and (lo is None or hi - lo <= 1):
            return lo, hi
        if hi is None and lo >= hi_bound:
            return lo, None
        n = int(np.clip(n, lo_bound if lo is None else lo + 1, hi_bound if hi is None else hi - 1))
        if median(n) < target:
            lo = n
        else:
            hi = n
        if hi is None:  # still short: extrapolate from the slope over the counts measured so far
            slope = (median(lo) - ma) / (lo - a) if lo > a else 0.0
            n = lo + (max(1, int(round((target - median(lo)) / slope))) if slope > 0 else 1)
        elif lo is not None:  # bracketed: interpolate inside (lo, hi)
            frac = (target - median(lo)) / (median(hi) - median(lo))
            n = lo + int(round(frac * (hi - lo)))
    raise PromptError(f"item-count search did not converge near {n} items")  # pragma: no cover


def calibrate_item_count(
    sampler,
    tokenizer,
    *,
    target_tokens: int,
    tolerance: float,
    max_tokens: int,
    sample_size: int,
    label: str = "",
) -> Calibration:
    """Choose the item count whose median prompt length best meets ``target_tokens``.

    See the module docstring for the search and the choice rule.

    Parameters
    ----------
    sampler : KVPRSampler or MDQASampler
    tokenizer : transformers.PreTrainedTokenizerFast
    target_tokens : int
    tolerance : float
        Allowed relative error of the median, e.g. 0.05.
    max_tokens : int
        Per-prompt cap, as in the final set.
    sample_size : int
        Prompts per candidate count.
    label : str
        Names the prompt set in messages, e.g. ``"kvpr n300 gpt2"``.

    Returns
    -------
    Calibration

    Raises
    ------
    PromptError
        If no admissible count has its median within ``tolerance`` of the target.
    """
    lo_bound = sampler.min_items
    hi_bound = sampler.max_items() or 1_000_000
    natural: dict[int, float] = {}

    def median(n: int) -> float:
        if n not in natural:
            natural[n] = _natural_median(sampler, n, tokenizer, sample_size)
        return natural[n]

    lo, hi = _bracket(median, target_tokens, lo_bound, hi_bound)
    anchor_lo = lo if lo is not None else hi - 1
    anchor_hi = hi if hi is not None else lo + 1
    window = [n for n in range(anchor_lo - 1, anchor_hi + 2) if lo_bound <= n <= hi_bound]
    capped = {
        n: _capped_point(
            sampler, n, median(n), tokenizer, target=target_tokens, max_tokens=max_tokens, sample_size=sample_size
        )
        for n in window
    }
    points = tuple(capped.get(n, CalibrationPoint(n, natural[n])) for n in sorted(set(natural) | set(capped)))
    within = [p for p in capped.values() if p.admissible and abs(p.rel_error) <= tolerance]
    light = [p for p in within if p.intervened_fraction <= MAX_INTERVENED_FRACTION]
    if light:
        best = min(light, key=lambda p: (abs(p.median - target_tokens), p.n_items))
    elif within:
        best = min(within, key=lambda p: (p.intervened_fraction, abs(p.median - target_tokens), p.n_items))
    else:
        near = "; ".join(
            f"n_items={p.n_items}: natural median {p.natural_median:g} "
            f"({(p.natural_median - target_tokens) / target_tokens:+.1%})"
            + (
                f", under the cap {p.median:g} ({p.rel_error:+.1%})"
                if p.admissible
                else (
                    f", not admissible ({p.resampled_fraction:.0%} of draws over the cap)"
                    if p.resampled_fraction is not None
                    else ", cannot fit the cap"
                )
            )
            for p in (capped[n] for n in window)
        )
        if hi is None:
            why = (
                f"the task allows at most {hi_bound} items (for MDQA: 1 + the distractors per question); "
                "use a larger distractor pool or a smaller target"
            )
        else:
            why = (
                "items are too coarse for this target: raise the tolerance (or max_tokens) for this length, "
                "or pick a target near one of these medians"
            )
        raise PromptError(
            f"{label}: no item count gives a median length within {tolerance:.0%} of {target_tokens} tokens "
            f"under max_tokens={max_tokens}; {near}. {why}"
        )
    logger.info(
        "%s: n_items=%d, calibration median %.1f (%+.2f%%), %.0f%% of prompts redrawn or steered; natural medians %s",
        label,
        best.n_items,
        best.median,
        100 * best.rel_error,
        100 * best.intervened_fraction,
        {n: natural[n] for n in sorted(natural)},
    )
    return Calibration(best.n_items, best.median, best.rel_error, sample_size, points)
