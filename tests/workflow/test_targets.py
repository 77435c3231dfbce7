"""Target lists: the matrix from the config, with lengths beyond a model's context skipped."""

from reprflow.config import PROJECT_ROOT, load_config
from reprflow.workflow.targets import Cell, cells, figure_files, prompt_files


def test_paper_matrix_skips_lengths_beyond_context():
    cfg = load_config(PROJECT_ROOT / "config" / "config.yaml")
    got = cells(cfg)
    # 2 transformers x 3 lengths + 3 SSMs x 4 lengths, each x 2 inits x 2 tasks
    assert len(got) == (2 * 3 + 3 * 4) * 2 * 2
    assert Cell("gpt-neo-2.7b", "pretrained", "kvpr", 4096) not in got
    assert Cell("mamba-2.8b", "random", "mdqa", 4096) in got


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
    assert len(figs) == 5 * 3
