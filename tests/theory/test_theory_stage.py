"""run_theory end to end on a tiny grid: outputs, columns, determinism, verdict logic."""

import pandas as pd
import pytest

from reprflow.errors import ConfigError
from reprflow.pipeline.theory_stage import run_theory
from reprflow.theory.experiment import DEPTH_COLUMNS, STABILITY_COLUMNS
from reprflow.theory.paper_check import ASSUMPTION_COLUMNS, CELL_COLUMNS, THEOREM_COLUMNS
from reprflow.theory.verdict import theorem5_ordering

TINY = dict(
    n_grid=[4, 8], sigma2_grid=[0.5, 2.0], d_model=4, d_state=2, expand=2, n_mc=8,
    depths=[1, 2], weight_scheme="xavier", weight_params={}, seed=3, threads=1,
    model_scales=[{"name": "tiny", "std": 0.02}],
)  # fmt: skip


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    first = run_theory(tmp_path_factory.mktemp("a"), **TINY)
    second = run_theory(tmp_path_factory.mktemp("b"), **TINY)
    return first, second


def test_stage_writes_all_outputs_with_contract_columns(outputs):
    paths, _ = outputs
    assert all(p.exists() and p.stat().st_size > 0 for p in paths.values())
    stab, depth = pd.read_csv(paths["stability"]), pd.read_csv(paths["depth"])
    assert list(stab.columns) == STABILITY_COLUMNS and list(depth.columns) == DEPTH_COLUMNS
    # 2 sources x 2 blocks x 3 estimators x 3 quantities x 2 n x 2 σ²
    assert len(stab) == 2 * 2 * 3 * 3 * 2 * 2
    assert set(stab.estimator) == {"exact", "linearized", "closed_form"}
    assert set(stab.weight_source) == {"scheme", "model:tiny"}
    assert len(depth) == 2 * 2 * 2 * 2 * 2 * 2  # sources, blocks, LN, depths, n, σ²
    assert (stab.ci_low <= stab["mean"]).all() and (stab["mean"] <= stab.ci_high).all()
    assert paths["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = paths["verdict"].read_text()
    paper, ext = text.index("## Paper Theorems 1–6"), text.index("## Project extensions")
    assert paper < ext and "Theorem 5 and n" in text[paper:ext] and "closed form" in text[ext:]


def test_stage_writes_a_verdict_per_paper_theorem(outputs):
    paths, _ = outputs
    thm = pd.read_csv(paths["theorems"])
    cells = pd.read_csv(paths["theorem_cells"])
    assumptions = pd.read_csv(paths["assumptions"])
    assert list(thm.columns) == THEOREM_COLUMNS and list(cells.columns) == CELL_COLUMNS
    assert list(assumptions.columns) == ASSUMPTION_COLUMNS
    assert set(thm.theorem) == {"T1", "T2", "T3", "T4", "T5", "T6-path", "T6-St"}
    assert set(thm.weight_source) == {"scheme", "model:tiny"}
    assert thm.verdict.str.match(r"holds|fails|inconclusive").all()
    assert {"rho", "x_max", "x_max_n", "delta", "max ratio mamba"} <= set(assumptions.quantity)
    assert assumptions[assumptions.assumption.str.startswith("Lemma 1")].satisfied.all()
    # Theorem 5 is also evaluated at σ² = x_max (its regime), per n
    t5 = cells[cells.theorem == "T5"]
    assert t5.in_regime.any() and len(t5.sigma2.unique()) > len(TINY["sigma2_grid"])
    crossover = pd.read_csv(paths["paper_crossover"])
    assert (crossover.sigma2_star > 0).all() and len(crossover) == 2 * 2


def test_stage_is_deterministic_from_the_seed(outputs):
    first, second = outputs
    for key in ("stability", "depth", "approximations", "theorem_cells", "theorems"):
        assert first[key].read_bytes() == second[key].read_bytes()


def test_theorem5_ordering_classifies_by_confidence_intervals():
    rows = []
    for n, (t, m) in {4: ((2.0, 1.9, 2.1), (1.0, 0.9, 1.1)), 8: ((1.0, 0.9, 1.1), (2.0, 1.9, 2.1)),
                      16: ((1.0, 0.8, 1.2), (1.1, 0.9, 1.3))}.items():  # fmt: skip
        for block, (mean, lo, hi) in (("transformer", t), ("mamba", m)):
            rows.append({"block": block, "estimator": "exact", "quantity": "energy", "n": n,
                         "sigma2": 1.0, "mean": mean, "ci_low": lo, "ci_high": hi, "seed": 0,
                         "n_mc": 8, "weight_source": "scheme"})  # fmt: skip
    status = theorem5_ordering(pd.DataFrame(rows)).set_index("n").status
    assert status.to_dict() == {4: "holds", 8: "fails", 16: "inconclusive"}


def test_stage_rejects_bad_grids(tmp_path):
    with pytest.raises(ConfigError, match="n_mc"):
        run_theory(tmp_path, **{**TINY, "n_mc": 2})
    with pytest.raises(ConfigError, match="weight_scheme"):
        run_theory(tmp_path, **{**TINY, "weight_scheme": "orthogonal"})
    with pytest.raises(ConfigError, match=r"theory.precision='bfloat16'"):
        run_theory(tmp_path, **{**TINY, "precision": "bfloat16"})


def test_precision_not_the_device_sets_the_arithmetic(outputs, tmp_path):
    """float64 by default on every device; float32 when asked, on the CPU too (the stored numbers
    depend on the science key, never on where the job ran)."""
    paths, _ = outputs
    assert "device cpu (float64)" in paths["verdict"].read_text()
    single = run_theory(tmp_path, **{**TINY, "precision": "float32", "depths": []})
    assert "device cpu (float32)" in single["verdict"].read_text()
    keys = ["block", "estimator", "quantity", "n", "sigma2", "weight_source"]
    ref = pd.read_csv(paths["stability"]).set_index(keys)["mean"]
    got = pd.read_csv(single["stability"]).set_index(keys)["mean"]
    assert got.index.equals(ref.index) and ((got - ref).abs() <= 1e-4 * ref.abs() + 1e-9).all()
