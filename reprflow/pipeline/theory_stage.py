"""Theory stage: the Monte Carlo check of the paper's Theorems 1-6 and of the project's extensions.

Writes, into ``out_dir`` (``results/theory/``), each through a temporary name and a rename.
The paper's theorems as stated, in the paper's setting (:mod:`reprflow.theory.paper_check`):

- ``theorems.csv``       one verdict row per theorem, setting and weight source;
- ``theorem_cells.csv``  every (theorem, setting, weight source, n, σ²[, L]) cell;
- ``assumptions.csv``    the measured constants of the proofs (ρ, c, b, h, z, x_max, δ, Lemma 1);
- ``paper_crossover.csv`` σ²*(n) of the paper's blocks next to the proof's x_max.

The project's extensions (causal attention, selective B/C, D skip, depth stacks):

- ``stability.csv``      one-block energies: exact | linearized | closed_form, three quantities;
- ``depth.csv``          path energy and St_L² of depth-L stacks, with and without pre-LN;
- ``approximations.csv`` the paper's P-1/n² and P-VV in the Transformer closed form;
- ``crossover.csv``      the σ² above which the closed forms reverse Theorem 5, per n;
- ``theory.png``         energy vs n per σ² (and St_L² vs depth);
- ``verdict.md``         "Paper Theorems 1–6" then "Project extensions" (the markdown of
                         :mod:`reprflow.theory.paper_verdict` and :mod:`reprflow.theory.verdict`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from reprflow.atomic import atomic_write  # noqa: E402
from reprflow.devices import resolve_device, torch_threads  # noqa: E402
from reprflow.errors import ConfigError  # noqa: E402
from reprflow.theory.experiment import (  # noqa: E402
    TheoryGrid,
    crossover_table,
    depth_table,
    stability_table,
    weight_sources,
)
from reprflow.theory.paper_check import (  # noqa: E402
    PaperSettings,
    depth_tables,
    one_block_tables,
    theorem_table,
)
from reprflow.theory.paper_verdict import assign_statuses, paper_markdown  # noqa: E402
from reprflow.theory.verdict import verdict_markdown  # noqa: E402

logger = logging.getLogger(__name__)

OUTPUT_NAMES = {
    "theorems": "theorems.csv",
    "theorem_cells": "theorem_cells.csv",
    "assumptions": "assumptions.csv",
    "paper_crossover": "paper_crossover.csv",
    "stability": "stability.csv",
    "depth": "depth.csv",
    "approximations": "approximations.csv",
    "crossover": "crossover.csv",
    "figure": "theory.png",
    "verdict": "verdict.md",
}
CPU_MAX_ELEMENTS, GPU_MAX_ELEMENTS = 1 << 24, 1 << 30  # tensor elements per chunk of draws


def run_theory(  # noqa: PLR0913 (one keyword per config key)
    out_dir: str | Path,
    *,
    n_grid: Sequence[int],
    sigma2_grid: Sequence[float],
    d_model: int,
    d_state: int,
    d_conv: int = 4,
    expand: int,
    n_mc: int,
    depths: Sequence[int],
    weight_scheme: str,
    weight_params: dict | None = None,
    seed: int,
    bias_std: float = 0.1,
    tolerance: float = 0.05,
    depth_n_grid: Sequence[int] | None = None,
    model_scales: Sequence[dict] | None = None,
    precision: str = "float64",
    device: str | None = None,
    max_elements: int | None = None,
    threads: int | None = None,
) -> dict[str, Path]:
    """Run the whole theory check and write its outputs (``OUTPUT_NAMES``) into ``out_dir``.

    Parameters
    ----------
    out_dir : path
    n_grid, sigma2_grid : sequences
        Sequence lengths n and input variances σ² of the one-block study.
    d_model, d_state, d_conv, expand : int
        Block sizes.
    n_mc : int
        Monte Carlo draws per cell.
    depths : sequence of int
        Stack depths L of the depth study (empty: no depth study, empty depth.csv).
    weight_scheme : {"gaussian", "xavier", "he"}
    weight_params : dict, optional
        The scheme's parameters (defaults as in reprflow.models.init_schemes).
    seed : int
    bias_std : float
        Std of the FFN biases b₁, b₂ of the paper's Transformer block (Theorem 1).
    tolerance : float
        Relative error within which a stated closed form agrees with the Monte Carlo.
    depth_n_grid : sequence of int, optional
        Sequence lengths of the depth study; default: ``n_grid``.
    model_scales : sequence of dict, optional
        ``{"name": str, "std": float | {matrix: float}}`` per model whose weight scales are
        also studied (``weight_source = "model:<name>"``).
    precision : {"float64", "float32"}
        Arithmetic of every Monte Carlo draw and block, on whatever device (so the device
        never changes the numbers written). float32 is faster on a GPU, but overflows to
        +inf where the deep stacks without LayerNorm blow up at large σ².
    device : str, optional
        ``auto`` / ``cpu`` / ``cuda[:N]``.
    max_elements : int, optional
        Tensor elements per chunk of draws (default 2**24 on CPU, 2**30 on CUDA: ~4 GiB peak at n = 4096, d_model = 64).
    threads : int, optional
        torch intra-op CPU threads while the stage runs (restored after). The blocks are
        small tensors in a sequential scan; on a shared CPU one thread is much faster.

    Returns
    -------
    dict of output name -> Path (keys as in ``OUTPUT_NAMES``)
    """
    grid = TheoryGrid(
        n_grid=tuple(n_grid), sigma2_grid=tuple(float(s) for s in sigma2_grid),
        d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand, n_mc=n_mc,
        depths=tuple(depths), depth_n_grid=tuple(depth_n_grid or n_grid),
        sources=weight_sources(weight_scheme, weight_params or {}, model_scales), seed=seed,
    )  # fmt: skip
    if not (bias_std >= 0 and 0 < tolerance < 1):
        raise ConfigError(
            f"theory.bias_std={bias_std!r}, theory.tolerance={tolerance!r}: expected "
            "bias_std >= 0 and 0 < tolerance < 1"
        )
    paper = PaperSettings(bias_std=float(bias_std), tolerance=float(tolerance))
    dtypes = {"float64": torch.float64, "float32": torch.float32}
    if precision not in dtypes:
        raise ConfigError(f"theory.precision={precision!r}: expected one of {sorted(dtypes)}")
    dev = resolve_device(device)
    dtype = dtypes[precision]
    budget = max_elements or (CPU_MAX_ELEMENTS if dev.type == "cpu" else GPU_MAX_ELEMENTS)
    logger.info("theory check on %s (%s): %s", dev, dtype, grid)
    start = time.perf_counter()
    with torch_threads(threads, key="theory.threads"):
        kw = {"device": str(dev), "dtype": dtype, "max_elements": budget}
        cells, assumptions, paper_cross = one_block_tables(grid, paper, **kw)
        depth_cells, depth_assumptions = depth_tables(grid, paper, **kw)
        cells = assign_statuses(pd.concat([cells, depth_cells], ignore_index=True), tolerance)
        assumptions = pd.concat([assumptions, depth_assumptions], ignore_index=True)
        theorems = theorem_table(cells)
        stab, approx = stability_table(grid, device=str(dev), dtype=dtype, max_elements=budget)
        depth = depth_table(grid, device=str(dev), dtype=dtype, max_elements=budget)
        cross = crossover_table(grid)
    elapsed = time.perf_counter() - start
    logger.info("theory check computed in %.1fs", elapsed)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / v for k, v in OUTPUT_NAMES.items()}
    for key, table in (("theorems", theorems), ("theorem_cells", cells),
                       ("assumptions", assumptions), ("paper_crossover", paper_cross)):  # fmt: skip
        atomic_write(paths[key], lambda p, t=table: t.to_csv(p, index=False))
    atomic_write(paths["stability"], lambda p: stab.to_csv(p, index=False))
    atomic_write(paths["depth"], lambda p: depth.to_csv(p, index=False))
    atomic_write(paths["approximations"], lambda p: approx.to_csv(p, index=False))
    atomic_write(paths["crossover"], lambda p: cross.to_csv(p, index=False))
    atomic_write(paths["figure"], lambda p: _figure(stab, depth, p))
    header = (
        f"Setup: d_model={d_model}, d_state={d_state}, d_conv={d_conv}, expand={expand}, "
        f"weights {weight_scheme} {grid.sources[0].params}, n_mc={n_mc}, seed={seed}, "
        f"device {dev} ({str(dtype).removeprefix('torch.')}), bias std {bias_std:g}, "
        f"tolerance {tolerance:g}, {elapsed:.0f}s."
    )
    extension = verdict_markdown(
        stab, depth, approx, cross,
        header="The project's own derivations, not the paper's statements: causal attention, "
        "selective B/C with the D skip, depth stacks with and without pre-LN (docs/theory.md, "
        "'Project extensions'). Energies here are per token: (1/n) Σ_t E||F_t||².",
    )  # fmt: skip
    text = "\n".join([
        "# Theory check: verdict", "", header, "",
        paper_markdown(theorems, assumptions, paper_cross, cross, tolerance=tolerance, scheme=weight_scheme), "",
        "## Project extensions (our derivations, not the paper's statements)", "", extension,
    ])  # fmt: skip
    atomic_write(paths["verdict"], lambda p: p.write_text(text))
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return paths


def _figure(stab: pd.DataFrame, depth: pd.DataFrame, path: Path) -> None:
    """Energy vs n per σ² (row 1) and St_L² vs depth at the largest n (row 2), scheme weights."""
    e = stab[(stab.quantity == "energy") & (stab.weight_source == "scheme")]
    sigmas = sorted(e.sigma2.unique())
    rows = 1 if depth.empty else 2
    fig, axes = plt.subplots(rows, len(sigmas), figsize=(4 * len(sigmas), 3.4 * rows), squeeze=False)
    colors = {"transformer": "tab:blue", "mamba": "tab:orange"}
    styles = {"exact": ("-", "o"), "linearized": ("--", "s"), "closed_form": (":", "x")}
    for ax, s2 in zip(axes[0], sigmas, strict=True):
        for (block, est), g in e[e.sigma2 == s2].groupby(["block", "estimator"]):
            g = g.sort_values("n")
            ls, mk = styles[est]
            ax.plot(g.n, g["mean"], ls=ls, marker=mk, color=colors[block], label=f"{block} {est}")
            if est != "closed_form":
                ax.fill_between(g.n, g.ci_low, g.ci_high, color=colors[block], alpha=0.15)
        ax.set(xscale="log", yscale="log", xlabel="n (tokens)", title=f"σ² = {s2:g}")
        ns = sorted(e.n.unique())
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    axes[0][0].set_ylabel("E‖F(h⁰)‖² per token")
    axes[0][-1].legend(fontsize=7)
    if rows == 2:
        d = depth[(depth.weight_source == "scheme") & (depth.n == depth.n.max())]
        d = d[d.st2 < float("inf")]  # overflowed stacks (+inf) are not drawn
        for ax, s2 in zip(axes[1], sigmas, strict=True):
            for (block, ln), g in d[d.sigma2 == s2].groupby(["block", "layernorm"]):
                g = g.sort_values("depth")
                ax.errorbar(
                    g.depth, g.st2, yerr=[g.st2 - g.ci_low, g.ci_high - g.st2],
                    ls="--" if ln else "-", marker="o", color=colors[block],
                    label=f"{block} {'pre-LN' if ln else 'no LN'}",
                )  # fmt: skip
            ax.set(yscale="log", xlabel="depth L", title=f"σ² = {s2:g}, n = {d.n.max()}")
            ax.set_xticks(sorted(d.depth.unique()))
        axes[1][0].set_ylabel("E[St_L²]")
        axes[1][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)
