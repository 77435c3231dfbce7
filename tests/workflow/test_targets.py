"""Target lists: the matrix from the config, with lengths beyond a model's context skipped."""

import yaml

from reprflow.config import PROJECT_ROOT, load_config, validate_config
from reprflow.workflow.disk import model_dims
from reprflow.workflow.targets import (
    PROMPTS,
    Cell,
    cells,
    extraction_priority,
    gate_priority,
    figure_files,
    final_targets,
    out,
    prompt_files,
    store_paths,
    table_cells,
)


def test_paper_matrix_skips_lengths_beyond_context():
    cfg = load_config(PROJECT_ROOT / "config" / "config.yaml")
    got = cells(cfg)
    # scope all: 2 transformers x 3 lengths + 3 SSMs x 4 lengths, pretrained only, x 2 tasks;
    # scope fig3: 5 inits (random, gaussian x2, xavier, he) x 5 models x 2 tasks at figures.length only
    assert len(got) == (2 * 3 + 3 * 4) * 2 + 5 * 5 * 2
    assert len(table_cells(cfg)) == (2 * 3 + 3 * 4) * 2
    assert {c.length for c in got if c.init != "pretrained"} == {2048}
    assert Cell("gpt-neo-2.7b", "pretrained", "kvpr", 4096) not in got
    assert Cell("mamba-2.8b", "pretrained", "mdqa", 4096) in got
    assert Cell("mamba-2.8b", "random", "mdqa", 4096) not in got and Cell("mamba-2.8b", "random", "mdqa", 2048) in got


def test_prompt_files_one_per_tokenizer_task_length():
    cfg = load_config(PROJECT_ROOT / "config" / "config.yaml")
    files = prompt_files(cfg)
    assert "data/prompts/gpt2/kvpr_n2048.jsonl" in files
    assert "data/prompts/gpt2/kvpr_n4096.jsonl" not in files  # only GPT-Neo uses gpt2
    assert "data/prompts/gpt-neox-20b/mdqa_n4096.jsonl" in files
    assert len(files) == len(set(files)) == 2 * 3 + 2 * 4


def test_figures_have_task_variants():
    cfg = load_config(PROJECT_ROOT / "config" / "demo.yaml")
    figs = figure_files(cfg)
    assert "results/figures/fig4_cka.png" in figs and "results/figures/fig4_cka_mdqa.png" in figs
    assert "results/figures/fig4_cka_qword.png" in figs  # the custom task's own variant
    assert len(figs) == 5 * 4


def test_a_custom_task_runs_at_its_own_length_on_its_models():
    demo = load_config(PROJECT_ROOT / "config" / "demo.yaml")
    custom = [c for c in cells(demo) if c.task == "qword"]
    assert custom == [Cell(m, i, "qword", 40) for m in ("tiny-pythia", "tiny-mamba") for i in ("pretrained", "random")]
    assert "runs/demo/data/prompts/nq-bpe-2048/qword_n40.jsonl" in prompt_files(demo)
    assert len([f for f in prompt_files(demo) if "qword" in f]) == 1  # one tokenizer; tiny-gpt-neo does not run it
    raw = _demo_raw()
    raw["custom_tasks"]["qword"].update(models=None, length=600)  # every model, beyond tiny-gpt-neo's 512
    assert {c.model for c in cells(validate_config(raw)) if c.task == "qword"} == {
        "tiny-pythia",
        "tiny-mamba",
        "tiny-mamba2",
    }


def _demo_raw() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "config" / "demo.yaml").read_text())


def test_outputs_live_under_out_dir():
    demo = load_config(PROJECT_ROOT / "config" / "demo.yaml")
    assert final_targets(demo)[0] == "runs/demo/results/table1.csv"
    assert all(p.startswith("runs/demo/") for p in (*final_targets(demo), *prompt_files(demo)))
    assert store_paths(demo, "tiny-mamba", "random", "kvpr", 300) == [
        "runs/demo/results/activations/tiny-mamba/random/kvpr_n300.zarr"
    ]
    paper = load_config(PROJECT_ROOT / "config" / "config.yaml")
    assert final_targets(paper)[0] == "results/table1.csv" and out(paper, PROMPTS) == PROMPTS


def test_fig3_scoped_inits_only_at_the_figure_length_without_probes():
    raw = _demo_raw()
    raw["inits"].append({"name": "xavier", "scheme": "xavier", "scope": "fig3"})
    cfg = validate_config(raw)
    got, table = cells(cfg), table_cells(cfg)
    fig3 = [c for c in got if c.init == "xavier"]
    # both paper tasks at figures.length (300) for each of the 4 models, nothing at 600; the custom task
    # at its own length (its figure length) on its 2 models
    assert sorted({(c.task, c.length) for c in fig3}) == [("kvpr", 300), ("mdqa", 300), ("qword", 40)]
    assert len(fig3) == 4 * 2 + 2
    assert all(c.init != "xavier" for c in table) and len(table) == len(got) - len(fig3)
    assert len(table) == len(cells(load_config(PROJECT_ROOT / "config" / "demo.yaml")))


def test_extraction_priority_puts_the_longest_jobs_first():
    """Priority = tokens forwarded x hidden² x layers / 2**20: longer prompts, bigger models and
    full cells before Fig. 3 cells (their token prompts only), shards of a cell by their share."""
    raw = _demo_raw()
    raw["models"][1]["train"].update(width=128, depth=6)
    raw["inits"].append({"name": "xavier", "scheme": "xavier", "scope": "fig3"})
    cfg = validate_config(raw)
    dims = model_dims(cfg.model("tiny-pythia"), cfg)
    n, n_token = cfg.section("prompts")["n_prompts"], cfg.section("extraction")["n_token_prompts"]
    assert (n, n_token) == (96, 4)
    per_token = dims.hidden**2 * dims.n_layers
    assert extraction_priority(cfg, "tiny-pythia", "random", "kvpr", 600) == 96 * 600 * per_token >> 20
    assert extraction_priority(cfg, "tiny-pythia", "random", "kvpr", 600) > extraction_priority(
        cfg, "tiny-pythia", "random", "kvpr", 300
    )
    assert extraction_priority(cfg, "tiny-pythia", "random", "kvpr", 300) > extraction_priority(
        cfg, "tiny-mamba", "random", "kvpr", 300
    )
    # a Fig. 3 cell forwards 4 prompts, not 96: it goes after every full cell of the model
    assert extraction_priority(cfg, "tiny-pythia", "xavier", "kvpr", 600) == 4 * 600 * per_token >> 20
    assert extraction_priority(cfg, "tiny-pythia", "xavier", "kvpr", 600) < extraction_priority(
        cfg, "tiny-pythia", "pretrained", "mdqa", 300
    )
    # 3 shards of 96 prompts: 32 each
    assert extraction_priority(cfg, "tiny-pythia", "random", "kvpr", 600, 3) == 32 * 600 * per_token >> 20
    # a custom task counts the prompts of its own file
    custom = sum(1 for line in open(PROJECT_ROOT / cfg.custom_tasks["qword"]["jsonl"]) if line.strip())
    assert extraction_priority(cfg, "tiny-pythia", "random", "qword", 40) == custom * 40 * per_token >> 20


def test_gate_jobs_outrank_every_extraction():
    """Prompt sets and training start before any extraction job of the run (a training started
    last leaves the run ending on its model's cells)."""
    raw = _demo_raw()
    raw["models"][1]["train"].update(width=128, depth=6)
    cfg = validate_config(raw)
    top = max(extraction_priority(cfg, c.model, c.init, c.task, c.length) for c in cells(cfg))
    assert top > 0
    assert gate_priority(cfg, cells(cfg)) == top + 1
