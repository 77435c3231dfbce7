"""Verdicts on the paper's Theorems 1-6 from the per-cell checks (pure functions of DataFrames).

Cell status:

- closed-form rows (Theorems 2 and 4): the relative error r = MC / closed form - 1 has a 95 % CI
  [lo, hi]; ``agrees`` if [lo, hi] ⊆ [-tol, tol], ``disagrees`` if [lo, hi] ∩ [-tol, tol] = ∅,
  else ``inconclusive``;
- vector means (Theorems 1 and 3, :data:`MEAN_THEOREMS`): r = ||E X - c|| / ||c||, the whole
  vector's relative error (not only its component along c), stored as the signed square root of
  the unbiased estimate of ||E X - c||² / ||c||² and of its CI bounds (a bound below 0 is the
  estimate's noise); ``agrees`` if hi <= tol, ``disagrees`` if lo > tol, else ``inconclusive``;
- ordering rows (Theorems 5-6): ``holds`` if the Transformer's CI lies above Mamba's, ``fails``
  if below, else ``inconclusive``.

Decisions use family-wise intervals: each cell's 95 % CI is widened by the Bonferroni factor
t_{15}(1 - 0.025/k) / t_{15}(0.975) for the k cells of its (theorem, setting, weight source), so
that one noisy cell among many does not decide a verdict (:func:`assign_statuses`). The CSVs
report the per-cell 95 % CIs.

Theorem verdict per (theorem, setting, weight source): ``holds`` (every decided cell positive, at
least one decided), ``fails`` (no positive cell, some negative), ``holds in a stated regime``
(both; the regime is described from the grid), ``inconclusive`` (nothing decided). For
Theorem 5 the regime is its proof's (σ² <= x_max); the statement itself has no σ² condition
(E[St²_Trans] > E[St²_Mamba] for all n under Assumptions 1-4 and contractivity). It ``fails`` if
any in-regime cell fails; if every in-regime cell holds it ``holds`` when no cell outside fails
either, else it ``holds in a stated regime`` (σ² <= x_max), since the statement is then false
outside it.
"""

from __future__ import annotations

import math

import pandas as pd
import scipy.stats

POSITIVE, NEGATIVE = {"agrees", "holds"}, {"disagrees", "fails"}
MAX_LISTED = 8
MEAN_THEOREMS = frozenset({"T1", "T3"})
"""Theorems that state a mean vector: their rows' rel_err is a relative distance (module docstring)."""


def closeness_status(lo: float, hi: float, tol: float) -> str:
    """``agrees`` / ``disagrees`` / ``inconclusive`` for a relative-error CI [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive"
    if -tol <= lo and hi <= tol:
        return "agrees"
    if hi < -tol or lo > tol:
        return "disagrees"
    return "inconclusive"


def distance_status(lo: float, hi: float, tol: float) -> str:
    """``agrees`` / ``disagrees`` / ``inconclusive`` for a CI [lo, hi] of a relative distance
    ||E X - c|| / ||c|| (lo may be below 0: the unbiased estimate's noise)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive"
    if hi <= tol:
        return "agrees"
    if lo > tol:
        return "disagrees"
    return "inconclusive"


def signed_sqrt(x: float) -> float:
    """sign(x) sqrt(|x|): a relative distance from the unbiased estimate of its square."""
    return math.copysign(math.sqrt(abs(x)), x)


def _signed_square(x: float) -> float:
    return math.copysign(x * x, x)


def order_status(t_lo: float, t_hi: float, m_lo: float, m_hi: float) -> str:
    """``holds`` (Transformer CI above Mamba's) / ``fails`` (below) / ``inconclusive``."""
    if t_lo > m_hi:
        return "holds"
    if t_hi < m_lo:
        return "fails"
    return "inconclusive"


JACKKNIFE_DOF = 15  # 16 jackknife groups (reprflow.theory.montecarlo)


def bonferroni_factor(k: int, dof: int = JACKKNIFE_DOF) -> float:
    """How much wider a family-wise 95 % interval over k cells is than a per-cell one."""
    return float(scipy.stats.t.ppf(1 - 0.025 / max(k, 1), dof) / scipy.stats.t.ppf(0.975, dof))


def _widen(center, lo, hi, factor):
    return center - (center - lo) * factor, center + (hi - center) * factor


def group_key(cells: pd.DataFrame) -> pd.Series:
    """The setting without its depth suffix (", L=4"): the unit a verdict is given for."""
    return cells.setting.str.replace(r", L=\d+$", "", regex=True)


def assign_statuses(cells: pd.DataFrame, tol: float) -> pd.DataFrame:
    """Fill ``status`` of every cell with family-wise (Bonferroni) intervals per group.

    Closed-form rows have a finite ``closed_form`` (rel_err CI → :func:`closeness_status`;
    Theorems 1 and 3 → :func:`distance_status`, widened on the scale of the squared distance, where
    the estimate's CI is a normal one); ordering rows have ``other_*`` columns (→ :func:`order_status`).
    """
    cells = cells.copy()
    keys = [cells.theorem, group_key(cells), cells.weight_source]
    sizes = cells.groupby(keys)["n"].transform("size")
    status = []
    for row, k in zip(cells.itertuples(), sizes, strict=True):
        f = bonferroni_factor(int(k))
        if row.theorem in MEAN_THEOREMS:
            squares = (_signed_square(x) for x in (row.rel_err, row.rel_err_ci_low, row.rel_err_ci_high))
            lo, hi = (signed_sqrt(x) for x in _widen(*squares, f))
            status.append(distance_status(lo, hi, tol))
        elif math.isnan(row.other_mean):
            lo, hi = _widen(row.rel_err, row.rel_err_ci_low, row.rel_err_ci_high, f)
            status.append(closeness_status(lo, hi, tol))
        else:
            t_lo, t_hi = _widen(row.mc_mean, row.ci_low, row.ci_high, f)
            m_lo, m_hi = _widen(row.other_mean, row.other_ci_low, row.other_ci_high, f)
            status.append(order_status(t_lo, t_hi, m_lo, m_hi))
    cells["status"] = status
    return cells


def _cells(df: pd.DataFrame) -> str:
    pairs = [f"(n={int(r.n)}, σ²={r.sigma2:.3g})" for r in df.itertuples()]
    more = f" … {len(pairs) - MAX_LISTED} more" if len(pairs) > MAX_LISTED else ""
    return ", ".join(pairs[:MAX_LISTED]) + more if pairs else "none"


def describe_regime(cells: pd.DataFrame) -> str:
    """Where the positive cells are: ``σ² <= s``, ``σ² >= s``, ``n >= m``, ``n <= m`` if one
    threshold separates positive from negative decided cells, else the positive cells listed."""
    decided = cells[cells.status.isin(POSITIVE | NEGATIVE)]
    ok = decided.status.isin(POSITIVE)
    for col, name in (("sigma2", "σ²"), ("n", "n")):
        for below in (True, False):
            vals = sorted(decided[col].unique(), reverse=not below)
            best = None
            for v in vals:
                inside = decided[col] <= v if below else decided[col] >= v
                if ok[inside].all():
                    best = v
                else:
                    break
            if best is not None:
                inside = decided[col] <= best if below else decided[col] >= best
                if (inside == ok).all():
                    sign = "<=" if below else ">="
                    return f"{name} {sign} {best:.4g} (in the grid)"
    return f"only in {int(ok.sum())} of {len(decided)} decided cells: {_cells(decided[ok])}"


def theorem_verdict(cells: pd.DataFrame) -> tuple[str, str]:
    """(verdict, regime) for one (theorem, setting, weight source); see the module docstring.

    ``cells`` has columns n, sigma2, status, and for Theorem 5 a boolean ``in_regime``.
    """
    if "in_regime" in cells and cells.in_regime.notna().any():
        inside = cells[cells.in_regime.astype(bool)]
        outside = cells[~cells.in_regime.astype(bool)]
        tail = f"; outside it: holds {int((outside.status == 'holds').sum())}, fails " \
               f"{int((outside.status == 'fails').sum())} of {len(outside)} cells"  # fmt: skip
        if (inside.status == "fails").any():
            return "fails", f"σ² <= x_max, fails at {_cells(inside[inside.status == 'fails'])}" + tail
        if len(inside) and (inside.status == "holds").all():
            if (outside.status == "fails").any():
                return "holds in a stated regime", "σ² <= x_max (the proof's; the statement has none)" + tail
            return "holds", "σ² <= x_max (the proof's regime) and outside it" + tail
        return "inconclusive", "σ² <= x_max" + tail
    pos, neg = cells.status.isin(POSITIVE), cells.status.isin(NEGATIVE)
    if not (pos | neg).any():
        return "inconclusive", "no cell decided at this n_mc"
    decided = f"every decided cell ({int((pos | neg).sum())} of {len(cells)})"
    if not neg.any():
        return "holds", decided
    if not pos.any():
        return "fails", decided
    return "holds in a stated regime", describe_regime(cells)


def _fmt(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


def _deciding(r) -> str:
    if not math.isnan(r.other_mean):
        return (f"n={int(r.n)}, σ²={r.sigma2:.3g}: Trans {_fmt(r.mc_mean)} "
                f"[{_fmt(r.ci_low)}, {_fmt(r.ci_high)}] vs Mamba {_fmt(r.other_mean)} "
                f"[{_fmt(r.other_ci_low)}, {_fmt(r.other_ci_high)}]")  # fmt: skip
    ref = (
        ""
        if math.isnan(r.reference)
        else (f"; exact reference {_fmt(r.reference)} (stated/reference − 1 = {r.stated_vs_reference:+.1%})")
    )
    if r.theorem in MEAN_THEOREMS:
        return (f"n={int(r.n)}, σ²={r.sigma2:.3g}: MC mean along the stated one {_fmt(r.mc_mean)} "
                f"[{_fmt(r.ci_low)}, {_fmt(r.ci_high)}] vs stated ‖c‖ {_fmt(r.closed_form)}; "
                f"‖E X − c‖/‖c‖ {r.rel_err:.1%} [{r.rel_err_ci_low:.1%}, {r.rel_err_ci_high:.1%}]{ref}")  # fmt: skip
    return (f"n={int(r.n)}, σ²={r.sigma2:.3g}: MC {_fmt(r.mc_mean)} [{_fmt(r.ci_low)}, "
            f"{_fmt(r.ci_high)}] vs stated {_fmt(r.closed_form)}; rel. err {r.rel_err:+.1%} "
            f"[{r.rel_err_ci_low:+.1%}, {r.rel_err_ci_high:+.1%}]{ref}")  # fmt: skip


def weights_label(source: str, scheme: str | None = None) -> str:
    """How verdict.md names a weight source: the CSVs' ``weight_source`` value ``"scheme"``
    (:class:`reprflow.theory.weights.WeightSource` ``label``, which the CSVs keep) becomes the
    scheme's own name, e.g. ``xavier``; ``model:<name>`` stays as it is. Without ``scheme`` the
    label says where the name is: ``configured scheme (see Setup)``."""
    if source != "scheme":
        return str(source)
    return scheme if scheme else "configured scheme (see Setup)"


def paper_markdown(
    theorems: pd.DataFrame, assumptions: pd.DataFrame, crossover: pd.DataFrame,
    extension_crossover: pd.DataFrame, *, tolerance: float, scheme: str | None = None,
) -> str:  # fmt: skip
    """The "Paper Theorems 1-6" part of verdict.md (``##`` section with ``###`` subsections).

    ``scheme``: the configured weight scheme (``theory.weight_scheme``, e.g. ``xavier``), printed
    for the CSVs' ``weight_source`` ``"scheme"`` (:func:`weights_label`)."""
    lines = [
        "## Paper Theorems 1–6 (as stated, in the paper's setting)", "",
        "Blocks of §4 / Appendix A: non-causal single-head attention with FFN biases; Mamba as "
        "the S6 recursion with input-independent Ā, B̄_t, C_t, no D skip, no output projection "
        "(docs/theory.md). Units: sums over the n tokens. A cell *agrees* when the "
        f"family-wise CI of MC / stated − 1 lies within ±{tolerance:g}, *disagrees* when it "
        "lies outside (the means of T1 and T3: the CI of the whole vector's relative error "
        f"‖E X − c‖/‖c‖, below {tolerance:g} or above it; shown as the signed square root of an "
        "unbiased estimate of its square, so a value below 0 is noise around 0); orderings *hold* when the Transformer's CI lies above Mamba's. The "
        "deciding cell is the worst negative cell, else the worst positive one (for "
        "orderings: the smallest margin).", "",
        "| theorem | setting | weights | verdict | regime | cells +/−/? | deciding cell |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in theorems.itertuples():
        lines.append(
            f"| {r.theorem}: {r.statement} | {r.setting} | {weights_label(r.weight_source, scheme)} | **{r.verdict}** | "
            f"{r.regime} | {r.positive}/{r.negative}/{r.inconclusive} | {_deciding(r)} |"
        )
    lines += ["", "Why, per theorem:", ""]
    for thm, g in theorems.groupby("theorem", sort=False):
        lines.append(f"- **{thm}**: {g.notes.iloc[0]}")
    lines += ["", "### Assumptions, measured", ""]
    if not assumptions.empty:
        const = assumptions[assumptions.assumption.str.startswith("Theorem 5")]
        for (src, n), g in const.groupby(["weight_source", "n"]):
            vals = ", ".join(f"{q}={v:.4g}" for q, v in zip(g.quantity, g.value, strict=True))
            lines.append(f"- Theorem 5's constants, {weights_label(src, scheme)}, n={int(n)}: {vals}.")
        delta = assumptions[assumptions.quantity == "delta"]
        for src, g in delta.groupby("weight_source"):
            lines.append(
                f"- Assumption 8, {weights_label(src, scheme)}: δ from {g.value.min():.4g} to {g.value.max():.4g} over "
                f"{len(g)} (n, σ², L) cells; δ > 0 in {int(g.satisfied.sum())}/{len(g)}."
            )
        lemma = assumptions[assumptions.assumption.str.startswith("Lemma 1")]
        if not lemma.empty:
            lines.append(
                f"- Lemma 1 (Poincaré) holds in every draw: {bool(lemma.satisfied.all())} "
                f"(largest St_L² / bound = {lemma.value.max():.3g})."
            )
    lines += ["", "### Theorem 5 and n", ""]
    lines.append(
        "The proof restricts σ² <= x_max (its Q(1) > 0) and then claims Q(n) > Q(1) for n > 1. "
        "In step (5) the Transformer's trace is the sum over the n tokens (n σ² β_T/4 + σ² γ_T), "
        "but the Mamba bound σ⁴β_M/4 + σ⁴α_M/(16n²) is one token's (Theorem 4 has no Σ_t). "
        "Summing both over the n tokens, the per-token condition is "
        "(β_M/4 + α_M/(16n)) x² <= (β_T/4 + γ_T/n) x + α_T, whose root x_max(n) falls with n; "
        "so the n = 1 regime does not carry over to every n. In the paper's own blocks the exact "
        "crossover σ²*(n) (closed forms of the linearised blocks, uniform attention) also falls:"
    )
    for src, g in crossover.groupby("weight_source"):
        lines.append(
            f"- {weights_label(src, scheme)}: σ²*(n) = " + ", ".join(f"{r.sigma2_star:.4g} (n={int(r.n)})" for r in g.itertuples())
            + "; the proof's x_max = " + ", ".join(f"{r.x_max:.3g}" for r in g.itertuples())
            + "; consistent x_max(n) = " + ", ".join(f"{r.x_max_n:.3g}" for r in g.itertuples()) + "."
        )  # fmt: skip
    for src, g in extension_crossover.groupby("weight_source"):
        lines.append(
            f"- project extension blocks, {weights_label(src, scheme)}: σ²*(n) = "
            + ", ".join(f"{r.sigma2_star:.4g} (n={int(r.n)})" for r in g.itertuples()) + "."
        )  # fmt: skip
    lines.append("")
    for name, table in (("paper blocks", crossover), ("extension blocks", extension_crossover)):
        for src, g in table.groupby("weight_source"):
            g = g.sort_values("n")
            if len(g) < 2:
                continue
            first, last = g.sigma2_star.iloc[0], g.sigma2_star.iloc[-1]
            monotone = bool((g.sigma2_star.diff().dropna() < 0).all())
            lines.append(
                f"- {name}, {weights_label(src, scheme)}: σ²*(n={int(g.n.iloc[-1])}) / σ²*(n={int(g.n.iloc[0])}) = "
                f"{last / first:.3g}; strictly decreasing over the grid: {monotone}."
            )
    lines.append("")
    return "\n".join(lines)
