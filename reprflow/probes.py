"""Per-layer linear softmax probes, trained for all layers and seeds at once.

The paper (Hoang et al. 2025, §3.1 and §3.4, Table 1/2, Fig. 7) trains one linear softmax
probe per layer on the last-token state h_T^l to predict the gold position k, with
Adam (lr 0.05), 150 full-batch epochs, 20K training samples, a held-out validation
split and 5 seeds. Done naively that is n_states x 5 separate training loops. Here
every (seed, layer) problem is one slice of one batched tensor program:

* the features of a group of layers, ``x`` of shape (n_layers_group, n_rows, hidden),
  live on the device once and are shared by all seeds;
* the weights of all seeds are concatenated along the class axis, so one ``torch.bmm``
  ``x @ W[:, :, seed*class]`` gives the logits of every (layer, seed) problem;
* each seed's training rows enter the loss through a 0/1 mask, and the loss is the
  SUM over (seed, layer) of per-problem mean cross-entropies. Adam is elementwise, so
  one Adam over the stacked parameters is the same algorithm as one Adam per problem.

Nearly all the arithmetic is two float32 ``bmm`` per epoch (logits and weight gradient).
``matmul_precision`` picks how they run: on CUDA the default (``"auto"``) uses TF32 tensor
cores (inputs rounded to a 10-bit mantissa, float32 accumulation; accuracies agree with
float32 within seed noise), ``"float32"`` keeps exact IEEE float32 products. On CPU the
products are always IEEE float32. Moments are accumulated in float64 in either case.

``fit_layer_probes`` is the only training code: ``LinearProbe`` (a scikit-learn style
classifier for one layer, :mod:`reprflow.linear_probe`; importable from here too) calls the
same kernel with one layer and one seed. This module does not import scikit-learn, so a
workflow job that only fits probes does not pay for it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import numbers
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from reprflow.devices import resolve_device, will_claim_gpu
from reprflow.errors import InvalidParameterError
from reprflow.metrics._arrays import all_finite, from_numpy

logger = logging.getLogger(__name__)

__all__ = [
    "InvalidParameterError",
    "LinearProbe",  # noqa: F822 (module __getattr__, below)
    "ProbeNotFittedError",  # noqa: F822
    "ProbeResult",
    "fit_layer_probes",
    "grouped_stratified_split",
    "stratified_split",
]

#: Default bound on the working memory of one group of layers (bytes), see Notes.
DEFAULT_MAX_BATCH_BYTES = 2 * 1024**3

#: Values of ``matmul_precision`` (fit_layer_probes, LinearProbe).
MATMUL_PRECISIONS = ("auto", "float32", "tf32")

# (rows x seeds x classes) float32 buffers alive in one step: the in-place logits
# buffer, plus the logits of the final accuracy pass.
_LOGIT_BUFFERS = 2
# Parameter-sized float32 buffers: W, W_eff, grad, fold temporary, Adam's two moments,
# Adam's temporaries.
_PARAM_BUFFERS = 8


#: Passes of the grouped split's validation fill; pass p lets a class exceed its share by p.
_GROUP_SLACK_PASSES = 3

# --------------------------------------------------------------------------- params


def _check_real(owner: str, name: str, value: Any, *, low: float, high: float, closed: str) -> None:
    """Raise unless ``value`` is a real number in the interval; ``closed`` in neither/left/right/both."""
    left = "[" if closed in ("left", "both") else "("
    right = "]" if closed in ("right", "both") else ")"
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if ok:
        v = float(value)
        ok = (v >= low if left == "[" else v > low) and (v <= high if right == "]" else v < high)
    if not ok:
        bounds = f"{left}{_fmt(low)}, {_fmt(high)}{right}"
        raise InvalidParameterError(
            f"The {name!r} parameter of {owner} must be a float in the range {bounds}. Got {value!r} instead."
        )


def _check_int(owner: str, name: str, value: Any, *, low: int) -> None:
    """Raise unless ``value`` is an integer >= ``low``."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)) and value >= low
    if not ok:
        raise InvalidParameterError(
            f"The {name!r} parameter of {owner} must be an int in the range [{low}, inf). Got {value!r} instead."
        )


def _check_bool(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidParameterError(
            f"The {name!r} parameter of {owner} must be an instance of 'bool'. Got {value!r} instead."
        )


def _check_choice(owner: str, name: str, value: Any, choices: Sequence[str]) -> None:
    """Raise unless ``value`` is one of the strings ``choices``."""
    if not (isinstance(value, str) and value in choices):
        allowed = "{" + ", ".join(repr(c) for c in choices) + "}"
        raise InvalidParameterError(
            f"The {name!r} parameter of {owner} must be a str among {allowed}. Got {value!r} instead."
        )


SEED_LIMIT = 2**32
"""Seeds are ints in [0, SEED_LIMIT): what numpy's and torch's generators take whole."""


def _check_seeds(owner: str, seeds: Any) -> tuple[int, ...]:
    msg = (
        f"The 'seeds' parameter of {owner} must be a non-empty sequence of distinct ints in [0, 2**32). "
        f"Got {seeds!r} instead."
    )
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence | np.ndarray):
        raise InvalidParameterError(msg)
    out = tuple(seeds)
    if not out or len(set(out)) != len(out):
        raise InvalidParameterError(msg)
    for s in out:
        if not isinstance(s, numbers.Integral) or isinstance(s, (bool, np.bool_)) or not 0 <= s < SEED_LIMIT:
            raise InvalidParameterError(msg)
    return tuple(int(s) for s in out)


def _fmt(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:g}"


def _resolve_device(owner: str, device: str | torch.device | None) -> torch.device:
    """``device`` through the package's one resolver (None = ``auto``: CUDA when present, else CPU)."""
    return resolve_device(device, key=f"The 'device' parameter of {owner}", error=InvalidParameterError)


def _encode_labels(owner: str, labels: Any, n_samples: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Map integer labels to contiguous codes 0..n_classes-1; return (codes, classes)."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels passed to {owner} must be 1-D of shape (n_samples,). Got shape {y.shape}.")
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)):
        raise ValueError(
            f"labels passed to {owner} must be integer class ids (the gold position). Got dtype {y.dtype}."
        )
    if n_samples is not None and y.shape[0] != n_samples:
        raise ValueError(
            f"Found input variables with inconsistent numbers of samples in {owner}: "
            f"features have {n_samples}, labels have {y.shape[0]}."
        )
    classes, codes = np.unique(y, return_inverse=True)
    if classes.size < 2:
        raise ValueError(f"{owner} needs at least 2 classes in labels. Got {classes.size} ({classes.tolist()}).")
    return codes.astype(np.int64), classes


def _products_precision(matmul_precision: str, device: torch.device) -> str:
    """The precision the float32 products actually run in: ``"tf32"`` or ``"float32"``.

    ``"auto"`` is TF32 on CUDA; TF32 exists only on CUDA, so on any other device
    every choice is IEEE float32.
    """
    if device.type != "cuda":
        return "float32"
    return "float32" if matmul_precision == "float32" else "tf32"


@contextlib.contextmanager
def _cuda_matmul_precision(precision: str) -> Iterator[None]:
    """Set torch's CUDA float32 matmul switch to ``precision`` (tf32/float32) for the block.

    Uses ``torch.backends.cuda.matmul.fp32_precision`` (torch >= 2.9; "tf32" or
    "ieee"), the switch cuBLAS reads, and only that one: its getter never raises,
    whereas the legacy ``allow_tf32`` getter raises once the two APIs have been mixed.
    The previous value (which may be "none", i.e. torch's default) is put back on exit,
    also on error, so the legacy view (``allow_tf32``, ``get_float32_matmul_precision``)
    is what it was before too. The switch is process-wide: float32 CUDA matmuls of
    other threads in the block see it as well.
    """
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    matmul.fp32_precision = "tf32" if precision == "tf32" else "ieee"
    try:
        yield
    finally:
        matmul.fp32_precision = before


def _products_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """``_cuda_matmul_precision`` on CUDA; nothing (no global state touched) elsewhere."""
    return _cuda_matmul_precision(precision) if device.type == "cuda" else contextlib.nullcontext()


# ---------------------------------------------------------------------------- split


def _apportion(weights: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Split ``total`` into integer parts proportional to ``weights`` (largest remainder).

    Exact integer arithmetic; every part is floor or ceil of its exact share, so it is
    within one of it and never exceeds its weight. Ties in the remainder are broken by
    ``rng``.
    """
    weights = weights.astype(np.int64)
    w_sum = int(weights.sum())
    num = weights * total  # exact share = num / w_sum
    base = num // w_sum
    rem = num % w_sum
    short = total - int(base.sum())
    if short:
        order = rng.permutation(weights.size)
        order = order[np.argsort(-rem[order], kind="stable")]
        base[order[:short]] += 1
    return base


def _check_split_args(owner: str, *, val_fraction: float, n_train: int, seed: int) -> None:
    """The scalar arguments every split takes: val_fraction in (0, 1), n_train >= 1, seed >= 0."""
    _check_real(owner, "val_fraction", val_fraction, low=0.0, high=1.0, closed="neither")
    _check_int(owner, "n_train", n_train, low=1)
    _check_int(owner, "seed", seed, low=0)


def _validation_size(owner: str, val_fraction: float, n: int) -> int:
    """``ceil(val_fraction * n)``, the validation share of ``n`` samples; an error if it leaves none to train."""
    n_val = math.ceil(val_fraction * n)
    if n_val >= n:
        raise InvalidParameterError(
            f"The 'val_fraction' parameter of {owner} leaves no training sample: "
            f"ceil({val_fraction!r} * {n}) = {n_val} of {n} samples would go to validation. "
            "Lower val_fraction or pass more samples."
        )
    return n_val


def _shuffled_by_class(idx: np.ndarray, codes: np.ndarray, n_classes: int, rng: np.random.Generator) -> list:
    """The samples ``idx`` of each class code 0..n_classes-1 (``codes`` covers all samples), each
    list shuffled by ``rng``, class after class in code order: one int64 ndarray per class."""
    order = idx[np.argsort(codes[idx], kind="stable")]
    starts = np.concatenate([[0], np.cumsum(np.bincount(codes[idx], minlength=n_classes))])
    return [rng.permutation(order[starts[c] : starts[c + 1]]) for c in range(n_classes)]


def stratified_split(
    labels: np.ndarray, *, val_fraction: float, n_train: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled train/validation split, stratified by label, that depends only on ``seed``.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,)
        Integer class ids.
    val_fraction : float in (0, 1)
        ``n_val = ceil(val_fraction * n_samples)`` samples go to validation.
    n_train : int >= 1
        At most this many of the remaining samples are used for training
        (``min(n_train, n_samples - n_val)``), again stratified.
    seed : int >= 0
        Seeds ``np.random.default_rng(seed)``, the only source of randomness.

    Returns
    -------
    train_idx : ndarray of shape (n_train_used,), int64
    val_idx : ndarray of shape (n_val,), int64
        Disjoint sample indices, each in shuffled order.

    Notes
    -----
    Each class gets ``floor`` or ``ceil`` of its proportional share of ``n_val``
    (largest-remainder apportionment, ties broken by the seed), so its count in
    validation is within one sample of ``n_val * n_class / n_samples``; the training
    share is apportioned the same way from what is left. This needs no minimum class
    size: a class with one member lands in either split. Such classes are logged as a
    warning, since a probe cannot learn a class that only appears in validation.
    """
    owner = "stratified_split"
    _check_split_args(owner, val_fraction=val_fraction, n_train=n_train, seed=seed)
    y = np.asarray(labels)
    n = y.shape[0]
    n_val = _validation_size(owner, val_fraction, n)
    n_tr = min(int(n_train), n - n_val)
    classes, codes, counts = np.unique(y, return_inverse=True, return_counts=True)
    if (counts < 2).any():
        logger.warning(
            "stratified_split: classes %s have fewer than 2 members and cannot appear in both splits",
            classes[counts < 2].tolist(),
        )
    rng = np.random.default_rng(seed)
    val_counts = _apportion(counts, n_val, rng)
    train_counts = _apportion(counts - val_counts, n_tr, rng)
    members = _shuffled_by_class(np.arange(n), codes, classes.size, rng)
    val_parts = [m[:v] for m, v in zip(members, val_counts, strict=True)]
    train_parts = [m[v : v + t] for m, v, t in zip(members, val_counts, train_counts, strict=True)]
    train_idx = rng.permutation(np.concatenate(train_parts)).astype(np.int64)
    val_idx = rng.permutation(np.concatenate(val_parts)).astype(np.int64)
    return train_idx, val_idx


def grouped_stratified_split(
    labels: np.ndarray, groups: np.ndarray | None, *, val_fraction: float, n_train: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation split that keeps every group on one side, stratified by label.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,)
        Integer class ids.
    groups : ndarray of shape (n_samples,), or None
        Group id of each sample (MDQA: the question's component of the question <-> gold-passage
        graph, :func:`reprflow.prompts.mdqa.gold_passage_groups`). Samples of one group all go to
        validation or none does. None, or all ids distinct, is :func:`stratified_split`.
    val_fraction : float in (0, 1)
        Validation gets at most ``n_val = ceil(val_fraction * n_samples)`` samples, in whole groups.
    n_train : int >= 1
        Exactly ``min(n_train, samples outside the validation groups)`` training samples,
        stratified by label among the samples outside the validation groups.
    seed : int >= 0
        Seeds ``np.random.default_rng(seed)``, the only source of randomness.

    Returns
    -------
    train_idx : ndarray of shape (n_train_used,), int64
    val_idx : ndarray of shape (n_val_used,), int64
        Disjoint sample indices, each in shuffled order; no group has members in both.

    Notes
    -----
    Validation: the groups are visited in a seeded random order and a group is taken when
    it keeps every class at or under its share, ``ceil(n_val * n_class / n_samples)``, and
    the total at or under ``n_val``; visiting stops when the total reaches ``n_val``. Two
    more passes over the groups left out let each class exceed its share by 1, then 2, to
    fill up. So each class's validation count is at most three over its proportional share,
    and the total falls a little short of ``n_val`` (MDQA at paper size, ~9.5 prompts per
    question: 4 to 60 samples of 5,000, label shares within 1 point). Training takes ``n_train`` samples from the rest,
    apportioned over classes by their counts there (largest remainder, as in
    :func:`stratified_split`). Samples of validation groups are never used for training; any
    left over beyond ``n_train`` are unused.
    """
    owner = "grouped_stratified_split"
    _check_split_args(owner, val_fraction=val_fraction, n_train=n_train, seed=seed)
    y = np.asarray(labels)
    n = y.shape[0]
    if groups is None:
        return stratified_split(y, val_fraction=val_fraction, n_train=n_train, seed=seed)
    g = np.asarray(groups)
    if g.shape != y.shape:
        raise ValueError(f"groups passed to {owner} must have shape {y.shape} like labels. Got shape {g.shape}.")
    group_ids, ginv = np.unique(g, return_inverse=True)
    if group_ids.size == n:
        return stratified_split(y, val_fraction=val_fraction, n_train=n_train, seed=seed)
    n_val = _validation_size(owner, val_fraction, n)
    _, codes, counts = np.unique(y, return_inverse=True, return_counts=True)
    per_group = np.zeros((group_ids.size, counts.size), dtype=np.int64)  # [n_groups, n_classes]
    np.add.at(per_group, (ginv, codes), 1)
    sizes = per_group.sum(axis=1)
    caps = -(-counts * n_val // n)  # ceil of each class's share of n_val, exact integers
    rng = np.random.default_rng(seed)
    in_val = np.zeros(group_ids.size, dtype=bool)
    taken = np.zeros(counts.size, dtype=np.int64)
    total = 0
    visit = rng.permutation(group_ids.size)
    for slack in range(_GROUP_SLACK_PASSES):  # slack 0 first; then let classes run a little over
        for gi in visit:
            if in_val[gi] or total + sizes[gi] > n_val or np.any(taken + per_group[gi] > caps + slack):
                continue
            in_val[gi] = True
            taken += per_group[gi]
            total += int(sizes[gi])
            if total == n_val:
                break
        if total == n_val:
            break
    val_mask = in_val[ginv]
    pool = np.flatnonzero(~val_mask)
    pool_counts = np.bincount(codes[pool], minlength=counts.size)
    train_counts = _apportion(pool_counts, min(int(n_train), pool.size), rng)
    members = _shuffled_by_class(pool, codes, counts.size, rng)
    train_parts = [m[:t] for m, t in zip(members, train_counts, strict=True)]
    train_idx = rng.permutation(np.concatenate(train_parts)).astype(np.int64)
    val_idx = rng.permutation(np.flatnonzero(val_mask)).astype(np.int64)
    return train_idx, val_idx


# --------------------------------------------------------------------------- result


@dataclass(frozen=True, eq=False)
class ProbeResult:
    """Accuracies of per-layer probes over seeds.

    Attributes
    ----------
    val_accuracy : ndarray of shape (n_seeds, n_states), float64
        Accuracy on each seed's held-out validation split.
    train_accuracy : ndarray of shape (n_seeds, n_states), float64
        Accuracy on each seed's training split.
    seeds : tuple of int
        The seeds, in row order.
    n_train : int
        Training samples per seed: ``n_train`` of the call when enough samples lie outside
        the validation groups (always for the paper's 25,000 prompts), else the smallest.
    n_val : int
        Validation samples per seed; with groups (:func:`grouped_stratified_split`) it can
        differ by a few samples between seeds, and this is the smallest.
    n_classes : int
        Number of distinct labels.
    classes : ndarray of shape (n_classes,)
        The label values, in class-code order.
    coef : ndarray of shape (n_seeds, n_states, hidden, n_classes), float32, or None
        Probe weights acting on the raw features (standardisation folded in); only
        with ``return_weights=True``.
    intercept : ndarray of shape (n_seeds, n_states, n_classes), float64, or None
        Matching biases: ``logits = features[k] @ coef[s, k] + intercept[s, k]``.
    matmul_precision : str
        What the float32 products ran in: ``"tf32"`` (CUDA tensor cores) or ``"float32"``.
    n_val_per_seed : tuple of int
        Validation samples of each seed, in row order.
    device : str
        Where the probes trained (``"cuda:3"``, ``"cpu"``): the device ``"auto"`` resolved to.
    """

    val_accuracy: np.ndarray
    train_accuracy: np.ndarray
    seeds: tuple[int, ...]
    n_train: int
    n_val: int
    n_classes: int
    classes: np.ndarray
    coef: np.ndarray | None = field(default=None, repr=False)
    intercept: np.ndarray | None = field(default=None, repr=False)
    matmul_precision: str = "float32"
    n_val_per_seed: tuple[int, ...] = ()
    device: str = "cpu"

    @property
    def mean(self) -> np.ndarray:
        """Validation accuracy averaged over seeds, shape (n_states,)."""
        return self.val_accuracy.mean(axis=0)

    @property
    def std(self) -> np.ndarray:
        """Population std (ddof=0) of validation accuracy over seeds, shape (n_states,)."""
        return self.val_accuracy.std(axis=0, ddof=0)

    @property
    def peak_layer(self) -> int:
        """Index of the state with the highest mean accuracy (first one on ties)."""
        return int(np.argmax(self.mean))

    @property
    def peak_accuracy(self) -> float:
        return float(self.mean[self.peak_layer])

    @property
    def last_accuracy(self) -> float:
        """Mean validation accuracy at the last state."""
        return float(self.mean[-1])

    @property
    def gap(self) -> float:
        """Peak minus last mean accuracy (>= 0), the paper's 'gap to peak'."""
        return self.peak_accuracy - self.last_accuracy

    def select(self, states: Sequence[int]) -> "ProbeResult":
        """The same result restricted to ``states`` (e.g. one layer view's index list)."""
        idx = np.asarray(states, dtype=np.int64)
        return dataclasses.replace(
            self,
            val_accuracy=self.val_accuracy[:, idx],
            train_accuracy=self.train_accuracy[:, idx],
            coef=None if self.coef is None else self.coef[:, idx],
            intercept=None if self.intercept is None else self.intercept[:, idx],
        )


# --------------------------------------------------------------------------- kernel


def _init_params(
    seeds: tuple[int, ...], n_layers: int, hidden: int, n_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial weights [S, K, hidden, C] and biases [S, K, C] (CPU, float32).

    ``nn.Linear``'s default init, U(-1/sqrt(hidden), 1/sqrt(hidden)), drawn from a
    CPU ``torch.Generator`` seeded with the seed alone: every layer of a seed starts
    from the same weights, whatever the device and however the layers are grouped.
    """
    bound = 1.0 / math.sqrt(hidden)
    ws, bs = [], []
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        w = (torch.rand(hidden, n_classes, generator=gen) * 2 - 1) * bound
        b = (torch.rand(n_classes, generator=gen) * 2 - 1) * bound
        ws.append(w.expand(n_layers, hidden, n_classes))
        bs.append(b.expand(n_layers, n_classes))
    return torch.stack(ws).contiguous(), torch.stack(bs).contiguous()


def _train_moments(x: torch.Tensor, train_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per layer, feature and seed: mean and std (ddof=0) over the seed's training rows.

    x : [K, n_rows, hidden] float32; train_mask : [n_rows, S] bool.
    Returns mu, sigma : [K, hidden, S] float32, computed in float64 (two-pass).
    A feature that is constant on the training rows (max == min, an exact test) gets
    its value as mean and std 1.
    """
    n_layers, _, hidden = x.shape
    n_seeds = train_mask.shape[1]
    mu = torch.empty(n_layers, hidden, n_seeds, dtype=torch.float64, device=x.device)
    sigma = torch.empty_like(mu)
    for k in range(n_layers):
        for s in range(n_seeds):
            rows = x[k][train_mask[:, s]]  # [n_train, hidden]
            xs = rows.to(torch.float64)
            m = xs.mean(dim=0)
            sd = (xs - m).square_().mean(dim=0).sqrt_()
            constant = rows.amax(dim=0) == rows.amin(dim=0)
            mu[k, :, s] = torch.where(constant, xs[0], m)
            sigma[k, :, s] = torch.where(constant, torch.ones_like(sd), sd)
    return mu.to(torch.float32), sigma.to(torch.float32)


def _logits(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, *, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Logits of every (layer, seed) problem, [K, n_rows, S, C].

    x : [K, n_rows, hidden]; weight : [K, hidden, S, C] (contiguous); bias : [K, S, C].
    The seeds' weights sit side by side along the output axis, so one bmm per epoch
    reads the features once for all seeds.
    """
    n_layers, hidden, n_seeds, n_classes = weight.shape
    z = torch.bmm(x, weight.view(n_layers, hidden, n_seeds * n_classes), out=out)
    z = z.view(n_layers, x.shape[1], n_seeds, n_classes)
    return z.add_(bias.unsqueeze(1))


def _adam_step(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    moments: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    step: int,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> None:
    """One Adam step on ``params`` in place (``moments``: each parameter's first and second moment,
    zeros before step 1; ``step`` counts from 1): ``torch.optim.Adam`` with its defaults, operation
    for operation as its single-tensor path computes it, so equal to it bit for bit on the CPU
    (``tests/test_probes.py``). Written out because ``torch.optim``'s first optimizer imports
    ``torch._dynamo``: about 2 s of CPU, more than a workflow probe job's whole fit at the demo's
    size (BENCHMARKS.md, "Probes")."""
    beta1, beta2 = betas
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    step_size = lr / bias_correction1
    for param, grad, (exp_avg, exp_avg_sq) in zip(params, grads, moments, strict=True):
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        param.addcdiv_(exp_avg, denom, value=-step_size)


def _fit_softmax_probes(
    x: torch.Tensor,
    y: torch.Tensor,
    train_mask: torch.Tensor,
    *,
    seeds: tuple[int, ...],
    n_classes: int,
    epochs: int,
    lr: float,
    standardize: bool,
    bar: tqdm | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Train all (seed, layer) probes of one layer group; the single training kernel.

    Parameters
    ----------
    x : Tensor of shape (K, n_rows, hidden), float32, on the compute device
    y : Tensor of shape (n_rows,), int64, class codes
    train_mask : Tensor of shape (n_rows, S), bool; column s marks seed s's training rows
        (each seed's loss is the mean over its own rows, whatever their number).

    Returns
    -------
    weight : Tensor of shape (K, hidden, S, C), float32
    bias : Tensor of shape (K, S, C), float32
        Effective parameters acting on ``x`` as given (standardisation folded in).

    Notes
    -----
    The objective is ``sum_{s,k} mean_{i in train_s} CE(z_{k,i,s}, y_i)`` and the
    gradient is written out (no autograd): with P = softmax(z) and one-hot Y,
    dL/dz = (P - Y) * mask_s / n_train_s, dL/dW_eff = x^T dL/dz, dL/db = sum_i dL/dz. With
    standardisation the trained parameters (W, b) act on z-scored features,
    W_eff = W / sigma and b_eff = b - mu @ W_eff, so dL/dW = (dL/dW_eff - mu dL/db) / sigma.
    Everything runs in place on one logits buffer. :func:`_adam_step` takes the step
    (``torch.optim.Adam``'s arithmetic).
    """
    n_layers, n_rows, hidden = x.shape
    n_seeds = len(seeds)
    device = x.device
    w0, b0 = _init_params(seeds, n_layers, hidden, n_classes)
    weight = w0.permute(1, 2, 0, 3).contiguous().to(device)  # [K, hidden, S, C]
    bias = b0.permute(1, 0, 2).contiguous().to(device)  # [K, S, C]
    if standardize:
        mu, sigma = _train_moments(x, train_mask)  # [K, hidden, S]
        mu, sigma = mu.unsqueeze(-1), sigma.unsqueeze(-1)
    per_seed = train_mask.to(torch.float32)
    row_weight = (per_seed / per_seed.sum(dim=0))[None, :, :, None]  # [1, n_rows, S, 1]
    onehot = F.one_hot(y, n_classes).to(torch.float32)[None, :, None, :]  # [1, n_rows, 1, C]
    buf = torch.empty(n_layers, n_rows, n_seeds * n_classes, dtype=torch.float32, device=device)
    x_t = x.transpose(1, 2)
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in (weight, bias)]

    def effective() -> tuple[torch.Tensor, torch.Tensor]:
        # Probe on (x - mu) / sigma, written as one on x.
        if not standardize:
            return weight, bias
        w_eff = weight / sigma
        return w_eff, bias - (mu * w_eff).sum(dim=1)

    with torch.no_grad():
        for epoch in range(epochs):
            w_eff, b_eff = effective()
            grad_z = _logits(x, w_eff, b_eff, out=buf)  # [K, n_rows, S, C]
            grad_z.sub_(grad_z.amax(dim=-1, keepdim=True)).exp_()
            grad_z.div_(grad_z.sum(dim=-1, keepdim=True)).sub_(onehot).mul_(row_weight)
            grad_b = grad_z.sum(dim=1)  # [K, S, C]
            grad_w = torch.bmm(x_t, buf).view(n_layers, hidden, n_seeds, n_classes)
            if standardize:
                grad_w.sub_(mu * grad_b.unsqueeze(1)).div_(sigma)
            _adam_step((weight, bias), (grad_w, grad_b), moments, step=epoch + 1, lr=lr)
            if bar is not None:
                bar.update(1)
        w_eff, b_eff = effective()
    return w_eff.detach(), b_eff.detach()


def _accuracy(
    x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, masks: torch.Tensor
) -> np.ndarray:
    """Accuracy [S, K] over the rows each column of ``masks`` [n_rows, S] marks."""
    with torch.no_grad():
        pred = _logits(x, weight, bias).argmax(dim=-1)  # [K, n_rows, S]
        correct = (pred == y[None, :, None]) & masks[None]
        acc = correct.sum(dim=1).to(torch.float64) / masks.sum(dim=0).to(torch.float64)
    return acc.T.cpu().numpy()


def _read_slab(slab: Any) -> torch.Tensor:
    """Layers of the feature array as read, in their own dtype and place: a numpy, memmap or
    zarr slice becomes a (host) tensor, a tensor stays as it is. The store read happens here
    (zarr decodes its chunks), so :func:`fit_layer_probes` runs it one group ahead."""
    return slab if isinstance(slab, torch.Tensor) else from_numpy(np.ascontiguousarray(np.asarray(slab)))


def _load_slab(slab: Any, device: torch.device, *, owner: str, first_layer: int) -> torch.Tensor:
    """Layers of the feature array as a float32 tensor on ``device``; reject non-finite values.

    slab : array-like of shape (g, n_samples, hidden), any real dtype (numpy, read-only
    memmaps included, torch, zarr), or what :func:`_read_slab` made of one. Returns a float32
    tensor of that shape; it may share memory with ``slab`` (never written). The finiteness
    check allocates nothing (no 1-byte-per-element mask), so the working set is the slab as
    read plus its float32 copy, as ``_layers_per_group`` counts; only the error path scans
    state by state.
    """
    x = _read_slab(slab).to(device=device, dtype=torch.float32)
    if not all_finite(x):
        bad = first_layer + next(k for k in range(x.shape[0]) if not all_finite(x[k]))
        raise ValueError(f"features passed to {owner} contain NaN or inf (first at state {bad}).")
    return x


def _itemsize(features: Any) -> int:
    if isinstance(features, torch.Tensor):
        return features.element_size()
    return np.dtype(getattr(features, "dtype", np.float64)).itemsize


def _layers_per_group(
    *,
    n_samples: int,
    n_rows: int,
    hidden: int,
    n_seeds: int,
    n_classes: int,
    n_fit: int,
    itemsize: int,
    max_batch_bytes: int,
    n_layers: int,
) -> int:
    """How many layers fit in ``max_batch_bytes`` (see fit_layer_probes Notes)."""
    fixed = 3 * n_fit * hidden * 8  # float64 scratch of the moments, one (seed, layer) at a time
    per_layer = (
        n_samples * hidden * (2 * itemsize + 4)  # slab as read, the next one read ahead, float32 copy
        + n_rows * hidden * 4  # rows used by some seed, centred
        + _LOGIT_BUFFERS * n_rows * n_seeds * n_classes * 4
        + _PARAM_BUFFERS * n_seeds * (hidden + 1) * n_classes * 4
        + 2 * n_seeds * hidden * 4  # mu, sigma
    )
    fit = (max_batch_bytes - fixed) // per_layer
    if fit < 1:
        raise InvalidParameterError(
            f"The 'max_batch_bytes' parameter of fit_layer_probes is too small for one layer: "
            f"one layer of {n_samples} samples x {hidden} features with {n_seeds} seeds and "
            f"{n_classes} classes needs about {fixed + per_layer} bytes. Got {max_batch_bytes!r}; "
            "raise it or pass fewer samples."
        )
    return int(min(fit, n_layers))


# -------------------------------------------------------------------------- public


def fit_layer_probes(
    features: Any,
    labels: Any,
    *,
    groups: Any = None,
    epochs: int = 150,
    lr: float = 0.05,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    val_fraction: float = 0.2,
    standardize: bool = True,
    device: str | torch.device | None = None,
    n_train: int = 20000,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    matmul_precision: str = "auto",
    return_weights: bool = False,
    progress: bool | None = None,
) -> ProbeResult:
    """Train one linear softmax probe per state and seed; report accuracies.

    Parameters
    ----------
    features : array-like of shape (n_states, n_samples, hidden)
        Last-token states h_T^l (numpy, torch, or a zarr array; anything with ``.shape``
        that slices along the first axis). Read ``max_batch_bytes``-sized groups of
        states at a time, so a zarr array is never loaded whole.
    labels : array-like of shape (n_samples,)
        Integer class ids (the gold position k); need not be contiguous.
    groups : array-like of shape (n_samples,), optional
        Group of each sample (MDQA: question and gold passage). Each group lands wholly in training
        or wholly in validation (:func:`grouped_stratified_split`); None: every sample is
        its own group (:func:`stratified_split`).
    epochs : int >= 1
        Full-batch Adam steps.
    lr : float > 0
        Adam learning rate (betas and eps are torch's defaults).
    seeds : sequence of distinct ints >= 0
        One probe per seed and state. A seed fixes the split and the initial weights.
    val_fraction : float in (0, 1)
        Share of samples held out for validation (stratified, see ``stratified_split``; with
        groups at most this share, see ``grouped_stratified_split``).
    standardize : bool
        Z-score each feature with mean/std of the seed's training split (see Notes).
    device : str or torch.device, optional
        Compute device; default CUDA when available, else CPU.
    n_train : int >= 1
        At most this many training samples per seed (paper: 20000).
    max_batch_bytes : int >= 1
        Bound on the working memory of one group of states (see Notes).
    matmul_precision : {"auto", "float32", "tf32"}
        Precision of the float32 matrix products (see Notes): ``"tf32"`` runs them on
        TF32 tensor cores on CUDA, ``"float32"`` keeps exact IEEE float32 products;
        ``"auto"`` (default) is ``"tf32"`` on CUDA and ``"float32"`` elsewhere. On CPU all
        three give identical results.
    return_weights : bool
        Also return the probe weights (``ProbeResult.coef``/``intercept``).
    progress : bool, optional
        Show a tqdm bar over epochs; default shows it only on a terminal.

    Returns
    -------
    ProbeResult
        ``val_accuracy`` and ``train_accuracy`` of shape (n_seeds, n_states) and
        ``mean``, ``std``, ``peak_layer``, ``peak_accuracy``, ``last_accuracy``, ``gap``.

    Raises
    ------
    InvalidParameterError
        (a ``ValueError``) for an out-of-range parameter; the message names it.
    ValueError
        For inconsistent shapes, non-integer labels, or non-finite features.

    Notes
    -----
    Protocol of the paper: per state and seed, a linear softmax probe (weights and
    bias) trained with Adam (lr 0.05) for 150 full-batch epochs on at most 20000
    samples, accuracy on a held-out split, 5 seeds. A seed fixes the stratified split
    (``np.random.default_rng(seed)``) and the initial weights (``torch.Generator``
    seeded with it, the same for every state), nothing else.

    *Standardisation.* With ``standardize=True`` each feature of each state is
    z-scored with the mean and population std (ddof=0) of that seed's training split,
    computed in float64; a feature constant on the training split (max == min) gets
    std 1. The probe is trained on the standardised features, implemented by folding
    the scaling into the weights (``x @ (W/sigma) + b - mu @ (W/sigma)``), which is the
    same function of (W, b) and so the same gradients and Adam trajectory. Before
    that, every state is shifted by its mean over all samples (float32), only to keep
    the fold well conditioned; the shift cancels exactly.

    *Precision and batching.* Training runs in float32; the training-split moments are
    accumulated in float64 and accuracies are exact counts, whatever the precision of the
    products. The float32 products -- each epoch's logits ``x @ W`` and weight gradient
    ``x^T dL/dz``, and the logits of the final accuracy pass -- follow
    ``matmul_precision``. With the default ``"auto"`` they run on CUDA on TF32 tensor
    cores: inputs rounded to a 10-bit mantissa (relative error up to about 1e-3 per
    input), products accumulated in float32, at several times the float32 throughput on
    Ampere and later GPUs. The trained weights then differ from float32 training by more
    than float32 rounding, but validation accuracies agree with exact float32 within seed
    noise (the GPU test asks for mean accuracy per state within 0.02 and the same peak
    state on a planted-signal set). ``"float32"`` gives exact IEEE float32 products on
    CUDA, e.g. to compare with CPU results. On CPU the products are always IEEE float32.
    All seeds and all states of a group share one ``bmm`` per epoch; the loss is the sum
    over (seed, state) of each problem's mean cross-entropy, so gradients do not mix and
    the batched Adam equals per-problem Adams. Logits are computed for every sample that any seed uses (training or
    validation), so compute grows with the union of the seeds' samples, at most
    ``n_samples``.

    *Memory and reads.* States are processed in groups of ``g`` consecutive states, where
    ``g`` is the largest count whose estimated working set (the slab as read, the next
    group's slab read ahead, a float32 copy, the used rows, logits and parameter buffers)
    fits ``max_batch_bytes``; on a CPU that is host memory, on a GPU most of it is device
    memory. Peak memory is thus set by ``max_batch_bytes``, not by the size of the store.
    Increase it on a large GPU to train more states per kernel launch. One background
    thread reads (for a zarr store: decodes) the next group while the current one trains,
    and the first group is read before a GPU is claimed (``device="auto"`` with several
    GPUs, :mod:`reprflow.devices`), so the GPU is held for the training and the reads the
    training does not hide; the log's last line says how long the training waited for
    reads.

    *Determinism.* On CPU the same inputs and seeds give identical results. No global
    numpy state or random-number state is read or changed, and on CPU no global torch
    state either. On CUDA the products of each group run inside a block that sets torch's
    process-wide CUDA float32 matmul switch (``torch.backends.cuda.matmul.fp32_precision``)
    to "tf32" or "ieee" as ``matmul_precision`` says and restores its previous value
    afterwards, also on error; float32 CUDA matmuls that other threads run meanwhile see
    the switch too. On CUDA, results can differ between GPU models or library versions:
    in the last bits with float32 products, at the level of TF32 rounding with TF32.
    """
    owner = "fit_layer_probes"
    _check_int(owner, "epochs", epochs, low=1)
    _check_real(owner, "lr", lr, low=0.0, high=math.inf, closed="neither")
    seeds = _check_seeds(owner, seeds)
    _check_real(owner, "val_fraction", val_fraction, low=0.0, high=1.0, closed="neither")
    _check_bool(owner, "standardize", standardize)
    _check_int(owner, "n_train", n_train, low=1)
    _check_int(owner, "max_batch_bytes", max_batch_bytes, low=1)
    _check_choice(owner, "matmul_precision", matmul_precision, MATMUL_PRECISIONS)
    _check_bool(owner, "return_weights", return_weights)
    # "auto" with several GPUs claims one (reprflow.devices): only once the first group is read
    dev = None if will_claim_gpu(device) else _resolve_device(owner, device)

    if not hasattr(features, "shape"):
        features = np.asarray(features)
    shape = tuple(int(n) for n in features.shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"features passed to {owner} must have shape (n_states, n_samples, hidden) with no empty axis. "
            f"Got shape {shape}."
        )
    n_states, n_samples, hidden = shape
    codes, classes = _encode_labels(owner, labels, n_samples)
    n_classes = classes.size

    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (n_samples,):
            raise ValueError(f"groups passed to {owner} must have shape ({n_samples},). Got shape {groups.shape}.")
    splits = [  # the labels themselves (not their codes): the same split, and a warning names the user's label
        grouped_stratified_split(classes[codes], groups, val_fraction=val_fraction, n_train=n_train, seed=s)
        for s in seeds
    ]
    rows = np.unique(np.concatenate([np.concatenate(sp) for sp in splits]))  # sorted union
    train_mask = np.zeros((rows.size, len(seeds)), dtype=bool)
    val_mask = np.zeros_like(train_mask)
    for s, (tr, va) in enumerate(splits):
        train_mask[np.searchsorted(rows, tr), s] = True
        val_mask[np.searchsorted(rows, va), s] = True
    n_fit = min(int(tr.size) for tr, _ in splits)  # the same for every seed unless groups leave fewer
    n_val_per_seed = tuple(int(va.size) for _, va in splits)
    n_val = min(n_val_per_seed)

    group = _layers_per_group(
        n_samples=n_samples,
        n_rows=rows.size,
        hidden=hidden,
        n_seeds=len(seeds),
        n_classes=n_classes,
        n_fit=n_fit,
        itemsize=_itemsize(features),
        max_batch_bytes=max_batch_bytes,
        n_layers=n_states,
    )
    bounds = [(k0, min(k0 + group, n_states)) for k0 in range(0, n_states, group)]
    first = _read_slab(features[: bounds[0][1]])  # before a GPU claim, which then waits on no read
    if dev is None:
        dev = _resolve_device(owner, device)
    precision = _products_precision(matmul_precision, dev)
    rows_t = torch.from_numpy(rows).to(dev)
    y = torch.from_numpy(codes[rows]).to(dev)
    train_t = torch.from_numpy(train_mask).to(dev)
    val_t = torch.from_numpy(val_mask).to(dev)

    val_acc = np.empty((len(seeds), n_states))
    train_acc = np.empty((len(seeds), n_states))
    coef = np.empty((len(seeds), n_states, hidden, n_classes), np.float32) if return_weights else None
    intercept = np.empty((len(seeds), n_states, n_classes)) if return_weights else None
    n_groups = len(bounds)
    logger.info(
        "%s: %d states x %d seeds, %d train / %d val samples, %d features, %d classes, "
        "%d epochs on %s (%s products, matmul_precision=%r), %d group(s) of <= %d states",
        owner,
        n_states,
        len(seeds),
        n_fit,
        n_val,
        hidden,
        n_classes,
        epochs,
        dev,
        precision,
        matmul_precision,
        n_groups,
        group,
    )
    t_start = time.perf_counter()
    waited = 0.0  # seconds the fits waited for a read
    disable = None if progress is None else not progress  # None: only on a terminal
    with (
        ThreadPoolExecutor(1, thread_name_prefix="probe-read") as reader,
        tqdm(total=n_groups * epochs, desc="probes", unit="epoch", disable=disable) as bar,
    ):
        ahead: Future | None = None
        for i, (k0, k1) in enumerate(bounds):
            t0 = time.perf_counter()
            host = first if ahead is None else ahead.result()  # [g, n_samples, hidden] as read
            waited += time.perf_counter() - t0
            first = None
            if i + 1 < n_groups:  # the next group is read while this one trains
                ahead = reader.submit(lambda a=bounds[i + 1][0], b=bounds[i + 1][1]: _read_slab(features[a:b]))
            slab = _load_slab(host, dev, owner=owner, first_layer=k0)  # [g, n_samples, hidden] float32
            del host
            shift = slab.mean(dim=1, keepdim=True) if standardize else None
            x = slab.index_select(1, rows_t)
            del slab
            if shift is not None:
                x -= shift
            with _products_context(precision, dev):
                w, b = _fit_softmax_probes(
                    x,
                    y,
                    train_t,
                    seeds=seeds,
                    n_classes=n_classes,
                    epochs=epochs,
                    lr=lr,
                    standardize=standardize,
                    bar=bar,
                )
                train_acc[:, k0:k1] = _accuracy(x, y, w, b, train_t)
                val_acc[:, k0:k1] = _accuracy(x, y, w, b, val_t)
            if return_weights:  # [K, hidden, S, C] -> [S, K, hidden, C]
                w64 = w.to(torch.float64)
                b64 = b.to(torch.float64)
                if shift is not None:  # undo the conditioning shift: (x - m) @ w + b
                    b64 = b64 - torch.einsum("kd,kdsc->ksc", shift[:, 0].to(torch.float64), w64)
                coef[:, k0:k1] = w.permute(2, 0, 1, 3).cpu().numpy()
                intercept[:, k0:k1] = b64.permute(1, 0, 2).cpu().numpy()
            del x
            dt = time.perf_counter() - t0
            logger.info(
                "%s: states %d-%d done in %.2f s (%.0f probe-epochs/s)",
                owner,
                k0,
                k1 - 1,
                dt,
                (k1 - k0) * len(seeds) * epochs / dt,
            )
    total = time.perf_counter() - t_start
    logger.info(
        "%s: %d probes x %d epochs in %.2f s (%.0f probe-epochs/s; %.2f s of it waiting for reads)",
        owner,
        n_states * len(seeds),
        epochs,
        total,
        n_states * len(seeds) * epochs / total,
        waited,
    )
    return ProbeResult(
        val_accuracy=val_acc,
        train_accuracy=train_acc,
        seeds=seeds,
        n_train=int(n_fit),
        n_val=int(n_val),
        n_classes=int(n_classes),
        classes=classes,
        coef=coef,
        intercept=intercept,
        matmul_precision=precision,
        n_val_per_seed=n_val_per_seed,
        device=str(dev),
    )


def __getattr__(name: str):
    """``LinearProbe`` and ``ProbeNotFittedError`` live in :mod:`reprflow.linear_probe` (scikit-learn)."""
    if name in ("LinearProbe", "ProbeNotFittedError"):
        from reprflow import linear_probe

        return getattr(linear_probe, name)
    raise AttributeError(f"module 'reprflow.probes' has no attribute {name!r}")
