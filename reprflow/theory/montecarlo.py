"""Monte Carlo estimates of E||F||², ||E F||² and Tr Σ of a block update, with jackknife CIs.

All quantities are per token, averaged over tokens, summed over the hidden axis:

    energy     = (1/n) Σ_t E||F_t||²
    mean_norm2 = (1/n) Σ_t ||E F_t||²
    trace_cov  = (1/n) Σ_t tr Cov(F_t)        (energy = mean_norm2 + trace_cov)

With B draws F_b, ``energy`` is the sample mean of (1/n) Σ_t ||F_bt||², ``mean_norm2`` is the
unbiased U-statistic (||Σ_b F_b||² - Σ_b ||F_b||²) / (n B (B-1)), and ``trace_cov`` is their
difference (also unbiased). Confidence intervals come from a delete-one-group jackknife over
G = ``n_groups`` contiguous groups of draws, with the Student t quantile on G - 1 degrees of
freedom. Several updates can be evaluated on the *same*
draws (common random numbers), so exact and linearised blocks are compared on equal inputs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import NotRequired, TypedDict, Unpack

import scipy.stats
import torch

from reprflow.errors import ConfigError

logger = logging.getLogger(__name__)

CI_Z = 1.959963984540054  # two-sided 95 % normal quantile


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a 95 % confidence interval (equal bounds for a closed form)."""

    value: float
    ci_low: float
    ci_high: float

    @classmethod
    def exact(cls, value: float) -> Estimate:
        return cls(value, value, value)

    @classmethod
    def normal(cls, value: float, std_error: float, quantile: float = CI_Z) -> Estimate:
        """value ± quantile * std_error (default: the normal 97.5 % quantile)."""
        return cls(value, value - quantile * std_error, value + quantile * std_error)

    def contains(self, x: float) -> bool:
        return self.ci_low <= x <= self.ci_high


@dataclass(frozen=True)
class EnergyMoments:
    """energy = E||F||², mean_norm2 = ||E F||², trace_cov = Tr Σ, each per token."""

    energy: Estimate
    mean_norm2: Estimate
    trace_cov: Estimate


def gaussian_tokens(
    n_samples: int, n_tokens: int, hidden: int, *, sigma2: float, generator: torch.Generator
) -> torch.Tensor:
    """h ~ N(0, σ² I), i.i.d. across tokens (Assumptions 1-3), float64 on CPU.

    One ``randn`` call per sample, so draw b is the same whatever the chunking.

    Returns
    -------
    Tensor of shape (n_samples, n_tokens, hidden)
    """
    draws = [torch.randn(n_tokens, hidden, generator=generator, dtype=torch.float64) for _ in range(n_samples)]
    return torch.stack(draws) * math.sqrt(sigma2)


class Draws(TypedDict):
    """The Monte Carlo inputs of an estimate, as keyword arguments of :func:`gaussian_chunks`."""

    n_tokens: int
    hidden: int
    sigma2: float
    n_mc: int
    seed: int
    chunk: int
    device: NotRequired[torch.device | str]
    dtype: NotRequired[torch.dtype]


def gaussian_chunks(
    *,
    n_tokens: int,
    hidden: int,
    sigma2: float,
    n_mc: int,
    seed: int,
    chunk: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> Iterator[tuple[int, torch.Tensor]]:
    """The ``n_mc`` Gaussian inputs of an estimate, ``chunk`` draws at a time.

    Parameters
    ----------
    n_tokens, hidden : int
    sigma2 : float
        Input variance σ².
    n_mc : int
        Number of Monte Carlo draws B.
    seed : int
        Seeds the CPU generator of the inputs (:func:`gaussian_tokens`), so draw b is the same
        whatever ``chunk``, ``device`` and ``dtype``.
    chunk : int
        Draws evaluated at once (bounds memory).
    device, dtype :
        Where and in which precision the blocks run.

    Yields
    ------
    (start, h): the index of the chunk's first draw, and h of shape
    (min(chunk, n_mc - start), n_tokens, hidden) on ``device`` in ``dtype``
    """
    if chunk < 1:
        raise ConfigError(f"theory chunk: got {chunk}; expected >= 1")
    gen = torch.Generator().manual_seed(seed)

    def chunks() -> Iterator[tuple[int, torch.Tensor]]:
        for start in range(0, n_mc, chunk):
            h = gaussian_tokens(min(chunk, n_mc - start), n_tokens, hidden, sigma2=sigma2, generator=gen)
            yield start, h.to(device=device, dtype=dtype)

    return chunks()


def _moment_stats(t_sq: torch.Tensor, q_sum: torch.Tensor, b: torch.Tensor, n: int):
    energy = q_sum / b
    mean_norm2 = (t_sq / n - q_sum) / (b * (b - 1))
    return energy, mean_norm2, energy - mean_norm2


@dataclass(frozen=True)
class MomentSums:
    """Per-group sums of B draws of one update F (n tokens, p output features), float64 CPU.

    Attributes
    ----------
    sums : Tensor of shape (G, n, p)      Σ_b F_b over the draws of each group
    sq : Tensor of shape (G,)             Σ_b (1/n) Σ_t ||F_bt||²
    sq_token_mean : Tensor of shape (G,)  Σ_b ||(1/n) Σ_t F_bt||²
    counts : Tensor of shape (G,)         draws per group
    """

    sums: torch.Tensor
    sq: torch.Tensor
    sq_token_mean: torch.Tensor
    counts: torch.Tensor

    @property
    def n_tokens(self) -> int:
        return self.sums.shape[1]

    def moments(self) -> EnergyMoments:
        """energy, ||E F||² and Tr Σ per token (see the module docstring), with jackknife CIs."""
        n = self.n_tokens

        def stats(s, q, qm, b):
            return _moment_stats((s**2).sum(), q, b, n)

        return EnergyMoments(*_jackknife_stats(self, stats))

    def mean_distance2(self, target: torch.Tensor, *, token_mean: bool = False) -> Estimate:
        """Unbiased estimate of ||E X - c||² with X = F (all tokens, ``target`` of shape (n, p))
        or X = (1/n) Σ_t F_t (``token_mean``, ``target`` of shape (p,)), and its jackknife CI.

        U-statistic: (||Σ_b (X_b - c)||² - Σ_b ||X_b - c||²) / (B (B - 1)).
        """
        c = target.to(torch.float64).cpu()
        n = self.n_tokens

        def stats(s, q, qm, b):
            if token_mean:
                x_sum, x_sq = s.sum(0) / n, qm
            else:
                x_sum, x_sq = s, q * n
            diff = x_sum - b * c
            sq_dev = x_sq - 2 * (c * x_sum).sum() + b * (c**2).sum()
            return (((diff**2).sum() - sq_dev) / (b * (b - 1)),)

        return _jackknife_stats(self, stats)[0]

    def mean_projection(self, target: torch.Tensor, *, token_mean: bool = False) -> Estimate:
        """⟨E X, c⟩ / ||c||² - 1 (X and ``target`` as in :meth:`mean_distance2`): the relative
        error of E X along c. A scalar linear statistic, so far less noisy than the distance."""
        c = target.to(torch.float64).cpu()
        n = self.n_tokens

        def stats(s, q, qm, b):
            x_sum = s.sum(0) / n if token_mean else s
            return ((x_sum * c).sum() / (b * (c**2).sum()) - 1.0,)

        return _jackknife_stats(self, stats)[0]


def monte_carlo_sums(
    updates: Mapping[str, Callable[[torch.Tensor], torch.Tensor]],
    *,
    n_groups: int = 16,
    **draws: Unpack[Draws],
) -> dict[str, MomentSums]:
    """Jackknife group sums of each update F on the same ``n_mc`` Gaussian inputs.

    Parameters
    ----------
    updates : mapping of name -> callable
        Each maps h of shape (n_samples, n_tokens, hidden) to F(h) of shape
        (n_samples, n_tokens, p); p may differ from hidden.
    n_groups : int
        Jackknife groups G = min(n_groups, n_mc); draws are assigned to contiguous groups.
    **draws :
        The inputs (:class:`Draws`): n_tokens, hidden, sigma2, n_mc (>= 4), seed, chunk, and
        the device and dtype the blocks run in, as in :func:`gaussian_chunks`. The sums are
        accumulated in float64 on the CPU.

    Returns
    -------
    dict of name -> MomentSums
    """
    chunks = gaussian_chunks(**draws)
    n_mc, n_tokens, sigma2 = draws["n_mc"], draws["n_tokens"], draws["sigma2"]
    if n_mc < 4:
        raise ConfigError(f"theory n_mc: got {n_mc}; expected >= 4 Monte Carlo draws")
    groups = min(n_groups, n_mc)
    sums: dict[str, torch.Tensor] = {}
    sq = {k: torch.zeros(groups, dtype=torch.float64) for k in updates}
    sq_mean = {k: torch.zeros(groups, dtype=torch.float64) for k in updates}
    counts = torch.zeros(groups, dtype=torch.float64)
    for start, h in chunks:
        size = h.shape[0]
        gid = torch.arange(start, start + size) * groups // n_mc
        counts.index_add_(0, gid, torch.ones(size, dtype=torch.float64))
        for name, update in updates.items():
            f = update(h).to(torch.float64)
            if not torch.isfinite(f).all():
                raise FloatingPointError(f"theory block {name!r}: non-finite output at n={n_tokens}, σ²={sigma2}")
            if name not in sums:
                sums[name] = torch.zeros(groups, n_tokens, f.shape[2], dtype=torch.float64)
            sums[name].index_add_(0, gid, f.cpu())
            sq[name].index_add_(0, gid, ((f**2).sum((1, 2)) / n_tokens).cpu())
            sq_mean[name].index_add_(0, gid, (f.mean(1) ** 2).sum(1).cpu())
    return {k: MomentSums(sums[k], sq[k], sq_mean[k], counts) for k in updates}


def monte_carlo_moments(
    updates: Mapping[str, Callable[[torch.Tensor], torch.Tensor]],
    *,
    n_groups: int = 16,
    **draws: Unpack[Draws],
) -> dict[str, EnergyMoments]:
    """The three moments of each update F on the same ``n_mc`` Gaussian inputs (arguments as
    in :func:`monte_carlo_sums`): name -> EnergyMoments, with jackknife CIs."""
    return {k: v.moments() for k, v in monte_carlo_sums(updates, n_groups=n_groups, **draws).items()}


def _jackknife_stats(sums: MomentSums, stats: Callable) -> list[Estimate]:
    """Delete-one-group jackknife of ``stats(sums, sq, sq_token_mean, count)`` (a tuple of
    scalars), with the Student t quantile on G - 1 degrees of freedom."""
    parts = (sums.sums, sums.sq, sums.sq_token_mean, sums.counts)
    totals = [x.sum(0) for x in parts]
    full = stats(*totals)
    g = sums.counts.shape[0]
    loo = [stats(*(t - x[i] for t, x in zip(totals, parts, strict=True))) for i in range(g)]
    quantile = float(scipy.stats.t.ppf(0.975, g - 1))
    out = []
    for k, value in enumerate(full):
        leave_out = torch.stack([torch.as_tensor(v[k]) for v in loo])
        var = (g - 1) / g * ((leave_out - leave_out.mean()) ** 2).sum()
        out.append(Estimate.normal(float(value), math.sqrt(float(var)), quantile))
    return out
