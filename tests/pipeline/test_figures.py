"""Figures: a model keeps its colour/style in every panel and figure, even where another is skipped;
Fig. 1's colour range fits the data; Fig. 3's title names the arms that ran."""

from __future__ import annotations

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import pytest
import yaml

from reprflow.config import PROJECT_ROOT, validate_config
from reprflow.pipeline import figures
from reprflow.workflow.targets import cells


def _load_world_builder():
    """The constructed-metric-file builder of test_findings.py (tests are not a package)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("_findings_world", Path(__file__).with_name("test_findings.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SUPPORTS, module._write_cell


SUPPORTS, _write_cell = _load_world_builder()


@pytest.fixture()
def world(tmp_path, monkeypatch):
    with open(PROJECT_ROOT / "config" / "demo.yaml") as fh:
        raw = yaml.safe_load(fh)
    raw["models"] = raw["models"][:3]  # tiny-gpt-neo (context 512: skipped at 600), tiny-pythia, tiny-mamba
    raw["metrics"]["views"] = ["hf"]
    config = validate_config(raw)
    specs = {**SUPPORTS, "tiny-gpt-neo": SUPPORTS["tiny-pythia"]}
    for cell in cells(config):
        _write_cell(tmp_path, cell, specs[cell.model])
    monkeypatch.chdir(tmp_path)
    return config


def _lines(fig):
    for ax in fig.axes:
        for line in ax.get_lines():
            if not line.get_label().startswith("_"):
                yield ax, line


def test_each_model_keeps_its_colour_and_style_everywhere(world):
    seen = {}
    for name in ("fig2_inter_token_cosine", "fig7_probe_accuracy"):
        for task in (None, "kvpr"):
            fig = figures.FIGURES[name](world, task)
            panels = {ax.get_title(): {l.get_label() for a, l in _lines(fig) if a is ax} for ax in fig.axes}
            # tiny-gpt-neo does not fit 600 tokens: absent there, present at 300
            assert "tiny-gpt-neo" not in panels["hf, n=600"] and "tiny-gpt-neo" in panels["hf, n=300"]
            for _, line in _lines(fig):
                if line.get_label().startswith("chance"):
                    continue
                want = figures.model_style(world, line.get_label())
                got = (mcolors.to_hex(line.get_color()), line.get_linestyle(), line.get_marker())
                assert got == (mcolors.to_hex(want["color"]), {"-": "-", "--": "--"}[want["linestyle"]], want["marker"])
                seen.setdefault(line.get_label(), set()).add(got)
            # the legend names exactly the models drawn, each once
            legend = [t.get_text() for t in fig.legends[0].get_texts()]
            assert sorted(l for l in legend if not l.startswith("chance")) == [
                "tiny-gpt-neo",
                "tiny-mamba",
                "tiny-pythia",
            ]
    assert all(len(styles) == 1 for styles in seen.values()), seen
    assert len({s.pop()[0] for s in seen.values()}) == 3  # three distinct colours
    # TBMs solid, SSMs dashed
    assert figures.model_style(world, "tiny-pythia")["linestyle"] == "-"
    assert figures.model_style(world, "tiny-mamba")["linestyle"] == "--"


def test_fig1_range_fits_data_and_label_is_plain(world):
    fig = figures.fig1_layerwise_cosine(world, None)
    image = fig.axes[0].get_images()[0]
    lo, hi = image.get_clim()
    assert lo == pytest.approx(0.3) and hi == pytest.approx(0.95)  # the constructed layerwise cosines
    label = fig.axes[-1].get_ylabel()
    assert "^" not in label and "$" not in label and "{" not in label


def test_fig3_title_names_the_arms_that_ran(world, tmp_path):
    title = figures.fig3_pretrained_vs_random(world, None)._suptitle.get_text()
    assert "arms run: pretrained, random" in title
    # with only the pretrained arm configured, the title says so (no "vs random")
    raw = dict(world.raw)
    raw["inits"] = raw["inits"][:1]
    title = figures.fig3_pretrained_vs_random(validate_config(raw), None)._suptitle.get_text()
    assert "arms run: pretrained (" in title and "random" not in title


def test_a_custom_task_draws_at_its_own_length_with_its_models(world):
    """qword (demo: tiny-pythia and tiny-mamba, length 40): every figure draws; Fig. 7 has one panel,
    n=40, with those two models; the mean-over-tasks figures keep the paper's lengths."""
    for name, draw in figures.FIGURES.items():
        draw(world, "qword")
    fig = figures.fig7_probe_accuracy(world, "qword")
    panels = {ax.get_title(): {l.get_label() for a, l in _lines(fig) if a is ax} for ax in fig.axes if ax.get_title()}
    assert panels == {"hf, n=40": {"tiny-pythia", "tiny-mamba", "chance 1/C"}}
    mean = figures.fig7_probe_accuracy(world, None)
    assert {ax.get_title() for ax in mean.axes if ax.get_title()} == {"hf, n=300", "hf, n=600"}


def test_state_axes_say_what_state_0_is(world, tmp_path):
    """State 0 is read from the curves drawn: the hf view of Mamba starts at block 1, not at the
    embeddings (world: tiny-pythia, tiny-mamba, hf)."""
    import pandas as pd

    for path in tmp_path.rglob("inter_token_cosine.csv"):  # name the states as a real run does
        frame = pd.read_csv(path)
        names = [f"block_{i + 1}" for i in range(len(frame))] if "tiny-mamba" in str(path) else None
        frame["state_name"] = names or ["embed"] + [f"block_{i}" for i in range(1, len(frame))]
        frame.to_csv(path, index=False)
    fig2 = figures.fig2_inter_token_cosine(world, None)
    assert {ax.get_xlabel() for ax in fig2.axes if ax.get_xlabel()} == {
        "relative depth (0 = embeddings; block 1 where the view has none)"
    }
    fig3 = figures.fig3_pretrained_vs_random(world, None)
    by_model = {ax.get_title().split(" ")[0]: ax.get_xlabel() for ax in fig3.axes if ax.get_title()}
    assert by_model["tiny-mamba"] == "state (0 = block 1)" and by_model["tiny-pythia"] == "state (0 = embeddings)"
    fig7 = figures.fig7_probe_accuracy(world, None)  # the world's probes name their states s0, s1, ...: no claim
    assert {ax.get_xlabel() for ax in fig7.axes if ax.get_xlabel()} == {"state"}


def _outside(fig) -> list[str]:
    """Title and legend texts of ``fig`` that reach beyond its left or right edge."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [fig._suptitle, *(t for legend in fig.legends for t in legend.get_texts())]
    return [
        t.get_text()
        for t in texts
        if t.get_window_extent(renderer).x0 < 0 or t.get_window_extent(renderer).x1 > fig.bbox.width
    ]


def test_one_column_figures_fit_their_title_and_legend(world):
    """A custom task's figures have one column (one length): 3.6 inches, narrower than the title
    ("Fig. 7: probe accuracy by layer (init pretrained; qword)") and the legend; before the fix
    both were cut at the edges of the saved image."""
    for name, draw in figures.FIGURES.items():
        fig = draw(world, "qword")
        figures.fit_width(fig)
        assert _outside(fig) == [], name
        plt.close(fig)
