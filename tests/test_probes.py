"""Tests for reprflow.probes: batched per-layer linear softmax probes."""

from __future__ import annotations

import math
import re
from pathlib import Path
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from reprflow.errors import ConfigError, ReprflowError
from reprflow.prompts.mdqa import OracleExample, Passage, gold_passage_groups, load_oracle, passage_key
from reprflow.probes import (
    InvalidParameterError,
    LinearProbe,
    ProbeResult,
    fit_layer_probes,
    grouped_stratified_split,
    stratified_split,
)

PLANTED = 3
N_CLASSES = 8


def planted_dataset(seed: int = 0, *, n_states: int = 6, n_samples: int = 1200, hidden: int = 32):
    """Signal (class-mean offsets) only in state PLANTED; labels are non-contiguous ids."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, N_CLASSES, n_samples)
    x = rng.normal(size=(n_states, n_samples, hidden)).astype(np.float32)
    x[PLANTED] += (0.6 * rng.normal(size=(N_CLASSES, hidden)))[codes].astype(np.float32)
    return x, codes * 3 + 5


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Small problems run faster single-threaded, and far faster on a shared 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def planted():
    return planted_dataset()


@pytest.fixture(scope="module")
def full_result(planted) -> ProbeResult:
    x, y = planted
    return fit_layer_probes(x, y, device="cpu", progress=False)  # the paper protocol: 150 epochs, 5 seeds


# ------------------------------------------------------------------- science checks


def test_matches_sklearn_logistic_regression_on_planted_layer(planted, full_result):
    x, y = planted
    sk = []
    for seed in full_result.seeds:
        tr, va = stratified_split(y, val_fraction=0.2, n_train=20000, seed=seed)
        h = x[PLANTED].astype(np.float64)
        mu, sd = h[tr].mean(axis=0), h[tr].std(axis=0)
        z = (h - mu) / sd
        sk.append(LogisticRegression(max_iter=2000).fit(z[tr], y[tr]).score(z[va], y[va]))
    assert abs(full_result.mean[PLANTED] - np.mean(sk)) < 0.02
    assert full_result.mean[PLANTED] > 0.8


def test_peak_is_planted_layer_and_others_near_chance(full_result):
    assert full_result.peak_layer == PLANTED
    assert full_result.peak_accuracy == pytest.approx(full_result.mean[PLANTED])
    others = np.delete(full_result.mean, PLANTED)
    assert np.all(np.abs(others - 1 / N_CLASSES) < 0.06)
    assert full_result.last_accuracy == pytest.approx(full_result.mean[-1])
    assert full_result.gap == pytest.approx(full_result.mean[PLANTED] - full_result.mean[-1])
    assert full_result.val_accuracy.shape == full_result.train_accuracy.shape == (5, 6)
    assert full_result.val_accuracy.dtype == np.float64
    assert (full_result.n_train, full_result.n_val, full_result.n_classes) == (960, 240, N_CLASSES)
    np.testing.assert_allclose(full_result.std, full_result.val_accuracy.std(axis=0, ddof=0))


def test_accuracies_are_counts_over_the_split(full_result):
    # every accuracy is k / n for an integer k
    for acc, n in ((full_result.val_accuracy, full_result.n_val), (full_result.train_accuracy, full_result.n_train)):
        np.testing.assert_allclose(acc * n, np.round(acc * n), atol=1e-9)


# ------------------------------------------------------------------------- split


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_split_is_stratified_disjoint_and_sized(seed):
    rng = np.random.default_rng(123)
    y = rng.choice([2, 9, 11, 40], size=503, p=[0.5, 0.3, 0.15, 0.05])
    tr, va = stratified_split(y, val_fraction=0.2, n_train=300, seed=seed)
    assert va.size == math.ceil(0.2 * 503) and tr.size == 300
    assert np.intersect1d(tr, va).size == 0 and np.unique(tr).size == tr.size
    for c in np.unique(y):
        n_c = np.sum(y == c)
        assert abs(np.sum(y[va] == c) - va.size * n_c / y.size) <= 1
        assert abs(np.sum(y[tr] == c) - tr.size * n_c / y.size) <= 1


def test_split_depends_only_on_seed():
    y = np.random.default_rng(5).integers(0, 5, 400)
    a = stratified_split(y, val_fraction=0.25, n_train=20000, seed=3)
    b = stratified_split(y.copy(), val_fraction=0.25, n_train=20000, seed=3)
    c = stratified_split(y, val_fraction=0.25, n_train=20000, seed=4)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(np.sort(a[1]), np.sort(c[1]))
    # shuffled, not sorted by class or index
    assert not np.all(np.diff(a[1]) > 0) and not np.all(np.diff(y[a[1]]) >= 0)


def test_split_allows_singleton_classes():
    y = np.array([0] * 20 + [1] * 20 + [2])
    tr, va = stratified_split(y, val_fraction=0.2, n_train=100, seed=0)
    assert tr.size + va.size == y.size and va.size == 9


def test_a_singleton_class_is_named_by_its_label(caplog):
    """A custom task labelled 3 and 1000, with one prompt of 1000: the warning names label 1000.
    Before the fix it named the class code ("classes [1]"), a label the file does not have."""
    rng = np.random.default_rng(0)
    labels = np.array([3] * 6 + [1000])
    with caplog.at_level("WARNING", logger="reprflow.probes"):
        fit_layer_probes(rng.normal(size=(2, 7, 4)), labels, epochs=2, seeds=[0], val_fraction=0.25)
    assert "classes [1000] have fewer than 2 members" in caplog.text


def mdqa_like(n: int, n_questions: int, n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels balanced over classes and groups as the MDQA builder draws them: each question
    in turn, in fresh permutations, so each is used floor or ceil of n / n_questions times."""
    rng = np.random.default_rng(seed)
    groups = np.concatenate([rng.permutation(n_questions) for _ in range(-(-n // n_questions))])[:n]
    return rng.permutation(np.arange(n) % n_classes), groups


@pytest.mark.parametrize(("n_classes", "seed"), [(3, 0), (18, 1), (36, 2)])
def test_grouped_split_at_paper_size(n_classes, seed):
    """25,000 prompts over 2,600 questions: exactly 20,000 training samples, no question on both
    sides, validation within 2% under 5,000 in whole questions, label shares kept within 1 point."""
    y, g = mdqa_like(25000, 2600, n_classes, seed)
    tr, va = grouped_stratified_split(y, g, val_fraction=0.2, n_train=20000, seed=seed)
    assert tr.size == 20000 and 4900 <= va.size <= 5000
    assert np.intersect1d(g[tr], g[va]).size == 0
    assert np.unique(tr).size == tr.size and np.unique(va).size == va.size
    share = np.bincount(y, minlength=n_classes) / y.size
    for part in (tr, va):
        assert np.abs(np.bincount(y[part], minlength=n_classes) / part.size - share).max() < 0.01
    # each class at most one over its share of validation (first pass), or slack passes' few more
    cap = -(-np.bincount(y) * 5000 // 25000)
    assert (np.bincount(y[va], minlength=n_classes) <= cap + 2).all()


def test_grouped_split_is_seeded_and_falls_back_to_stratified():
    y, g = mdqa_like(3000, 300, 9)
    a = grouped_stratified_split(y, g, val_fraction=0.2, n_train=20000, seed=3)
    b = grouped_stratified_split(y.copy(), g.copy(), val_fraction=0.2, n_train=20000, seed=3)
    c = grouped_stratified_split(y, g, val_fraction=0.2, n_train=20000, seed=4)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(np.sort(a[1]), np.sort(c[1]))
    assert a[0].size + a[1].size == 3000  # n_train above the rest: every other sample trains
    # all groups distinct (KVPR), or no groups: the plain stratified split
    plain = stratified_split(y, val_fraction=0.2, n_train=20000, seed=3)
    for groups in (None, np.arange(3000) * 7):
        got = grouped_stratified_split(y, groups, val_fraction=0.2, n_train=20000, seed=3)
        assert all(np.array_equal(u, v) for u, v in zip(got, plain))
    with pytest.raises(ValueError, match="groups passed to grouped_stratified_split must have shape"):
        grouped_stratified_split(y, g[:-1], val_fraction=0.2, n_train=10, seed=0)


def _question(question: str, title: str, text: str) -> OracleExample:
    return OracleExample(question, ("answer",), Passage(title, text))


#: Hand-made oracle: q2 has q0's gold passage (other spacing), q4 q1's (verbatim), q6 asks q3's
#: question with another gold; q5 and q7 only share a title, which joins nothing.
SHARED_GOLD = [
    _question("who directed it", "Rio Bravo", "A 1959 film , by Howard Hawks."),
    _question("what sank", "Titanic", "A ship."),
    _question("when was it released", "Rio Bravo", "A 1959 film, by\xa0Howard\nHawks."),
    _question("who wrote it", "Pooh", "A bear."),
    _question("what was its tonnage", "Titanic", "A ship."),
    _question("what does he eat", "Pooh", "A honey bear."),
    _question("who wrote it", "Moon", "A rock."),
    _question("who starred in it", "Rio Bravo", "A 1960 film."),
]


def test_questions_sharing_a_gold_passage_stay_on_one_side_of_the_split():
    """The split groups are the components of the question <-> gold-passage graph: q0 and q2 (one
    gold passage) never sit on both sides; grouping by question alone does let them."""
    fillers = [_question(f"filler {i}", f"Filler {i}", f"Passage {i}.") for i in range(32)]
    groups = gold_passage_groups(SHARED_GOLD + fillers)
    assert groups[:8].tolist() == [0, 1, 0, 3, 1, 5, 3, 7]
    assert groups[8:].tolist() == list(range(8, 40))
    y, q = mdqa_like(400, 40, 3)  # 10 prompts per question
    gold = np.array([passage_key(e.gold) for e in SHARED_GOLD + fillers])[q]
    split_by_question = 0
    for seed in range(10):
        tr, va = grouped_stratified_split(y, groups[q], val_fraction=0.2, n_train=300, seed=seed)
        assert tr.size == 300 and np.intersect1d(gold[tr], gold[va]).size == 0
        assert len({bool(np.isin(i, va).any()) for i in (np.flatnonzero(q == 0), np.flatnonzero(q == 2))}) == 1
        tr, va = grouped_stratified_split(y, q, val_fraction=0.2, n_train=300, seed=seed)
        split_by_question += np.intersect1d(gold[tr], gold[va]).size > 0
    assert split_by_question > 0


def test_no_gold_passage_of_the_oracle_file_is_on_both_sides_at_paper_size():
    """Liu et al.'s oracle file: 60 passages are gold for 128 questions (up to spacing), the
    largest component has 4 questions; 25,000 prompts still split into exactly 20,000 training
    samples and ~5,000 validation samples, with no gold passage on both sides."""
    examples = load_oracle(Path(__file__).resolve().parents[1] / "data/lost_in_the_middle/nq-open-oracle.jsonl.gz")
    groups = gold_passage_groups(examples)
    _, sizes = np.unique(groups, return_counts=True)
    assert (len(examples), sizes.size, sizes.max(), sizes[sizes > 1].sum()) == (2655, 2587, 4, 128)
    gold = np.unique([passage_key(e.gold) for e in examples], return_inverse=True)[1]
    y, q = mdqa_like(25000, len(examples), 8)
    for seed in (0, 1):
        tr, va = grouped_stratified_split(y, groups[q], val_fraction=0.2, n_train=20000, seed=seed)
        assert tr.size == 20000 and 4900 <= va.size <= 5000
        assert np.intersect1d(gold[q[tr]], gold[q[va]]).size == 0


def test_probes_with_groups_record_split_sizes(planted):
    x, y = planted[0][:2], planted[1]
    _, g = mdqa_like(y.size, 120, 1)
    res = fit_layer_probes(x, y, groups=g, epochs=5, seeds=(0, 1, 2), n_train=900, device="cpu", progress=False)
    assert res.n_train == 900 and len(res.n_val_per_seed) == 3 and res.n_val == min(res.n_val_per_seed)
    for s, seed in enumerate((0, 1, 2)):
        tr, va = grouped_stratified_split(y, g, val_fraction=0.2, n_train=900, seed=seed)
        assert va.size == res.n_val_per_seed[s] and tr.size == 900
        acc = res.val_accuracy[s] * va.size
        np.testing.assert_allclose(acc, np.round(acc), atol=1e-9)  # counts over this seed's own split
    with pytest.raises(ValueError, match=r"groups passed to fit_layer_probes must have shape \(1200,\)"):
        fit_layer_probes(x, y, groups=g[:5], epochs=1, device="cpu", progress=False)


# --------------------------------------------------------- batched = independent


def _reference_probe(x, y, train_idx, *, seed, epochs, lr):
    """One probe trained alone, float64, plain torch: z-score on train, Linear + Adam."""
    from reprflow.probes import _init_params  # the documented init (U(+-1/sqrt(d)) from the seed)

    classes, codes = np.unique(y, return_inverse=True)
    h = torch.from_numpy(x[train_idx].astype(np.float64))
    t = torch.from_numpy(codes[train_idx])
    mu, sd = h.mean(0), h.std(0, correction=0)
    w0, b0 = _init_params((seed,), 1, x.shape[1], classes.size)
    w = w0[0, 0].double().requires_grad_(True)
    b = b0[0, 0].double().requires_grad_(True)
    opt = torch.optim.Adam([w, b], lr=lr)
    z = (h - mu) / sd
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(z @ w + b, t).backward()
        opt.step()
    with torch.no_grad():
        coef = w / sd[:, None]
        return coef.numpy(), (b - mu @ coef).numpy()


def test_batched_equals_each_problem_trained_alone(planted):
    x, y = planted[0][:3, :400], planted[1][:400]
    seeds, epochs = (0, 2), 25
    res = fit_layer_probes(x, y, epochs=epochs, seeds=seeds, device="cpu", return_weights=True, progress=False)
    for s_i, seed in enumerate(seeds):
        tr, va = stratified_split(y, val_fraction=0.2, n_train=20000, seed=seed)
        for k in range(x.shape[0]):
            alone = fit_layer_probes(
                x[k : k + 1], y, epochs=epochs, seeds=(seed,), device="cpu", return_weights=True, progress=False
            )
            np.testing.assert_allclose(alone.coef[0, 0], res.coef[s_i, k], rtol=0, atol=1e-5)
            np.testing.assert_allclose(alone.val_accuracy[0, 0], res.val_accuracy[s_i, k], atol=1.5 / res.n_val)
            coef, intercept = _reference_probe(x[k], y, tr, seed=seed, epochs=epochs, lr=0.05)
            np.testing.assert_allclose(res.coef[s_i, k], coef, rtol=0, atol=2e-4 * np.abs(coef).max())
            np.testing.assert_allclose(res.intercept[s_i, k], intercept, rtol=0, atol=2e-4 * np.abs(coef).max() * 10)
            ref_val = np.mean(
                np.argmax(x[k][va] @ coef + intercept, axis=1) == np.unique(y, return_inverse=True)[1][va]
            )
            assert abs(ref_val - res.val_accuracy[s_i, k]) <= 1.5 / res.n_val


def test_adam_step_is_torch_adam_bit_for_bit():
    """The probes' written-out Adam (no torch.optim, whose first use imports torch._dynamo) against
    torch.optim.Adam with the same lr, over 40 steps of the same gradient sequence."""
    from reprflow.probes import _adam_step

    gen = torch.Generator().manual_seed(0)
    ours = [torch.randn(3, 7, generator=gen), torch.randn(5, generator=gen)]
    theirs = [p.clone().requires_grad_(True) for p in ours]
    optimizer = torch.optim.Adam(theirs, lr=0.05)
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in ours]
    for step in range(1, 41):
        grads = [torch.randn(p.shape, generator=gen) * 10.0 ** (step % 5 - 2) for p in ours]
        for p, g in zip(theirs, grads):
            p.grad = g.clone()
        optimizer.step()
        _adam_step(ours, grads, moments, step=step, lr=0.05)
        for a, b in zip(ours, theirs):
            assert torch.equal(a, b.detach()), step


def test_layer_groups_do_not_change_results(planted, caplog):
    x, y = planted[0][:, :300], planted[1][:300]
    kw = dict(epochs=15, seeds=(0, 1), device="cpu", return_weights=True, progress=False)
    one = fit_layer_probes(x, y, **kw)
    with caplog.at_level("INFO", logger="reprflow.probes"):
        grouped = fit_layer_probes(x, y, max_batch_bytes=700_000, **kw)
    n_groups = int(re.search(r"(\d+) group\(s\) of", caplog.text).group(1))
    assert n_groups > 1
    np.testing.assert_allclose(grouped.coef, one.coef, rtol=0, atol=1e-5)
    np.testing.assert_allclose(grouped.val_accuracy, one.val_accuracy, atol=1.5 / one.n_val)
    with pytest.raises(InvalidParameterError, match="max_batch_bytes"):
        fit_layer_probes(x, y, max_batch_bytes=1000, **kw)


def test_deterministic_twice_in_a_row(planted):
    x, y = planted[0][:, :300], planted[1][:300]
    kw = dict(epochs=10, seeds=(0, 1), device="cpu", return_weights=True, progress=False)
    a, b = fit_layer_probes(x, y, **kw), fit_layer_probes(x, y, **kw)
    assert np.array_equal(a.val_accuracy, b.val_accuracy)
    assert np.array_equal(a.train_accuracy, b.train_accuracy)
    assert np.array_equal(a.coef, b.coef) and np.array_equal(a.intercept, b.intercept)


# ------------------------------------------------------------------- input kinds


def test_accepts_torch_zarr_and_relabelled_input(planted, tmp_path):
    import zarr

    x, y = planted[0][:, :300], planted[1][:300]
    kw = dict(epochs=10, seeds=(0,), device="cpu", progress=False, return_weights=True)
    base = fit_layer_probes(x, y, **kw)
    z = zarr.create_array(tmp_path / "x.zarr", shape=x.shape, chunks=(1, 300, 32), dtype="float32")
    z[:] = x
    for feats, labels in ((torch.from_numpy(x), torch.from_numpy(y)), (z, y), (x, (y - 5) // 3)):
        other = fit_layer_probes(feats, labels, max_batch_bytes=600_000, **kw)
        np.testing.assert_allclose(other.coef, base.coef, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(other.val_accuracy, base.val_accuracy)


def test_standardize_makes_probes_invariant_to_feature_affine_maps(planted):
    x, y = planted[0][PLANTED : PLANTED + 1, :400], planted[1][:400]
    rng = np.random.default_rng(1)
    scaled = (x * rng.uniform(0.1, 20, size=32) + rng.normal(0, 50, size=32)).astype(np.float32)
    scaled[..., 0] = 3.0  # a constant feature must not produce NaN
    x2 = x.copy()
    x2[..., 0] = 0.0
    kw = dict(epochs=20, seeds=(0, 1), device="cpu", progress=False)
    a, b = fit_layer_probes(x2, y, **kw), fit_layer_probes(scaled, y, **kw)
    assert np.all(np.isfinite(b.val_accuracy))
    np.testing.assert_allclose(a.val_accuracy, b.val_accuracy, atol=2.5 / a.n_val)


class _RecordedReads:
    """A (n_states, n_samples, hidden) array that logs each slice read (and can fail one), as a
    zarr store's ``last`` is read: slicing it is the read."""

    def __init__(self, x: np.ndarray, events: list, fail_at: int | None = None):
        self.x, self.events, self.fail_at = x, events, fail_at
        self.shape, self.dtype = x.shape, x.dtype

    def __getitem__(self, key):
        start = key.start or 0
        self.events.append(("read", start, key.stop))
        if start == self.fail_at:
            raise OSError(f"chunk of state {start} unreadable")
        return self.x[key]


def test_groups_are_read_one_ahead_and_the_first_before_a_gpu_claim(planted, monkeypatch, caplog):
    """The next group is read while one trains (a background thread), in order, each once; with
    ``device="auto"`` on several GPUs the first group is read before the claim. Results are those
    of in-memory features."""
    import reprflow.probes as probes

    x, y = planted[0][:, :300], planted[1][:300]
    kw = dict(epochs=5, seeds=(0, 1), progress=False, return_weights=True, max_batch_bytes=700_000)
    events: list = []

    def resolve(owner, device):
        events.append(("claim", device))
        return torch.device("cpu")

    monkeypatch.setattr(probes, "will_claim_gpu", lambda device: device == "auto")
    monkeypatch.setattr(probes, "_resolve_device", resolve)
    with caplog.at_level("INFO", logger="reprflow.probes"):
        got = fit_layer_probes(_RecordedReads(x, events), y, device="auto", **kw)
    reads = [e[1:] for e in events if e[0] == "read"]
    assert len(reads) > 2 and reads[0][0] == 0 and reads[-1][1] == x.shape[0]
    assert all(a[1] == b[0] for a, b in zip(reads, reads[1:]))  # contiguous, in order, none twice
    assert events.index(("claim", "auto")) == 1  # after the first read, before the second
    assert "waiting for reads" in caplog.text
    monkeypatch.undo()
    want = fit_layer_probes(x, y, device="cpu", **kw)
    np.testing.assert_array_equal(got.coef, want.coef)
    np.testing.assert_array_equal(got.val_accuracy, want.val_accuracy)


def test_a_failed_read_ahead_raises_its_own_error(planted):
    x, y = planted[0][:, :300], planted[1][:300]
    events: list = []
    with pytest.raises(OSError, match="chunk of state 2 unreadable"):
        fit_layer_probes(
            _RecordedReads(x, events, fail_at=2), y, epochs=2, device="cpu", progress=False, max_batch_bytes=700_000
        )


def test_non_finite_features_raise(planted):
    x = planted[0][:, :100].copy()
    x[4, 7, 3] = np.nan
    with pytest.raises(ValueError, match="state 4"):
        fit_layer_probes(x, planted[1][:100], epochs=1, device="cpu", progress=False)


_SLAB_PEAK = """
import resource, torch
from reprflow.probes import _load_slab
torch.set_num_threads(1)
x = torch.randn(4, 4096, 1024)  # 64 MiB float32: loading it is a no-op, checking it allocates
_load_slab(x[:, :8], torch.device("cpu"), owner="t", first_layer=0)  # warm
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
_load_slab(x, torch.device("cpu"), owner="t", first_layer=0)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024, x.nbytes)
"""


def test_slab_finiteness_check_allocates_no_mask():
    # isfinite(x).all() made a bool mask of 1 byte per element (25% of a float32 slab; 0.16 GiB
    # per state at 25,000 x 2560) that max_batch_bytes did not count; aminmax allocates nothing.
    out = subprocess.run([sys.executable, "-c", _SLAB_PEAK], capture_output=True, text=True, check=True)
    extra, size = (int(v) for v in out.stdout.split())
    assert extra < 0.1 * size, (extra, size)


# ------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "lr",
            -0.05,
            "The 'lr' parameter of fit_layer_probes must be a float in the range (0, inf). Got -0.05 instead.",
        ),
        (
            "epochs",
            0,
            "The 'epochs' parameter of fit_layer_probes must be an int in the range [1, inf). Got 0 instead.",
        ),
        (
            "epochs",
            1.5,
            "The 'epochs' parameter of fit_layer_probes must be an int in the range [1, inf). Got 1.5 instead.",
        ),
        (
            "val_fraction",
            1.0,
            "The 'val_fraction' parameter of fit_layer_probes must be a float in the range (0, 1). Got 1.0 instead.",
        ),
        (
            "val_fraction",
            0,
            "The 'val_fraction' parameter of fit_layer_probes must be a float in the range (0, 1). Got 0 instead.",
        ),
        (
            "n_train",
            0,
            "The 'n_train' parameter of fit_layer_probes must be an int in the range [1, inf). Got 0 instead.",
        ),
        ("seeds", (), "The 'seeds' parameter of fit_layer_probes must be a non-empty sequence"),
        ("seeds", (1, 1), "The 'seeds' parameter of fit_layer_probes must be a non-empty sequence"),
        ("standardize", "yes", "The 'standardize' parameter of fit_layer_probes must be an instance of 'bool'."),
        (
            "matmul_precision",
            "fp16",
            "The 'matmul_precision' parameter of fit_layer_probes must be a str among "
            "{'auto', 'float32', 'tf32'}. Got 'fp16' instead.",
        ),
        (
            "matmul_precision",
            "TF32",
            "The 'matmul_precision' parameter of fit_layer_probes must be a str among "
            "{'auto', 'float32', 'tf32'}. Got 'TF32' instead.",
        ),
        (
            "matmul_precision",
            None,
            "The 'matmul_precision' parameter of fit_layer_probes must be a str among "
            "{'auto', 'float32', 'tf32'}. Got None instead.",
        ),
    ],
)
def test_bad_parameters_raise_value_error_naming_them(planted, name, value, expected):
    x, y = planted[0][:, :50], planted[1][:50]
    with pytest.raises(ValueError) as err:
        fit_layer_probes(x, y, progress=False, **{"epochs": 1, name: value})
    assert str(err.value).startswith(expected)
    assert isinstance(err.value, ConfigError)


def test_mismatched_samples_and_shapes_raise(planted):
    x, y = planted
    with pytest.raises(ValueError, match="inconsistent numbers of samples.*1200.*1199"):
        fit_layer_probes(x, y[:-1], epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"shape \(n_states, n_samples, hidden\)"):
        fit_layer_probes(x[0], y, epochs=1, progress=False)
    with pytest.raises(ValueError, match="integer class ids"):
        fit_layer_probes(x, y.astype(float), epochs=1, progress=False)
    with pytest.raises(ValueError, match="at least 2 classes"):
        fit_layer_probes(x, np.zeros_like(y), epochs=1, progress=False)
    with pytest.raises(InvalidParameterError, match="leaves no training sample"):
        stratified_split(y[:3], val_fraction=0.9, n_train=10, seed=0)


# ------------------------------------------------------------------ LinearProbe


def test_linear_probe_wraps_the_same_kernel(planted):
    x, y = planted
    res = fit_layer_probes(
        x[PLANTED : PLANTED + 1], y, epochs=30, seeds=(0,), device="cpu", return_weights=True, progress=False
    )
    tr, va = stratified_split(y, val_fraction=0.2, n_train=20000, seed=0)
    probe = LinearProbe(seed=0, epochs=30).fit(x[PLANTED][tr], y[tr])
    assert probe.coef_.shape == (32, N_CLASSES) and probe.n_features_in_ == 32
    np.testing.assert_allclose(probe.coef_, res.coef[0, 0], rtol=0, atol=1e-5)
    assert abs(probe.score(x[PLANTED][va], y[va]) - res.val_accuracy[0, 0]) <= 1.5 / res.n_val
    assert set(np.unique(probe.predict(x[PLANTED][va]))) <= set(np.unique(y))


def test_linear_probe_validates_in_fit_and_guards_predict(planted):
    x, y = planted[0][0, :50], planted[1][:50]
    probe = LinearProbe(lr=-0.05, seed=0)  # __init__ only stores
    with pytest.raises(ValueError, match=r"The 'lr' parameter of LinearProbe must be a float in the range \(0, inf\)"):
        probe.fit(x, y)
    with pytest.raises(ReprflowError, match="not fitted"):
        LinearProbe(seed=0).predict(x)
    with pytest.raises(
        InvalidParameterError,
        match=r"The 'matmul_precision' parameter of LinearProbe must be a str "
        r"among \{'auto', 'float32', 'tf32'\}\. Got 'half' instead\.",
    ):
        LinearProbe(seed=0, matmul_precision="half").fit(x, y)


def test_linear_probe_is_a_scikit_learn_classifier(planted):
    from sklearn.base import clone, is_classifier
    from sklearn.exceptions import NotFittedError
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.utils.validation import check_is_fitted

    x, y = planted[0][PLANTED, :600], planted[1][:600]
    probe = LinearProbe(epochs=20, device="cpu")
    assert is_classifier(probe)
    assert probe.get_params() == {
        "lr": 0.05,
        "epochs": 20,
        "seed": 0,
        "standardize": True,
        "device": "cpu",
        "matmul_precision": "auto",
    }
    assert probe.set_params(seed=3, lr=0.1) is probe and (probe.seed, probe.lr) == (3, 0.1)
    with pytest.raises(ValueError, match="Invalid parameter 'alpha'"):
        probe.set_params(alpha=1.0)
    with pytest.raises(NotFittedError):
        check_is_fitted(probe)
    with pytest.raises(NotFittedError, match="not fitted"):  # also a ReprflowError (see above)
        probe.predict(x)

    before = x.copy()
    probe.fit(x, y)
    np.testing.assert_array_equal(x, before)  # fit leaves the caller's array alone
    check_is_fitted(probe)
    np.testing.assert_array_equal(probe.classes_, np.unique(y))
    twin = clone(probe)  # same parameters, not fitted; refitting gives the same probe on CPU
    assert twin.get_params() == probe.get_params() and not hasattr(twin, "coef_")
    twin.fit(x, y)
    assert np.array_equal(twin.coef_, probe.coef_) and np.array_equal(twin.intercept_, probe.intercept_)

    cv = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    scores = cross_val_score(LinearProbe(epochs=20, device="cpu"), x, y, cv=cv)
    by_hand = [LinearProbe(epochs=20, device="cpu").fit(x[tr], y[tr]).score(x[va], y[va]) for tr, va in cv.split(x, y)]
    np.testing.assert_array_equal(scores, by_hand)
    assert scores.shape == (3,) and scores.mean() > 2 / N_CLASSES  # planted signal: well above chance (1/8)
    noise = cross_val_score(LinearProbe(epochs=20, device="cpu"), planted[0][0, :600], y, cv=cv)
    assert scores.mean() > noise.mean() + 0.1


def test_linear_probe_passes_scikit_learn_estimator_checks():
    """All of scikit-learn's common estimator checks (input validation, unfitted errors, clone, pickling,
    binary decision_function shape, string labels, ...), default parameters, on CPU."""
    import warnings

    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checks feed deliberately odd data (2-D y, ints as floats, ...)
        check_estimator(LinearProbe(device="cpu"))


def test_linear_probe_binary_decision_and_probabilities(planted):
    x, y = planted[0][PLANTED, :300], planted[1][:300]
    binary = np.where(y == y[0], "gold", "other")  # any labels, not only ints
    probe = LinearProbe(epochs=20, device="cpu").fit(x, binary)
    assert probe.classes_.tolist() == ["gold", "other"]
    d = probe.decision_function(x)
    assert d.shape == (300,)
    np.testing.assert_array_equal(probe.predict(x), probe.classes_[(d > 0).astype(int)])
    proba = probe.predict_proba(x)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.log(proba[:, 1] / proba[:, 0]), d, rtol=1e-9, atol=1e-9)
    multi = LinearProbe(epochs=20, device="cpu").fit(x, y)
    assert multi.decision_function(x).shape == (300, np.unique(y).size)
    with pytest.raises(ValueError, match="is expecting 32 features as input"):
        multi.predict(x[:, :5])


# ------------------------------------------------------------- matmul precision


@pytest.fixture
def tf32_switch():
    """torch's CUDA float32 matmul switch, put back (legacy and new view) after the test."""
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    yield matmul
    matmul.allow_tf32 = before == "tf32"  # the legacy setter resets both views consistently
    matmul.fp32_precision = before


def test_tf32_and_float32_are_identical_on_cpu(planted, tf32_switch, caplog, monkeypatch):
    import reprflow.probes

    def no_switch(precision):
        raise AssertionError(f"a CPU run set the CUDA matmul switch to {precision!r}")

    monkeypatch.setattr(reprflow.probes, "_cuda_matmul_precision", no_switch)
    x, y = planted[0][:, :300], planted[1][:300]
    kw = dict(epochs=10, seeds=(0, 1), device="cpu", return_weights=True, progress=False)
    tf32_switch.allow_tf32 = False  # a known, consistent state that CPU runs must not touch
    with caplog.at_level("INFO", logger="reprflow.probes"):
        results = {mode: fit_layer_probes(x, y, matmul_precision=mode, **kw) for mode in ("float32", "tf32", "auto")}
    assert tf32_switch.fp32_precision == "ieee" and tf32_switch.allow_tf32 is False
    assert "(float32 products, matmul_precision='tf32')" in caplog.text
    ref = results["float32"]
    for mode, res in results.items():
        assert res.matmul_precision == "float32", mode
        assert np.array_equal(res.coef, ref.coef) and np.array_equal(res.intercept, ref.intercept), mode
        assert np.array_equal(res.val_accuracy, ref.val_accuracy), mode
        assert np.array_equal(res.train_accuracy, ref.train_accuracy), mode
    assert ref.select([0, 2]).matmul_precision == "float32"
    tr, _ = stratified_split(y, val_fraction=0.2, n_train=20000, seed=0)
    a = LinearProbe(seed=0, epochs=10, device="cpu", matmul_precision="tf32").fit(x[PLANTED][tr], y[tr])
    b = LinearProbe(seed=0, epochs=10, device="cpu", matmul_precision="float32").fit(x[PLANTED][tr], y[tr])
    assert np.array_equal(a.coef_, b.coef_) and np.array_equal(a.intercept_, b.intercept_)


@pytest.mark.parametrize("initial", ["legacy-off", "legacy-on", "default"])
@pytest.mark.parametrize(("precision", "inside"), [("tf32", "tf32"), ("float32", "ieee")])
def test_cuda_matmul_switch_is_set_and_restored(tf32_switch, initial, precision, inside):
    from reprflow.probes import _cuda_matmul_precision

    if initial == "default":
        tf32_switch.allow_tf32 = False
        tf32_switch.fp32_precision = "none"  # torch's start-up value
    else:
        tf32_switch.allow_tf32 = initial == "legacy-on"
    before = tf32_switch.fp32_precision
    legacy_before = tf32_switch.allow_tf32
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither API may warn
        with _cuda_matmul_precision(precision):
            assert tf32_switch.fp32_precision == inside
        assert tf32_switch.fp32_precision == before
        with pytest.raises(KeyError, match="boom"):
            with _cuda_matmul_precision(precision):
                assert tf32_switch.fp32_precision == inside
                raise KeyError("boom")
        assert tf32_switch.fp32_precision == before
        # the legacy view reads (no mixed-API error) and is what it was
        assert tf32_switch.allow_tf32 is legacy_before
        assert torch.get_float32_matmul_precision() == ("high" if legacy_before else "highest")


def test_probe_hold_benchmark_runs_at_toy_size_and_compares_in_one_table(tmp_path):
    """benchmarks/probe_hold.py: one row per group budget, the store read from disk, the sequential
    sum (read + fit from memory) beside the read-ahead fit, with the group size the fit used."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(root / "benchmarks" / "probe_hold.py"), "--states", "4", "--samples", "600"]
    cmd += ["--hidden", "64", "--epochs", "3", "--device", "cpu", "--max-batch-gib", "0.004", "0.1"]
    cmd += ["--work", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in proc.stdout.splitlines()[-2:]]
    assert [r[0].strip() for r in rows] == ["0.004", "0.1"]
    assert [int(r[1]) for r in rows] == [1, 4]  # one state per group, then all four
    for r in rows:
        read, mem, both = (float(v) for v in r[2:5])
        assert abs(read + mem - both) <= 0.11  # printed to 0.1 s
    assert list(tmp_path.iterdir()) == []  # the store is removed


# ------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(planted):
    x, y = planted
    kw = dict(epochs=30, seeds=(0, 1), progress=False, return_weights=True)
    cpu = fit_layer_probes(x, y, device="cpu", **kw)
    gpu = fit_layer_probes(x, y, device="cuda", matmul_precision="float32", **kw)  # exact products, as on CPU
    assert gpu.matmul_precision == "float32"
    np.testing.assert_allclose(gpu.coef, cpu.coef, rtol=0, atol=1e-4)
    np.testing.assert_allclose(gpu.val_accuracy, cpu.val_accuracy, atol=2.5 / cpu.n_val)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_tf32_accuracies_agree_with_float32(planted, tf32_switch):
    x, y = planted
    tf32_switch.allow_tf32 = False
    kw = dict(device="cuda", progress=False)  # the paper protocol: 150 epochs, 5 seeds
    tf32 = fit_layer_probes(x, y, **kw)  # auto = tf32 on CUDA
    fp32 = fit_layer_probes(x, y, matmul_precision="float32", **kw)
    assert (tf32.matmul_precision, fp32.matmul_precision) == ("tf32", "float32")
    assert tf32_switch.fp32_precision == "ieee" and tf32_switch.allow_tf32 is False  # restored
    assert np.max(np.abs(tf32.mean - fp32.mean)) <= 0.02
    assert tf32.peak_layer == fp32.peak_layer == PLANTED
    assert tf32.mean[PLANTED] > 0.8


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_auto_on_a_shared_gpu_claims_it_after_the_first_read(planted, monkeypatch, tmp_path):
    """``device="auto"`` where GPUs are claimed (REPRFLOW_SHARED_GPUS=1 makes one GPU claimable):
    the first group is read, then the GPU claimed (a lock in the lock dir), and the result names it."""
    import reprflow.devices as devices

    monkeypatch.setenv(devices.SHARED_ENV, "1")
    monkeypatch.setenv("REPRFLOW_GPU_LOCK_DIR", str(tmp_path))
    events: list = []
    claim = devices.claim_gpu
    monkeypatch.setattr(devices, "claim_gpu", lambda *a, **k: events.append(("claim",)) or claim(*a, **k))
    x, y = planted[0][:, :300], planted[1][:300]
    try:
        res = fit_layer_probes(
            _RecordedReads(x, events), y, device="auto", epochs=5, max_batch_bytes=700_000, progress=False
        )
        assert events[0][0] == "read" and events[1] == ("claim",) and len(events) > 3
        assert res.device.startswith("cuda:") and res.matmul_precision == "tf32"
    finally:
        devices.release_gpu()
