"""The item-count choice rule, on a fake task whose prompt lengths are known exactly."""

import numpy as np
import pytest

from reprflow.errors import PromptError
from reprflow.prompts.calibrate import calibrate_item_count
from reprflow.prompts.sampling import Draft, prompt_rng


class FakePlan:
    """Prompt length = per_item * n + uniform integer jitter; steered down to the budget like MDQA.

    Prompts of different indices differ (a prompt set holds no two equal prompts)."""

    def __init__(self, n_items, per_item, jitter, seed_key):
        self.n_items, self.per_item, self.jitter, self.seed_key = n_items, per_item, jitter, seed_key

    def draft(self, index, label, *, attempt, budget):
        rng = prompt_rng(self.seed_key, index)
        length = max(3, self.per_item * self.n_items + int(rng.integers(-self.jitter, self.jitter + 1)))
        adjusted = budget is not None and length > budget
        length = min(length, budget) if budget is not None else length
        return Draft(spell(index + 1000 * attempt, length), "x", adjusted)


def spell(value, length):
    """``length`` one-letter gpt2 tokens spelling ``value`` in base 26 (distinct values, distinct texts)."""
    letters = []
    for _ in range(length):
        value, r = divmod(value, 26)
        letters.append(chr(ord("a") + r))
    return letters[0] + "".join(" " + c for c in letters[1:])


class FakeSampler:
    task, min_items, seed_key = "fake", 2, (0,)

    def __init__(self, per_item, jitter):
        self.per_item, self.jitter = per_item, jitter

    def max_items(self):
        return None

    def plan(self, n_items, n_prompts, *, stream, max_tokens):
        return FakePlan(n_items, self.per_item, self.jitter, (stream, n_items))


def test_fake_lengths_are_exact(tokenizers):
    drafts = [FakePlan(3, 10, 0, (0,)).draft(i, 0, attempt=0, budget=None) for i in (0, 7, 199, 17575)]
    assert [len(tokenizers["gpt2"](d.prompt)["input_ids"]) for d in drafts] == [30] * 4
    assert len({d.prompt for d in drafts}) == 4


def test_exact_items_hit_the_target(tokenizers):
    cal = calibrate_item_count(
        FakeSampler(10, 0), tokenizers["gpt2"], target_tokens=100, tolerance=0.05, max_tokens=105, sample_size=16
    )
    assert cal.n_items == 10 and cal.median == 100 and cal.rel_error == 0


def test_prefers_the_lightly_steered_count(tokenizers):
    # n=10: natural median 100, 40% of prompts above the cap of 104; n=11: natural 110, 65% above.
    cal = calibrate_item_count(
        FakeSampler(10, 20), tokenizers["gpt2"], target_tokens=100, tolerance=0.05, max_tokens=104, sample_size=200
    )
    points = {p.n_items: p for p in cal.candidates}
    assert cal.n_items == 10
    assert points[10].intervened_fraction <= 0.5 < points[11].intervened_fraction
    assert abs(points[11].rel_error) <= 0.05  # n=11 also met the tolerance, but only by steering


def test_heavy_steering_only_when_nothing_else_meets_the_target(tokenizers):
    # 40-token items: n=2 gives 80 (-20%), n=3 gives 120 naturally, 105 once steered to the cap.
    cal = calibrate_item_count(
        FakeSampler(40, 0), tokenizers["gpt2"], target_tokens=100, tolerance=0.05, max_tokens=105, sample_size=8
    )
    point = {p.n_items: p for p in cal.candidates}[3]
    assert cal.n_items == 3 and cal.median == 105 and point.intervened_fraction == 1.0


def test_coarse_items_raise_with_the_bracketing_medians(tokenizers):
    # KVPR-like: no steering, so n=3 (120 tokens) would need redraws that never fit the cap.
    class Rigid(FakeSampler):
        def plan(self, n_items, n_prompts, *, stream, max_tokens):
            plan = super().plan(n_items, n_prompts, stream=stream, max_tokens=max_tokens)
            plan.draft = lambda i, label, attempt, budget, _d=plan.draft: _d(i, label, attempt=attempt, budget=None)
            return plan

    expected = r"fake: .*n_items=2: natural median 80 \(-20.0%\).*n_items=3: natural median 120"
    with pytest.raises(PromptError, match=expected):
        calibrate_item_count(
            Rigid(40, 0),
            tokenizers["gpt2"],
            target_tokens=100,
            tolerance=0.05,
            max_tokens=105,
            sample_size=8,
            label="fake",
        )


@pytest.mark.parametrize("target", [37, 250, 1000])
def test_search_brackets_any_target(tokenizers, target):
    cal = calibrate_item_count(
        FakeSampler(7, 0),
        tokenizers["gpt2"],
        target_tokens=target,
        tolerance=0.2,
        max_tokens=2 * target,
        sample_size=4,
    )
    assert cal.n_items == max(2, int(np.round(target / 7)))
    assert len(cal.candidates) <= 12  # a handful of counts measured, not a scan
