"""verdict.md names the weights by the scheme, while the CSVs keep the ``weight_source`` label."""

import math

import pandas as pd

from reprflow.theory.paper_verdict import paper_markdown, weights_label


def _theorems(sources):
    """One T5 ordering row per weight source, shaped as theorems.csv."""
    return pd.DataFrame(
        [
            {
                "theorem": "T5",
                "statement": "E[St²_Trans] > E[St²_Mamba]",
                "setting": "linearised (Assumption 4)",
                "weight_source": src,
                "verdict": "holds",
                "regime": "every decided cell",
                "positive": 3,
                "negative": 0,
                "inconclusive": 0,
                "notes": "ordering",
                "n": 16,
                "sigma2": 0.5,
                "mc_mean": 2.0,
                "ci_low": 1.9,
                "ci_high": 2.1,
                "closed_form": math.nan,
                "other_mean": 1.0,
                "other_ci_low": 0.9,
                "other_ci_high": 1.1,
                "reference": math.nan,
                "stated_vs_reference": math.nan,
                "rel_err": math.nan,
                "rel_err_ci_low": math.nan,
                "rel_err_ci_high": math.nan,
            }
            for src in sources
        ]
    )


def _markdown(sources, **kw):
    crossover = pd.DataFrame(
        [
            {"weight_source": s, "n": n, "sigma2_star": 1.0 / n, "x_max": 0.07, "x_max_n": 0.03}
            for s in sources
            for n in (16, 64)
        ]
    )
    extension = crossover[["weight_source", "n", "sigma2_star"]]
    return paper_markdown(_theorems(sources), pd.DataFrame(), crossover, extension, tolerance=0.05, **kw)


def test_weights_column_names_the_scheme_not_the_label():
    sources = ["scheme", "model:gpt-neo-2.7b"]
    text = _markdown(sources, scheme="xavier")
    rows = [line for line in text.splitlines() if line.startswith("| T5")]
    assert [row.split(" | ")[2] for row in rows] == ["xavier", "model:gpt-neo-2.7b"]
    assert "| scheme |" not in text and "- scheme:" not in text and ", scheme:" not in text
    assert "- xavier: σ²*(n) = " in text and "- paper blocks, xavier: σ²*(n=64)" in text
    # without the scheme the label still says where the name is, never the bare CSV label
    bare = _markdown(sources)
    assert "| configured scheme (see Setup) |" in bare and "| scheme |" not in bare


def test_weights_label_keeps_model_sources_and_the_csv_values_unchanged():
    assert weights_label("scheme", "he") == "he" and weights_label("model:tiny", "he") == "model:tiny"
    theorems = _theorems(["scheme"])
    _ = paper_markdown(
        theorems,
        pd.DataFrame(),
        pd.DataFrame(columns=["weight_source", "n", "sigma2_star", "x_max", "x_max_n"]),
        pd.DataFrame(columns=["weight_source", "n", "sigma2_star"]),
        tolerance=0.05,
        scheme="xavier",
    )
    assert list(theorems.weight_source) == ["scheme"]  # the CSV column is rendered, not rewritten
