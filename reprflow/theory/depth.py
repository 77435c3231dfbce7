"""Depth-L stacks of blocks (paper Theorem 6): path energy and St_L².

A stack applies L blocks with independent weights to h⁰ ~ N(0, σ² I):

    h^{l+1} = h^l + F_l(h^l)                 (plain residual stack), or
    h^{l+1} = h^l + F_l(LN(h^l))             (pre-LayerNorm stack, LN without affine, eps 1e-5).

Per draw we record, for every requested depth L (a prefix of the deepest stack, so all depths
share weights and inputs):

- path energy  P_L = Σ_{l<L} (1/n) Σ_t ||F_l(·)_t||²  (the squared lengths of the residual updates);
- St_L²        the square of St (paper Eq. 4: the mean over tokens and hidden dims of the
               population std over the K = L + 1 states h⁰..h^L), the project's reading;
- St_L² (var)  the paper's Theorem 6 definition (Appendix A.3): (1/(nd)) (1/(L+1))
               Σ_l ||h^l - h̄||_F², the mean over tokens and dims of the population *variance*;
- layer energy (1/n) ||F_l(·)||_F² of each layer l < L (Assumption 8 compares these).

Both are reported as the mean over draws with a normal 95 % CI. Without LayerNorm a stack can
blow up (Mamba's update grows like σ⁸ in its input scale); if any draw overflows the dtype,
the depth reports +inf for mean and bounds (a NaN draw: NaN, which decides no ordering), and a
warning is logged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Unpack

import torch
import torch.nn.functional as fn

from reprflow.errors import ConfigError
from reprflow.theory.montecarlo import Draws, Estimate, gaussian_chunks

logger = logging.getLogger(__name__)

LN_EPS = 1e-5  # LayerNorm epsilon, as in GPT-NeoX and Mamba configs


@dataclass(frozen=True)
class DepthMoments:
    """Path energy, St_L² (Eq. 4 squared), St_L² (Theorem 6's variance) and each layer's
    energy (1/n)||F_l||_F², of one stack at one depth; ``poincare_ratio`` is the largest ratio
    over draws of St_L² (var) to Lemma 1's bound (<= 1 when the lemma holds)."""

    path_energy: Estimate
    st2: Estimate
    st2_var: Estimate
    layer_energy: tuple[Estimate, ...]
    poincare_ratio: float


def stack_statistics(
    h: torch.Tensor,
    updates: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    *,
    depths: Sequence[int],
    layernorm: bool,
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per-draw path energy and St² of a residual stack at each depth in ``depths``.

    Parameters
    ----------
    h : Tensor of shape (n_samples, n_tokens, hidden)
        The input states h⁰.
    updates : sequence of callables
        F_0 .. F_{L-1}, at least ``max(depths)`` of them.
    depths : sequence of int
    layernorm : bool
        Apply LN (no affine, eps ``LN_EPS``) to the block input.

    Returns
    -------
    dict depth -> (path_energy, st2, st2_var, layer_energy): float64 Tensors of shape
    (n_samples,), and (n_samples, depth) for layer_energy
    """
    if not depths or min(depths) < 1 or max(depths) > len(updates):
        raise ConfigError(f"theory depths {list(depths)}: expected values in 1..{len(updates)} (blocks built)")
    n = h.shape[1]
    mean, m2 = h.to(torch.float64), torch.zeros_like(h, dtype=torch.float64)
    energy = torch.zeros(h.shape[0], dtype=torch.float64, device=h.device)
    layers = []
    out = {}
    for layer in range(max(depths)):
        x = fn.layer_norm(h, h.shape[-1:], eps=LN_EPS) if layernorm else h
        f = updates[layer](x)
        layers.append((f.to(torch.float64) ** 2).sum((1, 2)) / n)
        energy = energy + layers[-1]
        h = h + f
        k = layer + 2  # states seen so far: h⁰..h^{layer+1}
        delta = h.to(torch.float64) - mean
        mean = mean + delta / k
        m2 = m2 + delta * (h.to(torch.float64) - mean)  # Welford update
        if layer + 1 in depths:
            st = torch.sqrt(m2 / k).mean((1, 2))
            out[layer + 1] = (energy.clone(), st**2, (m2 / k).mean((1, 2)), torch.stack(layers, 1))
    return out


def monte_carlo_depth(
    updates: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    *,
    depths: Sequence[int],
    layernorm: bool,
    **draws: Unpack[Draws],
) -> dict[int, DepthMoments]:
    """Mean and 95 % CI over ``n_mc`` draws of path energy and St_L², for each depth.

    ``updates``, ``depths`` and ``layernorm`` as in :func:`stack_statistics`; ``draws`` are the
    inputs (:class:`reprflow.theory.montecarlo.Draws`: n_tokens, hidden, sigma2, n_mc >= 2,
    seed, chunk, device, dtype), as in :func:`reprflow.theory.montecarlo.gaussian_chunks`.
    """
    chunks = gaussian_chunks(**draws)
    n_mc, hidden = draws["n_mc"], draws["hidden"]
    if n_mc < 2:
        raise ConfigError(f"theory n_mc: got {n_mc}; expected >= 2 Monte Carlo draws")
    per_depth: dict[int, list[tuple[torch.Tensor, ...]]] = {d: [] for d in depths}
    for _, h in chunks:
        stats = stack_statistics(h, updates, depths=depths, layernorm=layernorm)
        for d, values in stats.items():
            per_depth[d].append(tuple(x.cpu() for x in values))
    out = {}
    for d, v in per_depth.items():
        energy, st2, st2_var, layer = (torch.cat(x) for x in zip(*v))
        # Lemma 1 as stated: St_L² <= E_path / (4 n d sin²(π / (2(L+1)))), E_path = n * energy
        bound = energy / (4 * hidden * math.sin(math.pi / (2 * (d + 1))) ** 2)
        ratio = st2_var / bound
        out[d] = DepthMoments(
            _mean_ci(energy, d), _mean_ci(st2, d), _mean_ci(st2_var, d),
            tuple(_mean_ci(layer[:, i], d) for i in range(d)),
            float(ratio.max()) if torch.isfinite(ratio).all() else math.inf,
        )  # fmt: skip
    return out


def _mean_ci(x: torch.Tensor, depth: int) -> Estimate:
    """Mean and normal 95 % CI; a stack that overflowed (infinite draws) reports +inf, one with a
    NaN draw (an undefined value, not a large one) NaN, which no ordering decides."""
    if torch.isnan(x).any():
        logger.warning("depth %d: %d of %d draws are NaN; reported as NaN", depth, int(torch.isnan(x).sum()), x.numel())
        return Estimate(math.nan, math.nan, math.nan)
    if not torch.isfinite(x).all():
        logger.warning(
            "depth %d: %d of %d draws overflowed the dtype; reported as +inf",
            depth, int((~torch.isfinite(x)).sum()), x.numel(),
        )  # fmt: skip
        return Estimate(math.inf, math.inf, math.inf)
    return Estimate.normal(float(x.mean()), float(x.std()) / math.sqrt(x.numel()))
