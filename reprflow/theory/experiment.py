"""The theory check's grid: every (block, n, σ², weight source) evaluated three ways.

For each cell the *same* weights are evaluated as (a) the exact nonlinear block and (b) the
linearised block (Assumption 4), by Monte Carlo on the same inputs, and as (c) the closed form
(:mod:`reprflow.theory.closed_forms`). Depth-L stacks (Theorem 6) are simulated with the exact
blocks, with and without pre-LayerNorm. Functions here return DataFrames; writing them is the
job of :mod:`reprflow.pipeline.theory_stage`.

Seeds: the CSVs' ``seed`` column is the configured seed. Every random draw has its own seed
derived from it with
``numpy.random.SeedSequence(seed, spawn_key=...)``. Weights depend on (block, layer) only, so
all n, σ² and weight sources share the same standard-normal matrices (rescaled per source);
inputs depend on (n, σ²) only, so both blocks and all estimators see the same h⁰.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from reprflow.errors import ConfigError
from reprflow.theory.closed_forms import (
    closed_form_mamba_energy,
    closed_form_transformer_energy,
    mamba_energy_coefficients,
    theorem5_crossover_sigma2,
)
from reprflow.theory.depth import monte_carlo_depth
from reprflow.theory.mamba import mamba_update
from reprflow.theory.montecarlo import EnergyMoments, Estimate, monte_carlo_moments
from reprflow.theory.transformer import transformer_update
from reprflow.theory.weights import (
    FFN_MULT,
    SCHEME_DEFAULTS,
    MambaWeights,
    TransformerWeights,
    WeightSource,
    sample_mamba_weights,
    sample_transformer_weights,
)

logger = logging.getLogger(__name__)

BLOCKS = ("transformer", "mamba")
ESTIMATORS = ("exact", "linearized", "closed_form")
QUANTITIES = ("energy", "mean_norm2", "trace_cov")
STABILITY_COLUMNS = [
    "block", "estimator", "quantity", "n", "sigma2", "mean", "ci_low", "ci_high",
    "seed", "n_mc", "weight_source",
]  # fmt: skip
DEPTH_COLUMNS = [
    "block", "layernorm", "depth", "n", "sigma2", "path_energy", "path_energy_ci_low",
    "path_energy_ci_high", "st2", "ci_low", "ci_high", "st2_var", "seed", "n_mc",
    "weight_source",
]  # fmt: skip
APPROX_COLUMNS = [
    "block", "approximation", "n", "sigma2", "closed_form", "approximated", "rel_error",
    "linearized", "linearized_ci_low", "linearized_ci_high", "weight_source",
]  # fmt: skip

CROSSOVER_COLUMNS = [
    "weight_source", "n", "transformer_t", "mamba_a", "mamba_b", "mamba_c", "sigma2_star",
]  # fmt: skip

_WEIGHTS, _INPUTS, _DEPTH_INPUTS = 0, 1, 2


@dataclass(frozen=True)
class TheoryGrid:
    """Everything the theory check varies; validated on construction.

    Attributes
    ----------
    n_grid : tuple of int
        Sequence lengths n (1 <= n <= 4096 is what the paper discusses; larger is allowed).
    sigma2_grid : tuple of float
        Input variances σ² > 0.
    d_model, d_state, d_conv, expand : int
        Block sizes (hidden = d_model; Mamba has m = expand * d_model channels).
    n_mc : int
        Monte Carlo draws per cell (>= 4).
    depths : tuple of int
        Stack depths L for Theorem 6 (empty: skip the depth study).
    depth_n_grid : tuple of int
        Sequence lengths for the depth study.
    sources : tuple of WeightSource
        The configured scheme first, then one per given model.
    seed : int
    """

    n_grid: tuple[int, ...]
    sigma2_grid: tuple[float, ...]
    d_model: int
    d_state: int
    d_conv: int
    expand: int
    n_mc: int
    depths: tuple[int, ...]
    depth_n_grid: tuple[int, ...]
    sources: tuple[WeightSource, ...]
    seed: int

    def __post_init__(self) -> None:
        checks = {
            "n_grid": all(isinstance(n, int) and n >= 1 for n in self.n_grid) and self.n_grid,
            "sigma2_grid": all(s > 0 for s in self.sigma2_grid) and self.sigma2_grid,
            "depths": all(isinstance(d, int) and d >= 1 for d in self.depths),
            "depth_n_grid": all(isinstance(n, int) and n >= 1 for n in self.depth_n_grid),
            "d_model": self.d_model >= 1,
            "d_state": self.d_state >= 1,
            "d_conv": self.d_conv >= 1,
            "expand": self.expand >= 1,
            "n_mc": self.n_mc >= 4,
            "seed": self.seed >= 0,
            "sources": len(self.sources) >= 1,
        }
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(
                    f"theory.{key}: got {getattr(self, key)!r}; expected positive values "
                    "(n_mc >= 4, non-empty n_grid / sigma2_grid, at least one weight source)"
                )


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for the draw named by ``keys``, from ``numpy.random.SeedSequence``."""
    state = np.random.SeedSequence(seed, spawn_key=tuple(keys)).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


def block_weights(
    block: str, grid: TheoryGrid, source: WeightSource, *, layer: int = 0
) -> TransformerWeights | MambaWeights:
    """The float64 CPU weights of ``block`` (layer ``layer`` of a stack) under ``source``."""
    seed = derive_seed(grid.seed, _WEIGHTS, BLOCKS.index(block), layer)
    if block == "transformer":
        return sample_transformer_weights(grid.d_model, source=source, seed=seed)
    return sample_mamba_weights(
        grid.d_model, d_state=grid.d_state, d_conv=grid.d_conv, expand=grid.expand,
        source=source, seed=seed,
    )  # fmt: skip


def _update(block: str, w, *, linearized: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    fn = transformer_update if block == "transformer" else mamba_update
    return lambda h: fn(h, w, linearized=linearized)


def draws_per_chunk(block: str, grid: TheoryGrid, n: int, max_elements: int) -> int:
    """How many draws fit in ``max_elements`` tensor elements (attention is n² per draw)."""
    d = grid.d_model
    if block == "transformer":
        per_draw = 3 * n * n + (6 + 2 * FFN_MULT) * n * d
    else:
        per_draw = 16 * n * grid.expand * d + 4 * grid.expand * d * grid.d_state
    return max(1, min(grid.n_mc, max_elements // per_draw))


def _rows(block, estimator, n, sigma2, moments: EnergyMoments, seed, n_mc, source) -> list[dict]:
    return [
        {
            "block": block,
            "estimator": estimator,
            "quantity": q,
            "n": n,
            "sigma2": sigma2,
            "mean": est.value,
            "ci_low": est.ci_low,
            "ci_high": est.ci_high,
            "seed": seed,
            "n_mc": n_mc,
            "weight_source": source.label,
        }  # fmt: skip
        for q, est in zip(QUANTITIES, (moments.energy, moments.mean_norm2, moments.trace_cov))
    ]


def closed_form_moments(block: str, w, *, n: int, sigma2: float) -> EnergyMoments:
    """(c): the closed form's energy; its mean is 0 under our approximations, so Tr Σ = energy."""
    if block == "transformer":
        e = closed_form_transformer_energy(w, n_tokens=n, sigma2=sigma2)
    else:
        e = closed_form_mamba_energy(w, n_tokens=n, sigma2=sigma2)
    return EnergyMoments(Estimate.exact(e), Estimate.exact(0.0), Estimate.exact(e))


def stability_table(
    grid: TheoryGrid, *, device: str = "cpu", dtype: torch.dtype = torch.float64,
    max_elements: int = 1 << 24,
) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """Rows of results/theory/stability.csv and approximations.csv for the whole grid.

    Returns
    -------
    stability : DataFrame with columns ``STABILITY_COLUMNS``
    approximations : DataFrame with columns ``APPROX_COLUMNS`` (the paper's P-1/n² and P-VV
        applied to the Transformer closed form, next to the linearised Monte Carlo)
    """
    rows, approx_rows = [], []
    for source in grid.sources:
        for block in BLOCKS:
            w = block_weights(block, grid, source)
            w_dev = w.to(device, dtype)
            updates = {
                "exact": _update(block, w_dev, linearized=False),
                "linearized": _update(block, w_dev, linearized=True),
            }
            for n in grid.n_grid:
                chunk = draws_per_chunk(block, grid, n, max_elements)
                for k, sigma2 in enumerate(grid.sigma2_grid):
                    seed = derive_seed(grid.seed, _INPUTS, n, k)
                    start = time.perf_counter()
                    mc = monte_carlo_moments(
                        updates, n_tokens=n, hidden=grid.d_model, sigma2=sigma2,
                        n_mc=grid.n_mc, seed=seed, chunk=chunk, device=device, dtype=dtype,
                    )  # fmt: skip
                    logger.info(
                        "%s/%s n=%d σ²=%g: %d draws in %.2fs (%.0f tokens/s)",
                        source.label, block, n, sigma2, grid.n_mc, time.perf_counter() - start,
                        2 * grid.n_mc * n / (time.perf_counter() - start),
                    )  # fmt: skip
                    for est, moments in mc.items():
                        rows += _rows(block, est, n, sigma2, moments, grid.seed, grid.n_mc, source)
                    cf = closed_form_moments(block, w, n=n, sigma2=sigma2)
                    rows += _rows(block, "closed_form", n, sigma2, cf, grid.seed, 0, source)
                    if block == "transformer":
                        approx_rows += _paper_approximations(w, n, sigma2, mc["linearized"], source)
    return (
        pd.DataFrame(rows, columns=STABILITY_COLUMNS),
        pd.DataFrame(approx_rows, columns=APPROX_COLUMNS),
    )


def _paper_approximations(w, n, sigma2, lin: EnergyMoments, source) -> list[dict]:
    ours = closed_form_transformer_energy(w, n_tokens=n, sigma2=sigma2)
    variants = {
        "P-1/n2": {"attention": "paper_1_over_n2"},
        "P-VV": {"value_gram": "paper_identity"},
        "P-1/n2+P-VV": {"attention": "paper_1_over_n2", "value_gram": "paper_identity"},
    }
    out = []
    for name, kwargs in variants.items():
        approx = closed_form_transformer_energy(w, n_tokens=n, sigma2=sigma2, **kwargs)
        out.append({
            "block": "transformer", "approximation": name, "n": n, "sigma2": sigma2,
            "closed_form": ours, "approximated": approx, "rel_error": approx / ours - 1.0,
            "linearized": lin.energy.value, "linearized_ci_low": lin.energy.ci_low,
            "linearized_ci_high": lin.energy.ci_high, "weight_source": source.label,
        })  # fmt: skip
    return out


def crossover_table(grid: TheoryGrid) -> pd.DataFrame:
    """Rows of crossover.csv: the closed forms' σ² at which Theorem 5's ordering reverses.

    Closed forms: E_Trans = t σ², E_Mamba = a σ⁴ + b σ⁶ + c σ⁸; ``sigma2_star`` is the smallest
    σ² with E_Mamba >= E_Trans (inf if none), per weight source and n.
    """
    rows = []
    for source in grid.sources:
        wt, wm = block_weights("transformer", grid, source), block_weights("mamba", grid, source)
        for n in grid.n_grid:
            a, b, c = mamba_energy_coefficients(wm, n_tokens=n)
            rows.append({
                "weight_source": source.label, "n": n,
                "transformer_t": closed_form_transformer_energy(wt, n_tokens=n, sigma2=1.0),
                "mamba_a": a, "mamba_b": b, "mamba_c": c,
                "sigma2_star": theorem5_crossover_sigma2(wt, wm, n_tokens=n),
            })  # fmt: skip
    return pd.DataFrame(rows, columns=CROSSOVER_COLUMNS)


def depth_table(
    grid: TheoryGrid, *, device: str = "cpu", dtype: torch.dtype = torch.float64,
    max_elements: int = 1 << 24,
) -> pd.DataFrame:  # fmt: skip
    """Rows of results/theory/depth.csv: exact-block stacks, with and without pre-LN."""
    rows = []
    if not grid.depths:
        return pd.DataFrame(rows, columns=DEPTH_COLUMNS)
    n_layers = max(grid.depths)
    for source in grid.sources:
        for block in BLOCKS:
            stack = [
                _update(block, block_weights(block, grid, source, layer=layer).to(device, dtype),
                        linearized=False)
                for layer in range(n_layers)
            ]  # fmt: skip
            for n in grid.depth_n_grid:
                chunk = draws_per_chunk(block, grid, n, max_elements)
                for k, sigma2 in enumerate(grid.sigma2_grid):
                    seed = derive_seed(grid.seed, _DEPTH_INPUTS, n, k)
                    for layernorm in (False, True):
                        res = monte_carlo_depth(
                            stack, depths=grid.depths, layernorm=layernorm, n_tokens=n,
                            hidden=grid.d_model, sigma2=sigma2, n_mc=grid.n_mc, seed=seed,
                            chunk=chunk, device=device, dtype=dtype,
                        )  # fmt: skip
                        for depth, dm in sorted(res.items()):
                            rows.append({
                                "block": block, "layernorm": layernorm, "depth": depth, "n": n,
                                "sigma2": sigma2, "path_energy": dm.path_energy.value,
                                "path_energy_ci_low": dm.path_energy.ci_low,
                                "path_energy_ci_high": dm.path_energy.ci_high,
                                "st2": dm.st2.value, "ci_low": dm.st2.ci_low,
                                "ci_high": dm.st2.ci_high, "st2_var": dm.st2_var.value,
                                "seed": grid.seed, "n_mc": grid.n_mc,
                                "weight_source": source.label,
                            })  # fmt: skip
            logger.info("depth study done for %s/%s", source.label, block)
    return pd.DataFrame(rows, columns=DEPTH_COLUMNS)


def weight_sources(scheme: str, params: dict, model_scales: Sequence[dict] | None = None) -> tuple[WeightSource, ...]:
    """The configured scheme (label ``"scheme"``) plus one ``model:<name>`` source per model.

    Each model entry is ``{"name": str, "std": float | {matrix name: float}}``.
    """
    if scheme not in SCHEME_DEFAULTS:
        raise ConfigError(
            f"theory.weight_scheme {scheme!r}: unknown; expected one of {sorted(SCHEME_DEFAULTS)} "
            "(model scales go in theory.model_scales)"
        )
    sources = [WeightSource(scheme, dict(params), "scheme")]
    for entry in model_scales or ():
        if set(entry) != {"name", "std"}:
            raise ConfigError(f"theory.model_scales entry {entry!r}: expected exactly the keys 'name' and 'std'")
        std = entry["std"]
        sources.append(
            WeightSource("model", std if isinstance(std, dict) else {"std": std},
                         f"model:{entry['name']}")
        )  # fmt: skip
    return tuple(sources)
