"""The paper's figures, drawn from the metric files alone.

Each figure exists averaged over tasks (``figN_name.png``) and per task (``figN_name_{task}.png``):

- Fig. 1 ``fig1_layerwise_cosine``: heatmap of cos(h_t^l, h_t^{l+1}) over layer pairs x relative
  token position; rows = models, columns = views; first init, at ``figures.length``.
- Fig. 2 ``fig2_inter_token_cosine``: mean pairwise token cosine per state against relative depth;
  rows = views, columns = lengths; one line per model (first init).
- Fig. 3 ``fig3_pretrained_vs_random``: inter-token cosine and mean layerwise cosine per state,
  every init (colour) and view (line style); columns = models; at ``figures.length``.
- Fig. 4 ``fig4_cka``: linear CKA between all pairs of states; rows = models, columns = inits;
  view ``figures.view``, at ``figures.length``.
- Fig. 7 ``fig7_probe_accuracy``: probe accuracy (mean +- std over seeds) per state; rows = views,
  columns = lengths; one line per model (first init).

A model whose context is shorter than ``figures.length`` is shown at its longest fitting length.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from reprflow.atomic import atomic_write  # noqa: E402
from reprflow.config import Config, ModelSpec  # noqa: E402
from reprflow.pipeline.results import probe_curves, token_array, token_curves  # noqa: E402
from reprflow.workflow.targets import Cell  # noqa: E402

logger = logging.getLogger(__name__)


def _figure_length(config: Config, model: ModelSpec) -> int | None:
    """``figures.length``, or the longest configured length the model fits (None if none)."""
    wanted = config.section("figures")["length"]
    fitting = [n for n in config.lengths if model.fits(n)]
    if not fitting:
        return None
    if wanted in fitting:
        return wanted
    below = [n for n in fitting if n <= wanted]
    return max(below) if below else min(fitting)


def _tasks(config: Config, task: str | None) -> list[str]:
    return config.tasks if task is None else [task]


def _mean_array(config: Config, model: str, init: str, length: int, tasks: list[str], name: str) -> np.ndarray:
    return np.mean([token_array(Cell(model, init, t, length), name) for t in tasks], axis=0)


def _save(fig, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight"))
    plt.close(fig)


def _grid(n_rows: int, n_cols: int, *, width: float = 3.6, height: float = 2.8):
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width * n_cols, height * n_rows), squeeze=False)
    return fig, axes


def fig1_layerwise_cosine(config: Config, task: str | None) -> plt.Figure:
    views = config.section("metrics")["views"]
    init = config.inits[0].name
    fig, axes = _grid(len(config.models), len(views))
    for r, model in enumerate(config.models):
        length = _figure_length(config, model)
        for c, view in enumerate(views):
            ax = axes[r, c]
            if length is None:
                ax.set_axis_off()
                continue
            heat = _mean_array(config, model.name, init, length, _tasks(config, task), f"layerwise_cosine_{view}")
            im = ax.imshow(heat, aspect="auto", origin="lower", cmap="viridis", vmin=-1, vmax=1, extent=(0, 1, 0, heat.shape[0]))
            ax.set_title(f"{model.name} ({view}, n={length})", fontsize=8)
            ax.set_xlabel("relative token position", fontsize=7)
            ax.set_ylabel("layer pair l -> l+1", fontsize=7)
    fig.colorbar(im, ax=axes, shrink=0.6, label="cos(h_t^l, h_t^{l+1})")
    fig.suptitle(f"Fig. 1: layerwise cosine ({init}; {task or 'mean over tasks'})")
    return fig


def _mean_curve(frame: pd.DataFrame, x: str, y: str, tasks: list[str]) -> pd.DataFrame:
    frame = frame[frame["task"].isin(tasks)]
    return frame.groupby(x, as_index=False)[y].mean().sort_values(x)


def fig2_inter_token_cosine(config: Config, task: str | None) -> plt.Figure:
    curves = token_curves(config, "inter_token_cosine")
    views, lengths, init = config.section("metrics")["views"], config.lengths, config.inits[0].name
    fig, axes = _grid(len(views), len(lengths))
    for r, view in enumerate(views):
        for c, length in enumerate(lengths):
            ax = axes[r, c]
            for model in config.models:
                sel = curves[(curves.model == model.name) & (curves.init == init) & (curves.view == view) & (curves.length == length)]
                if sel.empty:
                    continue
                line = _mean_curve(sel, "state_index", "mean", _tasks(config, task))
                depth = line["state_index"] / max(line["state_index"].max(), 1)
                ax.plot(depth, line["mean"], label=model.name)
            ax.set_title(f"{view}, n={length}", fontsize=8)
            ax.set_xlabel("relative depth", fontsize=7)
            ax.set_ylabel("inter-token cosine", fontsize=7)
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(f"Fig. 2: inter-token cosine by layer ({init}; {task or 'mean over tasks'})")
    return fig


def fig3_pretrained_vs_random(config: Config, task: str | None) -> plt.Figure:
    inter = token_curves(config, "inter_token_cosine")
    layer = token_curves(config, "layerwise_cosine")
    views = config.section("metrics")["views"]
    fig, axes = _grid(2, len(config.models))
    styles = ["-", "--", ":", "-."]
    for c, model in enumerate(config.models):
        length = _figure_length(config, model)
        for k, init in enumerate(config.inits):
            for s, view in enumerate(views):
                style = {"color": f"C{k}", "linestyle": styles[s % len(styles)], "label": f"{init.name} / {view}"}
                for r, (frame, x, title) in enumerate(((inter, "state_index", "inter-token cosine"), (layer, "pair_index", "layerwise cosine"))):
                    sel = frame[(frame.model == model.name) & (frame.init == init.name) & (frame.view == view) & (frame.length == length)]
                    if sel.empty:
                        continue
                    line = _mean_curve(sel, x, "mean", _tasks(config, task))
                    axes[r, c].plot(line[x], line["mean"], **style)
                    axes[r, c].set_ylabel(title, fontsize=7)
        axes[0, c].set_title(f"{model.name} (n={length})", fontsize=8)
        axes[1, c].set_xlabel("layer", fontsize=7)
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(f"Fig. 3: pretrained vs random init ({task or 'mean over tasks'})")
    return fig


def fig4_cka(config: Config, task: str | None) -> plt.Figure:
    view = config.section("figures")["view"]
    fig, axes = _grid(len(config.models), len(config.inits), width=3.2, height=3.0)
    for r, model in enumerate(config.models):
        length = _figure_length(config, model)
        for c, init in enumerate(config.inits):
            ax = axes[r, c]
            if length is None:
                ax.set_axis_off()
                continue
            cka = _mean_array(config, model.name, init.name, length, _tasks(config, task), f"cka_{view}")
            im = ax.imshow(cka, origin="lower", cmap="magma", vmin=0, vmax=1)
            ax.set_title(f"{model.name} / {init.name} (n={length})", fontsize=8)
            ax.set_xlabel("layer", fontsize=7)
            ax.set_ylabel("layer", fontsize=7)
    fig.colorbar(im, ax=axes, shrink=0.6, label="linear CKA")
    fig.suptitle(f"Fig. 4: CKA between layers ({view} view; {task or 'mean over tasks'})")
    return fig


def fig7_probe_accuracy(config: Config, task: str | None) -> plt.Figure:
    probes = probe_curves(config)
    views, lengths, init = config.section("metrics")["views"], config.lengths, config.inits[0].name
    fig, axes = _grid(len(views), len(lengths))
    for r, view in enumerate(views):
        for c, length in enumerate(lengths):
            ax = axes[r, c]
            for model in config.models:
                sel = probes[(probes.model == model.name) & (probes.init == init) & (probes.view == view)
                             & (probes.length == length) & probes.task.isin(_tasks(config, task))]
                if sel.empty:
                    continue
                per_seed = sel.groupby(["seed", "state_index"], as_index=False)["val_accuracy"].mean()
                stats = per_seed.groupby("state_index")["val_accuracy"].agg(["mean", "std"]).reset_index()
                ax.plot(stats["state_index"], stats["mean"], label=model.name)
                ax.fill_between(stats["state_index"], stats["mean"] - stats["std"].fillna(0),
                                stats["mean"] + stats["std"].fillna(0), alpha=0.2)
            ax.set_title(f"{view}, n={length}", fontsize=8)
            ax.set_xlabel("layer", fontsize=7)
            ax.set_ylabel("probe accuracy", fontsize=7)
            ax.set_ylim(0, 1)
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(f"Fig. 7: probe accuracy by layer ({init}; {task or 'mean over tasks'})")
    return fig


FIGURES = {
    "fig1_layerwise_cosine": fig1_layerwise_cosine,
    "fig2_inter_token_cosine": fig2_inter_token_cosine,
    "fig3_pretrained_vs_random": fig3_pretrained_vs_random,
    "fig4_cka": fig4_cka,
    "fig7_probe_accuracy": fig7_probe_accuracy,
}


def write_figures(config: Config, paths: list[str]) -> None:
    """Draw every requested figure; a path's name selects the figure and optional task suffix."""
    for path in map(Path, paths):
        stem = path.stem
        name = next(n for n in FIGURES if stem == n or stem.startswith(n + "_"))
        task = stem[len(name) + 1:] or None
        _save(FIGURES[name](config, task), path)
        logger.info("wrote %s", path)
