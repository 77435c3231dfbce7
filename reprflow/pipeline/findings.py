"""A verdict on each empirical finding of the paper (§3, F3.2.1-F3.4.3), from the metric files.

Each finding is turned into explicit *checks* on the metric files (docs/findings.md states the
paper's text, the operationalisation, each threshold and why). A check is one comparison of a
measured number with a threshold from the config's ``findings:`` section. The verdict of a
finding for one arm (init) and one view is

- ``supports``: every check passes;
- ``contradicts``: every check fails;
- ``mixed``: some pass, some fail (the evidence column says which);
- ``not run``: the cells the finding needs were not run (the ``not_run`` column names them).

Token-level findings (F3.2.x, F3.3.1) read each model at its figure length (``figures.length``,
the paper's n = 2K; a model whose context is shorter is read at its longest fitting length), with
curves averaged over tasks. Table findings (F3.3.2, F3.4.x) read Table 1 (mean over tasks) or
Table 2 (per task). Architecture type comes from the model family (:data:`ARCHITECTURE`).

Output: ``results/findings.csv``, one row per (finding, arm, view), columns :data:`COLUMNS`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from reprflow.atomic import atomic_write
from reprflow.config import Config
from reprflow.pipeline.results import (
    figure_length,
    first_state_names,
    init_scope,
    probe_cells,
    probe_curves,
    token_array,
    token_cells,
    token_curves,
)
from reprflow.pipeline.tables import build_tables
from reprflow.workflow.targets import TOKEN_METRICS, Cell

logger = logging.getLogger(__name__)

ARCHITECTURE = {
    **dict.fromkeys(
        (
            *("gpt_neo", "gpt_neox", "gpt2", "gptj", "gpt_bigcode", "opt", "falcon", "llama", "mistral", "mixtral"),
            *("qwen2", "qwen3", "gemma", "gemma2", "phi", "phi3", "olmo", "olmo2", "stablelm", "starcoder2"),
        ),
        "TBM",
    ),
    **dict.fromkeys(("mamba", "mamba2", "falcon_mamba"), "SSM"),
}
"""Model family (``config.model_type``) -> architecture type: decoders of attention blocks only
(TBM) and Mamba-style SSMs. Any other family (hybrids such as bamba or jamba, or a type not
listed) belongs to neither: it is left out of the comparisons, and every verdict that compares
architectures names it in ``not_run`` (:func:`unclassified_models`)."""

FINDINGS = {
    "F3.2.1": "TBMs exhibit stable token evolution until a sharp final-layer shift, contrasting with SSMs' "
    "varied directions that are converged in later layers.",
    "F3.2.2": "TBMs collapse token distinctions early and recover diversity late, while SSMs maintain the "
    "uniqueness longer.",
    "F3.2.3": "Oversmoothing in TBMs is an intrinsic architectural, while in SSMs it is primarily a consequence "
    "of training or optimization process.",
    "F3.3.1": "TBMs maintain coherent feature manifolds early while SSMs gradually refine global structure "
    "towards late-layer stabilization.",
    "F3.3.2": "Smoothness and stability of representation evolution depend on model-specific factors like scale "
    "and parameterization rather than architecture type.",
    "F3.4.1": "Task-relevant representations peak in intermediate layers for both architectures, with SSMs "
    "having a smaller gap to the last layer than TBMs.",
    "F3.4.2": "Despite stable representation evolution across varied context lengths, probing accuracy decreases "
    "as context length increases.",
    "F3.4.3": "While larger model size generally improves task performance, final-layer representations tend to "
    "become more abstract.",
}
COLUMNS = ["finding", "arm", "view", "verdict", "passed", "total", "evidence", "not_run"]
VERDICTS = ("supports", "contradicts", "mixed", "not run")


def verdict_word(passed: int, total: int) -> str:
    """The verdict of ``passed`` checks out of ``total``: supports (all), contradicts (none),
    mixed, or not run (no check). Shared by the findings and the paper-table comparison."""
    if total == 0:
        return "not run"
    return "supports" if passed == total else "contradicts" if passed == 0 else "mixed"


@dataclass(frozen=True)
class Check:
    """One comparison: ``text`` names the subject, the measured number and the threshold;
    ``model``: the one model it is about (None for a contrast between models)."""

    passed: bool
    text: str
    model: str | None = None


@dataclass
class Verdict:
    """The checks of one finding for one arm and view, and what was not run."""

    finding: str
    arm: str
    view: str
    checks: list[Check] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return verdict_word(sum(c.passed for c in self.checks), len(self.checks))

    def row(self) -> dict:
        return {
            "finding": self.finding,
            "arm": self.arm,
            "view": self.view,
            "verdict": self.verdict,
            "passed": sum(c.passed for c in self.checks),
            "total": len(self.checks),
            "evidence": "; ".join(("PASS " if c.passed else "FAIL ") + c.text for c in self.checks),
            "not_run": "; ".join(self.not_run),
        }


def _check(passed: bool, text: str, model: str | None = None) -> Check:
    return Check(bool(passed), text, model)


def _f(x: float) -> str:
    """Three significant figures, no float noise."""
    return f"{x:.3g}"


# ---------------------------------------------------------------- evidence read from the metric files


@dataclass
class Evidence:
    """Everything the verdicts read, averaged over tasks where the paper does.

    ``curves[name][(model, init, view)]``: per-state (inter_token_cosine, K values) or per-pair
    (layerwise_cosine, K-1 values) curve at the model's figure length, mean over tasks;
    ``cka[(model, init, view)]``: (K, K) matrix, mean over tasks; ``table1``/``table2`` as in
    :mod:`reprflow.pipeline.tables` (rows of cells not run are empty); ``missing_token`` and
    ``missing_probe``: cells whose files are absent. ``first_layer[(model, init, view)]``: index
    of the view's first state after the embeddings (1 when state 0 is ``embed``; 0 for a view
    without the embeddings, e.g. the hf view of Mamba and Mamba2, which starts at ``block_1``).
    ``probe_states[(model, init, view, length)]``: (number of states, first non-embedding state)
    of that cell's probe curves, where Table 1's peak layer is counted.
    """

    config: Config
    curves: dict[str, dict[tuple[str, str, str], np.ndarray]]
    cka: dict[tuple[str, str, str], np.ndarray]
    table1: pd.DataFrame
    table2: pd.DataFrame
    missing_token: list[Cell]
    missing_probe: list[Cell]
    first_layer: dict[tuple[str, str, str], int] = field(default_factory=dict)
    probe_states: dict[tuple[str, str, str, int], tuple[int, int]] = field(default_factory=dict)

    def layers(self, key: tuple[str, str, str]) -> int:
        """Index of the first non-embedding state of the (model, init, view) curves and CKA."""
        return self.first_layer.get(key, 1)


def _exists(cell: Cell, pattern: str, root: Path) -> bool:
    return (root / cell.fmt(pattern)).exists()


def load_evidence(config: Config, root: str | Path = ".") -> Evidence:
    """Read the metric files of every cell that was run (missing cells are recorded, not fatal).

    The findings are about the paper's tasks: custom tasks (``config.custom_tasks``) are left out."""
    from reprflow.workflow.targets import PROBES

    config = config.paper_only()
    root = Path(root)
    missing_token = [c for c in token_cells(config) if not _exists(c, TOKEN_METRICS, root)]
    missing_probe = [c for c in probe_cells(config) if not _exists(c, PROBES, root)]
    views = config.section("metrics")["views"]
    curves: dict[str, dict] = {}
    first_layer: dict[tuple[str, str, str], int] = {}
    for name, x in (("inter_token_cosine", "state_index"), ("layerwise_cosine", "pair_index")):
        frame = token_curves(config, name, root, missing_ok=True)
        curves[name] = {}
        for model in config.models:
            length = figure_length(config, model)
            for init in config.inits:
                for view in views:
                    sel = frame[
                        (frame.model == model.name)
                        & (frame.init == init.name)
                        & (frame.view == view)
                        & (frame.length == length)
                    ]
                    if sel.empty or sel["task"].nunique() < len(config.tasks):
                        continue
                    key = (model.name, init.name, view)
                    curves[name][key] = sel.groupby(x)["mean"].mean().sort_index().to_numpy()
                    if name == "inter_token_cosine":
                        first_layer[key] = _first_layer(sel)
    cka = {}
    for model in config.models:
        length = figure_length(config, model)
        for init in config.inits:
            cell_list = [Cell(model.name, init.name, t, length) for t in config.tasks]
            if length is None or any(c in missing_token for c in cell_list):
                continue
            for view in views:  # a token-only arm may have no CKA files: then F3.3.1 has no such model
                if all(_exists(c, f"{TOKEN_METRICS}/cka_{view}.npy", root) for c in cell_list):
                    cka[(model.name, init.name, view)] = np.mean(
                        [token_array(c, f"cka_{view}", root) for c in cell_list], axis=0
                    )
    table1, table2 = build_tables(config, root, missing_ok=True)
    probe_states = {
        key: (int(sel["state_index"].max()) + 1, _first_layer(sel))
        for key, sel in probe_curves(config, root, missing_ok=True).groupby(["model", "init", "view", "length"])
    }
    return Evidence(config, curves, cka, table1, table2, missing_token, missing_probe, first_layer, probe_states)


def _first_layer(sel: pd.DataFrame) -> int:
    """1 if state 0 of the view is the embeddings (``state_name`` ``embed``), else 0.

    ``sel``: rows of one (model, init, view) of ``inter_token_cosine.csv`` (or of the probe curves). The hf view of the
    Mamba families is ``block_1 .. block_L, final_norm`` (docs/CONTRACTS.md): no embeddings to
    leave out. Files that name no states are read as starting at the embeddings."""
    names = first_state_names(sel)
    return int(not names or "embed" in names)


# ---------------------------------------------------------------- helpers shared by the findings


def _arch(config: Config, model: str) -> str | None:
    return ARCHITECTURE.get(config.model(model).family)


def unclassified_models(config: Config) -> list[str]:
    """A ``not_run`` line for each configured model whose family is neither TBM nor SSM."""
    return [
        f"{m.name} (family {m.family}) is neither a TBM nor an SSM in ARCHITECTURE "
        "(reprflow/pipeline/findings.py): left out"
        for m in config.models
        if m.family not in ARCHITECTURE
    ]


def _contrast(above: list[float], below: list[float], text: str) -> Check:
    """A contrast check: every value of ``above`` exceeds every value of ``below``. ``text`` is
    formatted with ``lo`` (the lowest of ``above``) and ``hi`` (the highest of ``below``); a NaN on
    either side makes both NaN (whatever the model order) and fails the check."""
    lo, hi = float(np.min(above)), float(np.max(below))  # numpy propagates NaN; Python's min does not
    return _check(lo > hi, text.format(lo=_f(lo), hi=_f(hi)))


def _depth_regions(n: int, late_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Index sets of a curve of ``n`` points: early = relative depth <= 1/2, late = >= 1 - late_fraction.

    Relative depth of point i is i / (n - 1). Both sets are non-empty for n >= 2."""
    depth = np.arange(n) / max(n - 1, 1)
    early = np.flatnonzero(depth <= 0.5)
    late = np.flatnonzero(depth >= 1.0 - late_fraction)
    return early, late


def _token_not_run(ev: Evidence, models: list[str], init: str) -> list[str]:
    """The missing token cells (at the figure length) of ``models`` for one init."""
    out = []
    for name in models:
        length = figure_length(ev.config, ev.config.model(name))
        if length is None:
            out.append(f"{name}: fits no configured length")
            continue
        out += [
            f"{c.model}/{c.init}/{c.task}_n{c.length}"
            for c in ev.missing_token
            if c.model == name and c.init == init and c.length == length
        ]
    return out


def _need_both(ev: Evidence, have: dict[str, str], verdict: Verdict) -> bool:
    """Record what is missing when the ran models lack a TBM or an SSM; True if both are present."""
    kinds = set(have.values())
    for kind in ("TBM", "SSM"):
        if kind not in kinds:
            configured = [m.name for m in ev.config.models if ARCHITECTURE.get(m.family) == kind]
            verdict.not_run.append(
                f"no {kind} was run"
                + (f" (configured: {', '.join(configured)})" if configured else " (none configured)")
            )
    return kinds >= {"TBM", "SSM"}


def _curve_models(ev: Evidence, name: str, init: str, view: str, verdict: Verdict) -> dict[str, str]:
    """Models with a curve for (init, view): name -> architecture; missing cells go to not_run."""
    models = [m.name for m in ev.config.models if _arch(ev.config, m.name)]
    verdict.not_run += _token_not_run(ev, models, init)
    return {m: _arch(ev.config, m) for m in models if (m, init, view) in ev.curves[name]}


# ---------------------------------------------------------------- the findings


def _tbm_body_and_drop(
    v: Verdict, model: str, body: float, last: float, t: dict, body_what: str, drop_what: str, drop_key: str
) -> None:
    """A TBM curve's two checks: its body (``body``) at least ``t["tbm_body_min"]``, and the fall
    from the body to the last state (``body - last``) at least ``t[drop_key]``."""
    v.checks.append(
        _check(body >= t["tbm_body_min"], f"{model} (TBM) {body_what} {_f(body)} >= {t['tbm_body_min']}", model)
    )
    drop = body - last
    v.checks.append(
        _check(
            drop >= t[drop_key],
            f"{model} (TBM) {drop_what} {_f(body)} -> {_f(last)} = {_f(drop)} >= {t[drop_key]}",
            model,
        )
    )


def f3_2_1(ev: Evidence, arm: str, view: str, t: dict) -> Verdict:
    """Layerwise cosine (Fig. 1): TBM stable body + sharp final drop; SSM low early, rising late."""
    v = Verdict("F3.2.1", arm, view)
    have = _curve_models(ev, "layerwise_cosine", arm, view, v)
    if not _need_both(ev, have, v):
        return v
    tbm_body, ssm_early = [], []
    for model, kind in have.items():
        curve = ev.curves["layerwise_cosine"][(model, arm, view)]
        if kind == "TBM":
            body = float(curve[:-1].mean()) if len(curve) > 1 else float(curve[0])
            tbm_body.append(body)
            _tbm_body_and_drop(
                v,
                model,
                body,
                float(curve[-1]),
                t,
                "mean layerwise cosine before the last layer",
                "final-layer drop",
                "tbm_final_drop_min",
            )
            if len(curve) > 1:  # sharp: the last step leaves the body by more than the body varies
                spread, drop = float(np.ptp(curve[:-1])), body - float(curve[-1])
                v.checks.append(
                    _check(
                        drop > spread,
                        f"{model} (TBM) sharp final shift: drop {_f(drop)} > spread of the earlier pairs "
                        f"{_f(float(curve[:-1].min()))}..{_f(float(curve[:-1].max()))} = {_f(spread)}",
                        model,
                    )
                )
        else:
            early, late = _depth_regions(len(curve), t["late_fraction"])
            e, l = float(curve[early].mean()), float(curve[late].mean())
            ssm_early.append(e)
            v.checks.append(
                _check(
                    e <= t["ssm_early_max"],
                    f"{model} (SSM) early-half layerwise cosine {_f(e)} <= {t['ssm_early_max']}",
                    model,
                )
            )
            v.checks.append(
                _check(
                    l - e >= t["ssm_rise_min"],
                    f"{model} (SSM) late - early = {_f(l)} - {_f(e)} = {_f(l - e)} >= {t['ssm_rise_min']}",
                    model,
                )
            )
    v.checks.append(_contrast(tbm_body, ssm_early, "contrast: lowest TBM body {lo} > highest SSM early {hi}"))
    return v


def f3_2_2(ev: Evidence, arm: str, view: str, t: dict) -> Verdict:
    """Inter-token cosine (Fig. 2): TBM high body, late drop; SSM low body; TBM body above SSM body."""
    v = Verdict("F3.2.2", arm, view)
    have = _curve_models(ev, "inter_token_cosine", arm, view, v)
    if not _need_both(ev, have, v):
        return v
    bodies = {"TBM": [], "SSM": []}
    for model, kind in have.items():
        curve = ev.curves["inter_token_cosine"][(model, arm, view)]
        start = ev.layers((model, arm, view))
        inner = curve[start:-1] if len(curve) > start + 1 else curve[:-1]  # after the embeddings, before the last
        body = float(inner.mean())
        bodies[kind].append(body)
        if kind == "TBM":
            early, _ = _depth_regions(len(curve), t["late_fraction"])
            early = early[(early >= start) & (early < len(curve) - 1)]
            e = float(curve[early].mean()) if len(early) else body
            v.checks.append(  # "collapse token distinctions early": high already in the early half
                _check(
                    e >= t["tbm_body_min"],
                    f"{model} (TBM) inter-token cosine of the early half {_f(e)} >= {t['tbm_body_min']}",
                    model,
                )
            )
            _tbm_body_and_drop(
                v,
                model,
                body,
                float(curve[-1]),
                t,
                "inter-token cosine of the inner layers",
                "late recovery",
                "tbm_recover_min",
            )
        else:
            v.checks.append(
                _check(
                    body <= t["ssm_body_max"],
                    f"{model} (SSM) inter-token cosine of the inner layers {_f(body)} <= {t['ssm_body_max']}",
                    model,
                )
            )
    v.checks.append(_contrast(bodies["TBM"], bodies["SSM"], "contrast: lowest TBM inner {lo} > highest SSM inner {hi}"))
    return v


def f3_2_3(ev: Evidence, arm: str, view: str, t: dict) -> Verdict:
    """Pretrained vs this random arm (Fig. 3): TBM high when random; SSM low when random, raised by training."""
    v = Verdict("F3.2.3", arm, view)
    pretrained = [i.name for i in ev.config.inits if i.scheme == "pretrained"]
    if not pretrained:
        v.not_run.append("no init with scheme pretrained in config.inits")
        return v
    ref = pretrained[0]
    have = _curve_models(ev, "inter_token_cosine", arm, view, v)
    with_ref = _curve_models(ev, "inter_token_cosine", ref, view, v)
    if not _need_both(ev, have, v):
        return v
    random_means = {"TBM": [], "SSM": []}
    for model, kind in have.items():
        curve = ev.curves["inter_token_cosine"][(model, arm, view)][ev.layers((model, arm, view)) :]
        mean = float(curve.mean())  # every layer after the embeddings
        random_means[kind].append(mean)
        if kind == "TBM":
            v.checks.append(
                _check(
                    mean >= t["tbm_random_min"],
                    f"{model} (TBM) {arm} inter-token cosine (mean over layers, "
                    f"range {_f(curve.min())}..{_f(curve.max())}) {_f(mean)} >= {t['tbm_random_min']}",
                    model,
                )
            )
        else:
            v.checks.append(
                _check(
                    mean <= t["ssm_random_max"],
                    f"{model} (SSM) {arm} inter-token cosine (mean over layers) {_f(mean)} <= {t['ssm_random_max']}",
                    model,
                )
            )
            if model in with_ref:
                trained = float(
                    ev.curves["inter_token_cosine"][(model, ref, view)][ev.layers((model, ref, view)) :].mean()
                )
                v.checks.append(
                    _check(
                        trained - mean >= t["ssm_training_gain_min"],
                        f"{model} (SSM) {ref} - {arm} = {_f(trained)} - {_f(mean)} = {_f(trained - mean)} "
                        f">= {t['ssm_training_gain_min']}",
                        model,
                    )
                )
    v.checks.append(
        _contrast(
            random_means["TBM"], random_means["SSM"], f"ordering under {arm}: lowest TBM {{lo}} > highest SSM {{hi}}"
        )
    )
    return v


def _block_mean(m: np.ndarray, idx: np.ndarray) -> float:
    """Mean off-diagonal CKA within the states ``idx`` (two or more: a single state has only its
    diagonal, CKA 1 by definition, which measures nothing)."""
    sub = m[np.ix_(idx, idx)]
    return float(sub[~np.eye(len(idx), dtype=bool)].mean())


def f3_3_1(ev: Evidence, arm: str, view: str, t: dict) -> Verdict:
    """CKA (Fig. 4): TBM early block coherent; SSM late block above early block; TBM more front-loaded."""
    v = Verdict("F3.3.1", arm, view)
    models = [m.name for m in ev.config.models if _arch(ev.config, m.name)]
    v.not_run += _token_not_run(ev, models, arm)
    have = {m: _arch(ev.config, m) for m in models if (m, arm, view) in ev.cka}
    v.not_run += [
        f"{m}/{arm}: no cka_{view}.npy"
        for m in models
        if m not in have and not any(s.startswith(f"{m}/{arm}/") or s.startswith(f"{m}:") for s in v.not_run)
    ]
    if not _need_both(ev, have, v):
        return v
    shift = {"TBM": [], "SSM": []}
    for model, kind in have.items():
        start = ev.layers((model, arm, view))
        m = ev.cka[(model, arm, view)][start:, start:]  # layers after the embeddings
        early, late = _depth_regions(len(m), t["late_fraction"])
        if min(len(early), len(late)) < 2:
            v.not_run.append(
                f"{model}/{arm}: {len(m)} layers after the embeddings leave {len(early)} in the early half and "
                f"{len(late)} in the late region; a block of one layer has only CKA's diagonal (1)"
            )
            continue
        e, l = _block_mean(m, early), _block_mean(m, late)
        shift[kind].append(l - e)
        if kind == "TBM":
            v.checks.append(
                _check(
                    e >= t["tbm_early_min"],
                    f"{model} (TBM) CKA within the early half {_f(e)} >= {t['tbm_early_min']}",
                    model,
                )
            )
        else:
            v.checks.append(
                _check(
                    l - e >= t["ssm_late_gain_min"],
                    f"{model} (SSM) CKA late block - early block = {_f(l)} - {_f(e)} = {_f(l - e)} "
                    f">= {t['ssm_late_gain_min']}",
                    model,
                )
            )
    if shift["TBM"] and shift["SSM"]:
        v.checks.append(
            _contrast(shift["SSM"], shift["TBM"], "contrast: late-minus-early CKA, highest TBM {hi} < lowest SSM {lo}")
        )
    return v


def _table_not_run(ev: Evidence, arm: str, view: str, table: pd.DataFrame) -> list[str]:
    if init_scope(ev.config, arm) != "all":
        return [f"init {arm} has scope {init_scope(ev.config, arm)}: no probes or table rows"]
    out = [f"{c.model}/{c.init}/{c.task}_n{c.length}" for c in ev.missing_probe if c.init == arm]
    beyond = [
        f"{m.name} at n={n} (beyond its context {m.max_context})"
        for m in ev.config.models
        for n in ev.config.lengths
        if not m.fits(n)
    ]
    return out + beyond


def _rows(ev: Evidence, table: pd.DataFrame, arm: str, view: str, value: str) -> pd.DataFrame:
    sel = table[(table.init == arm) & (table.view == view)].dropna(subset=[value])
    return sel.assign(arch=[_arch(ev.config, m) for m in sel.model]).dropna(subset=["arch"])


def f3_3_2(ev: Evidence, arm: str, view: str, t: dict) -> Verdict:
    """Sm/St (Table 1): at each length, architecture does not separate the values, and models
    of one architecture differ by at least ``within_ratio_min``."""
    v = Verdict("F3.3.2", arm, view)
    v.not_run += _table_not_run(ev, arm, view, ev.table1)
    suffix = "" if t["variant"] == "absolute" else "_rel"
    for metric in ("Sm" + suffix, "St" + suffix):
        rows = _rows(ev, ev.table1, arm, view, metric)
        for length, at in rows.groupby("length"):
            by = {k: at[at.arch == k].set_index("model")[metric] for k in ("TBM", "SSM")}
            if len(by["TBM"]) and len(by["SSM"]):
                separated = by["TBM"].max() < by["SSM"].min() or by["SSM"].max() < by["TBM"].min()
                v.checks.append(
                    _check(
                        not separated,
                        f"n={length} {metric}: TBM {_f(by['TBM'].min())}..{_f(by['TBM'].max())} and SSM "
                        f"{_f(by['SSM'].min())}..{_f(by['SSM'].max())} "
                        + ("do not overlap" if separated else "overlap"),
                    )
                )
            for kind, values in by.items():
                if len(values) >= 2 and values.min() > 0:
                    ratio = float(values.max() / values.min())
                    v.checks.append(
                        _check(
                            ratio >= t["within_ratio_min"],
                            f"n={length} {metric}: {kind} spread {values.idxmax()}/{values.idxmin()} = "
                            f"{_f(ratio)} >= {t['within_ratio_min']}",
                        )
                    )
    if not v.checks:
        v.not_run.append("needs Sm/St of a TBM and an SSM at one length, or of two models of one architecture")
    return v


def f3_4_1(ev: Evidence, arm: str, view: str, t: dict) -> Verdict:
    """Probes (Table 1): each model peaks at an intermediate layer with gap >= gap_min; mean SSM gap < mean TBM gap."""
    v = Verdict("F3.4.1", arm, view)
    v.not_run += _table_not_run(ev, arm, view, ev.table1)
    rows = _rows(ev, ev.table1, arm, view, "last_acc")
    for length, at in rows.groupby("length"):
        signal = at.peak_acc - at.chance >= t["gap_min"]
        for r in at[~signal].itertuples():  # a peak at chance places nothing: neither pass nor fail
            v.not_run.append(
                f"n={length} {r.model}: peak accuracy {_f(r.peak_acc)} within gap_min {t['gap_min']} of chance "
                f"{_f(r.chance)}, no task signal to place a peak"
            )
        at = at[signal]
        for r in at.itertuples():
            states = ev.probe_states.get((r.model, arm, view, length))
            if states is None:
                v.not_run.append(f"n={length} {r.model}: no probe curve names its states")
                continue
            n_states, first = states
            inner = first <= r.peak_layer < n_states - 1
            v.checks.append(
                _check(
                    inner and r.gap >= t["gap_min"],
                    f"n={length} {r.model} ({r.arch}) peak at state {r.peak_layer} of {n_states}, "
                    f"acc {_f(r.peak_acc)} vs last {_f(r.last_acc)} (chance {_f(r.chance)}): gap {_f(r.gap)} "
                    f">= {t['gap_min']}",
                    r.model,
                )
            )
        gaps = at.groupby("arch")["gap"].mean()
        if {"TBM", "SSM"} <= set(gaps.index):
            v.checks.append(
                _check(gaps["SSM"] < gaps["TBM"], f"n={length} mean gap SSM {_f(gaps['SSM'])} < TBM {_f(gaps['TBM'])}")
            )
    return v


def f3_4_2(ev: Evidence, arm: str, view: str, t: dict) -> Verdict:
    """Context length (Table 2, per model and task): Sm and St stable over lengths, last-layer
    accuracy falls from the shortest to the longest length and never rises by more than a tolerance."""
    v = Verdict("F3.4.2", arm, view)
    v.not_run += _table_not_run(ev, arm, view, ev.table2)
    rows = _rows(ev, ev.table2, arm, view, "last_acc")
    for (model, task), at in rows.groupby(["model", "task"]):
        at = at.sort_values("length")
        if len(at) < 2:
            v.not_run.append(f"{model}/{task}: one length only ({at.length.iloc[0]})")
            continue
        span = f"n={at.length.iloc[0]}..{at.length.iloc[-1]}"
        for metric in ("Sm", "St"):
            vals = at[metric].to_numpy()
            if np.isnan(vals).any():  # a cell without its Sm/St file: not judged, not failed
                v.not_run.append(
                    f"{model}/{task} {metric}: no value at n={', '.join(map(str, at.length[np.isnan(vals)]))}"
                )
                continue
            rel = float((vals.max() - vals.min()) / abs(vals.mean())) if vals.mean() else np.inf
            v.checks.append(
                _check(
                    rel <= t["rel_range_max"],
                    f"{model}/{task} {metric} {span}: relative range {_f(rel)} <= {t['rel_range_max']}",
                    model,
                )
            )
        acc, chance = at["last_acc"].to_numpy(), at["chance"].to_numpy()
        if (acc - chance < t["acc_drop_min"]).all():  # at chance at every length: nothing to fall
            v.not_run.append(
                f"{model}/{task} {span}: last-layer accuracy within acc_drop_min of chance at every length "
                f"({', '.join(f'{_f(a)} vs {_f(c)}' for a, c in zip(acc, chance, strict=True))}), no task signal"
            )
            continue
        drop, chance_drop = float(acc[0] - acc[-1]), float(chance[0] - chance[-1])
        rises = np.diff(acc)
        v.checks.append(
            _check(
                drop >= t["acc_drop_min"] and drop > chance_drop and (rises <= t["monotone_tol"]).all(),
                f"{model}/{task} last-layer accuracy {span}: "
                + " -> ".join(_f(a) for a in acc)
                + f" (chance {_f(chance[0])} -> {_f(chance[-1])}; drop {_f(drop)} >= {t['acc_drop_min']} and > "
                f"chance's {_f(chance_drop)}, no rise > {t['monotone_tol']})",
                model,
            )
        )
    if len(ev.config.lengths) < 2:
        v.not_run.append(f"config.lengths has one length ({ev.config.lengths[0]}); needs two or more")
    return v


def f3_4_3(ev: Evidence, arm: str, view: str, t: dict) -> Verdict:
    """Model size (Table 1, each ``size_pairs`` entry): the larger model has higher last-layer accuracy
    and a larger peak-to-last gap, at every length both ran."""
    v = Verdict("F3.4.3", arm, view)
    if not t["size_pairs"]:
        v.not_run.append("config.findings.size_pairs is empty (no smaller/larger pair of one family)")
        return v
    v.not_run += _table_not_run(ev, arm, view, ev.table1)
    rows = ev.table1[(ev.table1.init == arm) & (ev.table1.view == view)].dropna(subset=["last_acc"])
    for pair in t["size_pairs"]:
        small, large = rows[rows.model == pair["small"]], rows[rows.model == pair["large"]]
        both = small.merge(large, on="length", suffixes=("_s", "_l"))
        if both.empty:
            v.not_run.append(f"{pair['small']} and {pair['large']} share no length that ran")
        for r in both.itertuples():
            v.checks.append(
                _check(
                    r.last_acc_l > r.last_acc_s,
                    f"n={r.length} last-layer accuracy {pair['large']} {_f(r.last_acc_l)} > {pair['small']} {_f(r.last_acc_s)}",
                )
            )
            v.checks.append(
                _check(
                    r.gap_l > r.gap_s,
                    f"n={r.length} gap to the last layer {pair['large']} {_f(r.gap_l)} > {pair['small']} {_f(r.gap_s)}",
                )
            )
    return v


RULES: dict[str, Callable[[Evidence, str, str, dict], Verdict]] = {
    "F3.2.1": f3_2_1,
    "F3.2.2": f3_2_2,
    "F3.2.3": f3_2_3,
    "F3.3.1": f3_3_1,
    "F3.3.2": f3_3_2,
    "F3.4.1": f3_4_1,
    "F3.4.2": f3_4_2,
    "F3.4.3": f3_4_3,
}

BY_ARCHITECTURE = frozenset(RULES) - {"F3.4.3"}
"""Findings whose checks read only models of a known architecture (F3.4.3 reads its size pairs)."""


def _thresholds(config: Config, finding: str) -> dict:
    section = config.section("findings")
    key = finding.lower().replace(".", "_")  # "F3.2.1" -> "f3_2_1"
    return {"late_fraction": section["late_fraction"], **section[key]}


def evaluate(config: Config, root: str | Path = ".") -> list[Verdict]:
    """Every finding for every arm (init) and view of the config, in config order.

    F3.2.3 compares the pretrained arm with each other arm, so its rows are the non-pretrained inits."""
    ev = load_evidence(config, root)
    out = []
    views = config.section("metrics")["views"]
    for finding, rule in RULES.items():
        arms = [i.name for i in config.inits if finding != "F3.2.3" or i.scheme != "pretrained"]
        if not arms:
            out += [
                Verdict(finding, "-", view, not_run=["no init other than pretrained in config.inits"]) for view in views
            ]
            continue
        for arm in arms:
            for view in views:
                verdict = rule(ev, arm, view, _thresholds(config, finding))
                if finding in BY_ARCHITECTURE:
                    verdict.not_run += unclassified_models(config)
                out.append(verdict)
    return out


def findings_table(config: Config, root: str | Path = ".") -> pd.DataFrame:
    """The verdicts as a DataFrame with :data:`COLUMNS`."""
    return pd.DataFrame([v.row() for v in evaluate(config, root)], columns=COLUMNS)


def write_findings(config: Config, out_path: str | Path, *, root: str | Path = ".") -> pd.DataFrame:
    """Write results/findings.csv (atomically) and return it."""
    table = findings_table(config, root)
    atomic_write(out_path, lambda tmp: table.to_csv(tmp, index=False))
    counts = table["verdict"].value_counts().to_dict()
    logger.info("wrote %s: %s", out_path, ", ".join(f"{k} {counts.get(k, 0)}" for k in VERDICTS))
    return table
