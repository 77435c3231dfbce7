"""The paper's figures, drawn from the metric files alone.

Each figure exists averaged over the paper's tasks (``figN_name.png``) and per task
(``figN_name_{task}.png``, custom tasks included, each at its own length):

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

Every model keeps one colour, line style and marker in every panel and figure
(:func:`model_style`: colour from its config position, style from its architecture), so a model
skipped in a panel (a length beyond its context) never shifts the others; each figure has one
legend built from the lines actually drawn. Layouts are constrained (no title/label overlap);
Fig. 1's colour range is fitted to the data and stated on the colour bar; Fig. 3's title names
the init arms that ran.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from reprflow.atomic import atomic_write  # noqa: E402
from reprflow.config import Config, ModelSpec  # noqa: E402
from reprflow.errors import ReprflowError  # noqa: E402
from reprflow.pipeline.findings import ARCHITECTURE  # noqa: E402
from reprflow.pipeline.results import (  # noqa: E402
    figure_length,
    first_state_names,
    probe_classes,
    probe_curves,
    table_inits,
    token_array,
    token_curves,
)
from reprflow.workflow.targets import Cell  # noqa: E402

logger = logging.getLogger(__name__)

_PALETTE = plt.get_cmap("tab10").colors
_ARCH_STYLE = {"TBM": ("-", "o"), "SSM": ("--", "s")}


def model_style(config: Config, model: str) -> dict:
    """The fixed colour, line style and marker of a model in every panel of every figure.

    Colour = the model's position in ``config.models`` (tab10); line style and marker = its
    architecture (TBM solid/circle, SSM dashed/square, others dotted/triangle). A model absent from
    a panel therefore never shifts another model's colour."""
    names = [m.name for m in config.models]
    arch = ARCHITECTURE.get(config.model(model).family)
    line, marker = _ARCH_STYLE.get(arch, (":", "^"))
    return {
        "color": _PALETTE[names.index(model) % len(_PALETTE)],
        "linestyle": line,
        "marker": marker,
        "markersize": 3,
        "label": model,
    }


def init_style(config: Config, init: str) -> dict:
    """The fixed colour of an init (its position in ``config.inits``, Dark2 palette)."""
    names = [i.name for i in config.inits]
    return {"color": plt.get_cmap("Dark2").colors[names.index(init) % 8]}


def _figure_length(config: Config, model: ModelSpec, task: str | None) -> int | None:
    return figure_length(config, model, task)


def _tasks(config: Config, task: str | None) -> list[str]:
    """The tasks a figure averages: the paper's (mean-over-tasks figures) or the one named."""
    return config.paper_tasks if task is None else [task]


def _lengths(config: Config, task: str | None) -> list[int]:
    """The length columns of Fig. 2 and Fig. 7: ``lengths``, or a custom task's own length."""
    return config.lengths if task is None else config.task_lengths(task)


def _mean_array(config: Config, model: str, init: str, length: int, tasks: list[str], name: str) -> np.ndarray:
    return np.mean([token_array(Cell(model, init, t, length), name) for t in tasks], axis=0)


def _save(fig, path: Path) -> None:
    fit_width(fig)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)


def fit_width(fig, *, margin: float = 1.05) -> None:
    """Widen ``fig`` until its title and its figure legend fit inside it.

    A figure is ``width`` inches per column (:func:`_grid`), so a one-column figure (every
    custom task's, or a config with one length) is narrower than its title and a legend of a
    few models; constrained layout does not shrink text, and both were cut at the edges."""
    renderer = fig.canvas.get_renderer()
    texts = [t for t in (fig._suptitle, *fig.legends) if t is not None]
    needed = max((t.get_window_extent(renderer).width for t in texts), default=0.0) * margin
    if needed > fig.bbox.width:
        fig.set_figwidth(fig.get_figwidth() * needed / fig.bbox.width)


def _grid(n_rows: int, n_cols: int, *, width: float = 3.6, height: float = 2.8):
    """Subplots with constrained layout: titles, labels, colour bars and legends never overlap."""
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(width * n_cols, height * n_rows + 0.6), squeeze=False, layout="constrained"
    )
    return fig, axes


def _legend(fig, axes) -> None:
    """One legend for the figure from the lines actually drawn, deduplicated by label."""
    handles = {}
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=min(len(handles), 5), fontsize=7)


def _cosine_axes(axes) -> None:
    """One y-range for every cosine panel of a figure: from min(0, data) to 1, so levels compare
    across panels (a flat line near 0 is not blown up to fill its panel)."""
    lows = [ax.get_ylim()[0] for ax in axes.flat if ax.get_lines()]
    for ax in axes.flat:
        ax.set_ylim(min([0.0, *lows]), 1.02)


def _note_missing(ax, config: Config, drawn: list[str], length: int) -> None:
    """Say in the panel which models were not run there (e.g. a length beyond their context)."""
    missing = [m for m in config.models if m.name not in drawn]
    if missing:
        text = "not run: " + ", ".join(
            f"{m.name}" + (f" (context {m.max_context})" if not m.fits(length) else "") for m in missing
        )
        ax.text(0.02, 0.97, text, transform=ax.transAxes, fontsize=6, va="top", color="dimgrey")


def _describe_init(config: Config) -> str:
    init = config.inits[0]
    return f"init {init.name}"


def _state_axis(what: str, first: set[str]) -> str:
    """x label of a state axis: ``what`` and what state 0 is in the curves drawn.

    ``first``: the names of state 0 of every curve on the axis (:func:`reprflow.pipeline.results.first_state_names`). The
    residual view and most models' hidden_states start at ``embed``; transformers'
    hidden_states of Mamba, Falcon-Mamba and Mamba2 (their hf view) at ``block_1``."""
    if first == {"embed"}:
        return f"{what} (0 = embeddings)"
    if first == {"block_1"}:
        return f"{what} (0 = block 1)"
    if first == {"embed", "block_1"}:
        return f"{what} (0 = embeddings; block 1 where the view has none)"
    return what


def fig1_layerwise_cosine(config: Config, task: str | None) -> plt.Figure:
    views = config.section("metrics")["views"]
    init = config.inits[0].name
    heats = {}
    for model in config.models:
        length = _figure_length(config, model, task)
        for view in views:
            if length is not None:
                heats[(model.name, view)] = (
                    length,
                    _mean_array(config, model.name, init, length, _tasks(config, task), f"layerwise_cosine_{view}"),
                )
    values = np.concatenate([h.ravel() for _, h in heats.values()]) if heats else np.array([0.0, 1.0])
    vmin, vmax = float(np.nanmin(values)), float(np.nanmax(values))
    if vmax - vmin < 1e-6:
        vmin, vmax = vmin - 0.01, vmax + 0.01
    fig, axes = _grid(len(config.models), len(views))
    im = None
    for r, model in enumerate(config.models):
        for c, view in enumerate(views):
            ax = axes[r, c]
            if (model.name, view) not in heats:
                ax.set_axis_off()
                ax.set_title(
                    f"{model.name}: not run" + ("" if task in config.custom_tasks else " (fits no length)"), fontsize=8
                )
                continue
            length, heat = heats[(model.name, view)]
            im = ax.imshow(
                heat,
                aspect="auto",
                origin="lower",
                cmap="viridis",
                vmin=vmin,
                vmax=vmax,
                extent=(0, 1, -0.5, heat.shape[0] - 0.5),
                interpolation="nearest",
            )
            ax.set_title(f"{model.name} ({view}, n={length})", fontsize=8)
            ax.set_xlabel("relative token position", fontsize=7)
            ax.set_ylabel("layer pair l -> l+1", fontsize=7)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.6, label=f"cosine of h_t at layers l and l+1 (range {vmin:.3g}..{vmax:.3g})")
    fig.suptitle(f"Fig. 1: layerwise cosine ({_describe_init(config)}; {task or 'mean over tasks'})")
    return fig


def _mean_curve(frame: pd.DataFrame, x: str, y: str, tasks: list[str]) -> pd.DataFrame:
    frame = frame[frame["task"].isin(tasks)]
    return frame.groupby(x, as_index=False)[y].mean().sort_values(x)


def fig2_inter_token_cosine(config: Config, task: str | None) -> plt.Figure:
    curves = token_curves(config, "inter_token_cosine")
    views, lengths, init = config.section("metrics")["views"], _lengths(config, task), config.inits[0].name
    fig, axes = _grid(len(views), len(lengths))
    for r, view in enumerate(views):
        for c, length in enumerate(lengths):
            ax = axes[r, c]
            drawn, first = [], set()
            for model in config.models:
                sel = curves[
                    (curves.model == model.name)
                    & (curves.init == init)
                    & (curves.view == view)
                    & (curves.length == length)
                ]
                if sel.empty:
                    continue
                line = _mean_curve(sel, "state_index", "mean", _tasks(config, task))
                depth = line["state_index"] / max(line["state_index"].max(), 1)
                ax.plot(depth, line["mean"], **model_style(config, model.name))
                drawn.append(model.name)
                first |= first_state_names(sel)
            _note_missing(ax, config, drawn, length)
            ax.set_title(f"{view}, n={length}", fontsize=8)
            # wrap: the label of a panel mixing views with and without embeddings is wider than the panel
            ax.set_xlabel(_state_axis("relative depth", first), fontsize=7, wrap=True)
            ax.set_ylabel("inter-token cosine", fontsize=7)
    _cosine_axes(axes)
    _legend(fig, axes)
    fig.suptitle(f"Fig. 2: inter-token cosine by layer ({_describe_init(config)}; {task or 'mean over tasks'})")
    return fig


def fig3_pretrained_vs_random(config: Config, task: str | None) -> plt.Figure:
    """Every init that ran (each a colour) and view (line style); the title names the arms drawn."""
    inter = token_curves(config, "inter_token_cosine")
    layer = token_curves(config, "layerwise_cosine")
    views = config.section("metrics")["views"]
    fig, axes = _grid(2, len(config.models))
    styles = ["-", "--", ":", "-."]
    drawn: list[str] = []
    for c, model in enumerate(config.models):
        length = _figure_length(config, model, task)
        first: set[str] = set()
        for init in config.inits:
            for s, view in enumerate(views):
                style = {
                    **init_style(config, init.name),
                    "linestyle": styles[s % len(styles)],
                    "label": f"{init.name} / {view}",
                }
                for r, (frame, x, title) in enumerate(
                    ((inter, "state_index", "inter-token cosine"), (layer, "pair_index", "layerwise cosine"))
                ):
                    sel = frame[
                        (frame.model == model.name)
                        & (frame.init == init.name)
                        & (frame.view == view)
                        & (frame.length == length)
                    ]
                    if sel.empty:
                        continue
                    line = _mean_curve(sel, x, "mean", _tasks(config, task))
                    axes[r, c].plot(line[x], line["mean"], **style)
                    axes[r, c].set_ylabel(title, fontsize=7)
                    first |= first_state_names(sel)
                    if init.name not in drawn:
                        drawn.append(init.name)
        axes[0, c].set_title(f"{model.name} ({ARCHITECTURE.get(model.family, model.family)}, n={length})", fontsize=8)
        for ax in axes[:, c]:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[0, c].set_xlabel(_state_axis("state", first), fontsize=7)
        axes[1, c].set_xlabel("layer pair l -> l+1", fontsize=7)
    _cosine_axes(axes)
    _legend(fig, axes)
    arms = ", ".join(drawn) if drawn else "no arm ran"
    fig.suptitle(f"Fig. 3: token similarity by initialisation - arms run: {arms} ({task or 'mean over tasks'})")
    return fig


def fig4_cka(config: Config, task: str | None) -> plt.Figure:
    view = config.section("figures")["view"]
    inits = table_inits(config)
    fig, axes = _grid(len(config.models), len(inits), width=3.2, height=3.0)
    im = None
    for r, model in enumerate(config.models):
        length = _figure_length(config, model, task)
        for c, init in enumerate(map(config.init, inits)):
            ax = axes[r, c]
            if length is None:
                ax.set_axis_off()
                continue
            cka = _mean_array(config, model.name, init.name, length, _tasks(config, task), f"cka_{view}")
            im = ax.imshow(cka, origin="lower", cmap="magma", vmin=0, vmax=1)
            ax.set_title(f"{model.name} / {init.name} (n={length})", fontsize=8)
            ax.set_xlabel("state", fontsize=7)
            ax.set_ylabel("state", fontsize=7)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.6, label="linear CKA")
    fig.suptitle(f"Fig. 4: CKA between layers ({view} view; {task or 'mean over tasks'})")
    return fig


def fig7_probe_accuracy(config: Config, task: str | None) -> plt.Figure:
    probes = probe_curves(config)
    classes = probe_classes(config)
    views, lengths, init = config.section("metrics")["views"], _lengths(config, task), table_inits(config)[0]
    fig, axes = _grid(len(views), len(lengths))
    for r, view in enumerate(views):
        for c, length in enumerate(lengths):
            ax = axes[r, c]
            chances: set[float] = set()
            drawn, first = [], set()
            for model in config.models:
                sel = probes[
                    (probes.model == model.name)
                    & (probes.init == init)
                    & (probes.view == view)
                    & (probes.length == length)
                    & probes.task.isin(_tasks(config, task))
                ]
                if sel.empty:
                    continue
                per_seed = sel.groupby(["seed", "state_index"], as_index=False)["val_accuracy"].mean()
                stats = per_seed.groupby("state_index")["val_accuracy"].agg(["mean", "std"]).reset_index()
                style = model_style(config, model.name)
                ax.plot(stats["state_index"], stats["mean"], **style)
                drawn.append(model.name)
                first |= first_state_names(sel)
                ax.fill_between(
                    stats["state_index"],
                    stats["mean"] - stats["std"].fillna(0),
                    stats["mean"] + stats["std"].fillna(0),
                    alpha=0.15,
                    color=style["color"],
                )
                n_classes = classes[
                    (classes.model == model.name)
                    & (classes.init == init)
                    & (classes.view == view)
                    & (classes.length == length)
                    & classes.task.isin(_tasks(config, task))
                ]
                if not n_classes.empty:
                    chances.add(round(float((1.0 / n_classes["n_classes"]).mean()), 6))
            for chance in sorted(chances):
                ax.axhline(chance, color="grey", linestyle=":", linewidth=1, label="chance 1/C")
            _note_missing(ax, config, drawn, length)
            ax.set_title(f"{view}, n={length}", fontsize=8)
            ax.set_xlabel(_state_axis("state", first), fontsize=7)
            ax.set_ylabel("probe accuracy", fontsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylim(0, 1)
    _legend(fig, axes)
    fig.suptitle(f"Fig. 7: probe accuracy by layer (init {init}; {task or 'mean over tasks'})")
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
        name = next((n for n in FIGURES if stem == n or stem.startswith(n + "_")), None)
        if name is None:
            raise ReprflowError(
                f"{path}: not a figure name; the file stem must be one of {list(FIGURES)}, "
                "optionally followed by _<task>"
            )
        task = stem[len(name) + 1 :] or None
        _save(FIGURES[name](config, task), path)
        logger.info("wrote %s", path)
