"""Monte Carlo check of the paper's stability theorems (§4, Appendix A); see docs/theory.md.

Modules: ``weights`` (seeded block weights), ``transformer`` and ``mamba`` (the one-layer blocks
of Eq. 5 and Eq. 6, exact and linearised), ``closed_forms`` (our closed forms for Theorems 1-5),
``montecarlo`` (moments with jackknife CIs), ``depth`` (Theorem 6 stacks), ``experiment``
(the grid as DataFrames) and ``verdict`` (comparisons and the markdown verdict).
"""

from reprflow.theory.closed_forms import (
    closed_form_attention_energy,
    closed_form_mamba_energy,
    closed_form_ssm_energy,
    closed_form_transformer_energy,
    theorem5_crossover_sigma2,
)
from reprflow.theory.mamba import mamba_update
from reprflow.theory.montecarlo import EnergyMoments, Estimate, monte_carlo_moments
from reprflow.theory.transformer import causal_attention, transformer_update
from reprflow.theory.weights import WeightSource, sample_mamba_weights, sample_transformer_weights

__all__ = [
    "EnergyMoments",
    "Estimate",
    "WeightSource",
    "causal_attention",
    "closed_form_attention_energy",
    "closed_form_mamba_energy",
    "closed_form_ssm_energy",
    "closed_form_transformer_energy",
    "mamba_update",
    "monte_carlo_moments",
    "sample_mamba_weights",
    "sample_transformer_weights",
    "theorem5_crossover_sigma2",
    "transformer_update",
]
