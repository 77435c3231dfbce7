"""Monte Carlo moments, depth statistics and weight sources of the theory check."""

import math

import numpy as np
import pytest
import torch

from reprflow.errors import ConfigError
from reprflow.theory.depth import stack_statistics
from reprflow.theory.montecarlo import gaussian_tokens, monte_carlo_moments
from reprflow.theory.weights import WeightSource, sample_mamba_weights, sample_transformer_weights


def test_moments_of_a_shifted_gaussian():
    """F = 2h + μ: energy = ||μ||² + 4σ²d, mean = ||μ||², Tr Σ = 4σ²d (per token)."""
    mu = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    mc = monte_carlo_moments(
        {"f": lambda h: 2 * h + mu}, n_tokens=5, hidden=3, sigma2=0.5, n_mc=4000, seed=0, chunk=999
    )["f"]
    mu2 = float(mu @ mu)
    assert mc.energy.contains(mu2 + 6.0) and mc.trace_cov.contains(6.0)
    assert mc.mean_norm2.contains(mu2) and mc.mean_norm2.ci_low > 0.5 * mu2
    assert mc.energy.value == pytest.approx(mc.mean_norm2.value + mc.trace_cov.value, rel=1e-12)


def test_moments_are_deterministic_and_independent_of_chunking():
    f = {"sq": lambda h: h**2}
    a = monte_carlo_moments(f, n_tokens=4, hidden=2, sigma2=1.0, n_mc=64, seed=7, chunk=64)["sq"]
    b = monte_carlo_moments(f, n_tokens=4, hidden=2, sigma2=1.0, n_mc=64, seed=7, chunk=5)["sq"]
    c = monte_carlo_moments(f, n_tokens=4, hidden=2, sigma2=1.0, n_mc=64, seed=8, chunk=64)["sq"]
    assert a.energy.value == pytest.approx(b.energy.value, rel=1e-14)
    assert a.mean_norm2.value == pytest.approx(b.mean_norm2.value, rel=1e-12)
    assert a.trace_cov.ci_high == pytest.approx(b.trace_cov.ci_high, rel=1e-12)
    assert a.energy.value != c.energy.value


def test_gaussian_tokens_have_the_requested_variance():
    h = gaussian_tokens(2000, 3, 4, sigma2=2.5, generator=torch.Generator().manual_seed(0))
    assert h.shape == (2000, 3, 4) and h.dtype == torch.float64
    assert float(h.var()) == pytest.approx(2.5, rel=0.05)


def test_monte_carlo_rejects_too_few_draws():
    with pytest.raises(ConfigError, match="n_mc"):
        monte_carlo_moments({"f": lambda h: h}, n_tokens=2, hidden=2, sigma2=1.0, n_mc=2, seed=0, chunk=2)


def test_stack_statistics_match_direct_population_std():
    """St_L² = (mean over tokens and dims of the population std over h⁰..h^L)²; P_L = Σ ||F_l||²/n."""
    gen = torch.Generator().manual_seed(0)
    mats = [torch.randn(3, 3, generator=gen, dtype=torch.float64) * 0.5 for _ in range(3)]
    updates = [lambda x, m=m: torch.tanh(x @ m.T) for m in mats]
    h = torch.randn(5, 4, 3, generator=gen, dtype=torch.float64)
    for layernorm in (False, True):
        stats = stack_statistics(h, updates, depths=[1, 3], layernorm=layernorm)
        states, energy, x = [h.numpy()], np.zeros(5), h
        for f in updates:
            inp = torch.nn.functional.layer_norm(x, (3,), eps=1e-5) if layernorm else x
            upd = f(inp)
            energy += (upd.numpy() ** 2).sum((1, 2)) / 4
            x = x + upd
            states.append(x.numpy())
            if len(states) - 1 in (1, 3):
                st = np.std(np.stack(states), axis=0, ddof=0).mean((1, 2))
                np.testing.assert_allclose(stats[len(states) - 1][1].numpy(), st**2, rtol=1e-12)
                np.testing.assert_allclose(stats[len(states) - 1][0].numpy(), energy, rtol=1e-12)
                var = np.var(np.stack(states), axis=0, ddof=0).mean((1, 2))  # Theorem 6's St_L²
                np.testing.assert_allclose(stats[len(states) - 1][2].numpy(), var, rtol=1e-12)
    # for L = 1 the std over two states is |F|/2
    one = stack_statistics(h, updates, depths=[1], layernorm=False)[1][1]
    np.testing.assert_allclose(one.numpy(), ((updates[0](h).abs() / 2).mean((1, 2)) ** 2).numpy(), rtol=1e-12)


def test_weight_sources_follow_torch_fans_and_reject_bad_params():
    w = sample_transformer_weights(64, source=WeightSource("xavier", {}), seed=0)
    assert float(w.w_1.std()) == pytest.approx(math.sqrt(2 / (64 + 256)), rel=0.03)
    he = sample_transformer_weights(64, source=WeightSource("he", {"nonlinearity": "relu"}), seed=0)
    assert float(he.w_2.std()) == pytest.approx(math.sqrt(2 / 256), rel=0.03)
    # same seed, other scale: the same standard-normal matrices, rescaled
    g = sample_transformer_weights(64, source=WeightSource("gaussian", {"std": 0.02}), seed=0)
    torch.testing.assert_close(g.w_q / 0.02, w.w_q / math.sqrt(2 / 128))
    with pytest.raises(ConfigError, match="unexpected keys"):
        WeightSource("xavier", {"std": 1.0})
    with pytest.raises(ConfigError, match="unknown"):
        WeightSource("orthogonal", {})
    with pytest.raises(ConfigError, match="no std for matrix 'conv'"):
        sample_mamba_weights(
            8, d_state=2, d_conv=4, expand=2, seed=0,
            source=WeightSource("model", {"in_proj": 0.02}, "model:x"),
        )  # fmt: skip


def test_depth_reports_overflowing_stacks_as_inf():
    from reprflow.theory.depth import monte_carlo_depth

    res = monte_carlo_depth(
        [lambda x: x**4, lambda x: x**4, lambda x: x**4], depths=[1, 3], layernorm=False,
        n_tokens=2, hidden=2, sigma2=1e8, n_mc=4, seed=0, chunk=4,
    )  # fmt: skip
    assert math.isfinite(res[1].path_energy.value)
    assert res[3].path_energy.value == math.inf and res[3].st2.ci_low == math.inf


def test_both_estimators_draw_the_same_inputs_and_refuse_an_empty_chunk():
    """monte_carlo_moments and monte_carlo_depth read one input stream (gaussian_chunks): with
    F = h, the depth-1 path energy is the per-token energy E||h||² = σ² d, on the same draws."""
    from reprflow.theory.depth import monte_carlo_depth

    draws = dict(n_tokens=3, hidden=2, sigma2=0.5, n_mc=40, seed=9, chunk=7)
    moments = monte_carlo_moments({"id": lambda h: h}, **draws)["id"]
    depth = monte_carlo_depth([lambda h: h], depths=[1], layernorm=False, **draws)[1]
    assert depth.path_energy.value == pytest.approx(moments.energy.value, rel=1e-12)
    for estimate in (
        lambda **kw: monte_carlo_moments({"id": lambda h: h}, **kw),
        lambda **kw: monte_carlo_depth([lambda h: h], depths=[1], layernorm=False, **kw),
    ):
        with pytest.raises(ConfigError, match="chunk"):
            estimate(**{**draws, "chunk": 0})
