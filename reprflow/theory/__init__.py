"""Monte Carlo check of the paper's stability theorems (§4, Appendix A); see docs/theory.md.

The paper's Theorems 1-6 as stated, in the paper's setting: ``paper_blocks`` (non-causal
attention with FFN biases; S6 with input-independent Ā, B̄_t, C_t), ``paper_forms`` (the stated
formulas, exact references, the proof constants of Theorem 5), ``paper_check`` (the per-cell
tables) and ``paper_verdict`` (statuses, verdicts, markdown).

The project's extensions (our derivations): ``transformer`` and ``mamba`` (causal attention;
selective B/C, D skip), ``closed_forms``, ``experiment`` and ``verdict``.

Shared: ``weights`` (weight sources), ``montecarlo`` (moments with jackknife CIs), ``depth``
(residual stacks: path energy, St_L² both ways, per-layer energies).
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
