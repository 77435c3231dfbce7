"""Report formatting: no float noise, small values stay readable, tiny models are named."""

import numpy as np
import pandas as pd
import yaml

from reprflow.config import PROJECT_ROOT, validate_config
from reprflow.pipeline.findings import Check, Verdict
from reprflow.pipeline.report import (
    beyond_noise,
    controlled_verdict,
    family_answers,
    format_value,
    markdown_table,
    model_notes,
    paper_agreement,
)


def test_values_keep_three_significant_figures_without_noise():
    assert format_value(3.1234e-05) == "3.12e-05"
    assert format_value(0.93812) == "0.938"
    assert format_value(0.0) == "0" and format_value(np.nan) == "" and format_value(7) == "7"
    table = markdown_table(pd.DataFrame({"gap": [0.0, 0.25], "Sm": [3.04e-05, 1.945]}))
    assert "e-17" not in table and "3.04e-05" in table and "| 0 |" in table


TRAIN = {
    "corpus": "nq_open",
    "width": 64,
    "depth": 2,
    "context": 128,
    "batch_size": 4,
    "tokens": 24576,
    "lr": 0.01,
    "warmup_steps": 5,
    "seed": 3,
    "eval_every": 16,
    "eval_tokens": 4096,
    "checkpoint_every": 16,
}


def _demo_with_trained_models(indices):
    """The demo config with the models at ``indices`` trained (``train:``) instead of built (``tiny:``)."""
    with open(PROJECT_ROOT / "config" / "demo.yaml") as fh:
        raw = yaml.safe_load(fh)
    for i in indices:
        raw["models"][i] = {k: v for k, v in raw["models"][i].items() if k != "tiny"} | {"train": dict(TRAIN)}
    return raw


def test_tiny_trained_and_untrained_models_are_named():
    raw = _demo_with_trained_models([2])
    notes = "\n".join(model_notes(validate_config(raw)))
    assert "tiny-mamba** (mamba): TRAINED BY THIS WORKFLOW from scratch" in notes
    raw["models"][2] = {k: v for k, v in raw["models"][2].items() if k != "train"} | {
        "tiny": {"seed": 3},
        "tokenizer": "gpt-neox-20b",
    }
    notes = "\n".join(model_notes(validate_config(raw)))
    assert "tiny-mamba** (mamba): a TINY RANDOM model" in notes
    assert "Untrained arms (random initialisation, no training): random." in notes


def test_html_pages_and_markdown_report_from_metric_files(tmp_path):
    """Verdicts, tables, provenance and theory pages from constructed metric files (test_findings.py)."""
    import importlib.util
    from pathlib import Path

    from reprflow.pipeline.findings import write_findings
    from reprflow.pipeline.report import write_html_tables, write_report
    from reprflow.workflow.targets import FINDINGS, HTML_TABLES

    spec = importlib.util.spec_from_file_location("_findings_world", Path(__file__).with_name("test_findings.py"))
    world = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(world)
    raw = _demo_with_trained_models([1, 2, 3])
    raw["models"], raw["metrics"]["views"] = raw["models"][1:], ["hf"]
    config = validate_config(raw)
    world._world(tmp_path, config, world.SUPPORTS)
    write_findings(config, tmp_path / FINDINGS, root=tmp_path)
    paths = {k: tmp_path / v for k, v in HTML_TABLES.items()}
    write_html_tables(config, paths, root=tmp_path)
    page = paths["findings"].read_text()
    assert "class='text supports'><b>supports</b>" in page and "F3.4.3" in page and "not run" in page
    table1 = paths["table1"].read_text()
    assert "<th>Sm_rel</th>" in table1 and "<dt>chance</dt>" in table1 and "TRAINED BY THIS WORKFLOW" in table1
    assert "The theory check was not run." in paths["theory"].read_text()
    assert config.digest() in paths["provenance"].read_text()
    summary = tmp_path / "results" / "training" / "tiny-pythia" / "summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text('{"n_params": 3319552, "final_val_loss": 6.5, "unigram_val_loss": 7.7, "tokens": 1000}')
    write_report(config, tmp_path / "results" / "report.md", root=tmp_path)
    text = (tmp_path / "results" / "report.md").read_text()
    assert "## Controlled comparison: models trained by this workflow" in text
    assert "| tiny-pythia | gpt_neox | 3.32e+06 |" in text and "| 1.2 |" in text  # unigram - val loss
    assert "### Trained against random" in text and "inter_token_last" in text
    assert "probe_differs" in text and "**Trained differs from untrained beyond noise in " in text
    assert "## Verdicts on the paper's findings" in text and "**F3.2.1 / pretrained / hf: supports**" in text


def _controlled(mean_se=0.001, **random_last):
    """A controlled_table-shaped frame: four families, trained and random arms."""
    rows = []
    means = {"gpt_neo": (0.5, 0.4), "gpt_neox": (0.45, 0.35), "mamba": (0.2, 0.01), "mamba2": (0.25, 0.05)}
    for family, (trained, random) in means.items():
        for arm, value in (("pretrained", trained), ("random", random)):
            last = random_last.get(family, value) if arm == "random" else value
            rows.append(
                {
                    "model": f"m-{family}",
                    "family": family,
                    "arm": arm,
                    "inter_token_last": last,
                    "inter_token_last_se": 0.01,
                    "inter_token_mean": value,
                    "inter_token_mean_se": mean_se,
                    "peak_acc": 0.5,
                    "peak_acc_std": 0.0,
                    "differs": "" if arm == "pretrained" else "yes",
                    "probe_differs": "" if arm == "pretrained" else "n/a",
                }
            )
    return pd.DataFrame(rows)


def _random_means(frame, **means):
    """``frame`` with the random arm's ``inter_token_mean`` of some families replaced."""
    frame = frame.copy()
    for family, value in means.items():
        frame.loc[(frame.family == family) & (frame.arm == "random"), "inter_token_mean"] = value
    return frame


def test_paper_agreement_gives_each_statement_a_verdict_with_its_numbers():
    text = "\n".join(paper_agreement(_controlled()))
    assert "**agrees**: lowest Transformer m-gpt_neox 0.35 - highest SSM m-mamba2 0.05 = 0.3 (3 SE 0.0042)" in text
    assert "Training raises m-mamba's smoothing (SSM, vs random): **agrees**" in text
    assert "= 0.19 (3 SE 0.042)" in text
    # an SSM whose trained arm is no smoother than its random one disagrees; an SSM above a Transformer too
    flipped = "\n".join(paper_agreement(_random_means(_controlled(mamba2=0.3), mamba2=0.5)))
    assert "Training raises m-mamba2's smoothing (SSM, vs random): **disagrees**" in flipped
    assert "**disagrees**: lowest Transformer m-gpt_neox 0.35 - highest SSM m-mamba2 0.5 = -0.15" in flipped


def test_paper_agreement_ordering_is_decided_only_beyond_noise():
    """The demo's case: lowest Transformer 0.0256 vs highest SSM 0.0235 with SEs of ~0.005: a gap
    of 0.002 inside 3 combined SE (0.021) is within noise, not agreement; the same gap with tiny SEs
    agrees; without an SE nothing is decided."""
    frame = _random_means(_controlled(mean_se=0.005), gpt_neo=0.0256, gpt_neox=0.0435, mamba=0.0235, mamba2=0.0128)
    text = "\n".join(paper_agreement(frame))
    assert (
        "**within noise** (inconclusive): lowest Transformer m-gpt_neo 0.0256 - highest SSM m-mamba 0.0235 "
        "= 0.0021 (3 SE 0.021)" in text
    )
    assert "**agrees**: lowest Transformer" not in text
    tight = "\n".join(paper_agreement(frame.assign(inter_token_mean_se=0.0001)))
    assert "**agrees**: lowest Transformer m-gpt_neo 0.0256 - highest SSM m-mamba 0.0235" in tight
    none = "\n".join(paper_agreement(frame.drop(columns="inter_token_mean_se")))
    assert "not decided (no noise estimate): lowest Transformer m-gpt_neo 0.0256" in none and "(3 SE n/a)" in none


def test_paper_agreement_labels_the_reference_numbers_as_the_projects_not_the_papers():
    lines = paper_agreement(_controlled())
    header = lines[2]
    assert "paper checkpoint" not in header
    assert "full-size random init, measured by this project (BENCHMARKS.md, 2026-11-22)" in header
    assert "paper's own reading, Fig. 3 random init" in header
    text = "\n".join(lines)
    # the project's numbers next to the paper's reading; trained rows carry neither
    assert "| m-gpt_neo | gpt_neo | random | 0.4 | 0.003 | 0.35 | 0.75-1 (75-100 %) |" in text
    assert "| m-mamba2 | mamba2 | random | 0.05 | 0.003 | 0.086 | 0-0.25 (0-25 %) |" in text
    assert "| m-mamba | mamba | random | 0.01 | 0.003 | 0.004* | not shown |" in text
    assert "| m-gpt_neo | gpt_neo | pretrained | 0.5 | 0.003 |  |  |" in text
    assert "The full-size column is not the paper's" in text and "benchmarks/results/paper_check_curves.csv" in text
    assert "random GPT-Neo 0.75-1 (75-100 %), random Mamba2 0-0.25 (0-25 %)" in text


def test_curve_summary_leaves_out_the_embeddings_as_the_findings_do():
    """Mean over depth = every state after ``embed`` (F3.2.3's definition); a view starting at
    ``block_1`` (hf view of Mamba/Mamba2) keeps state 0. SE of the depth mean = mean per-state SE."""
    from reprflow.pipeline.report import _curve_summary

    def curve(names, means):
        return pd.DataFrame(
            {
                "model": "m",
                "init": "random",
                "length": 300,
                "view": "hf",
                "task": "kvpr",
                "state_index": range(len(names)),
                "state_name": names,
                "mean": means,
                "std": [0.4, 0.2, 0.2, 0.4],
                "n_prompts": 4,
            }
        )

    with_embed = _curve_summary(
        curve(["embed", "block_1", "block_2", "final_norm"], [0.9, 0.1, 0.2, 0.3]), "m", "random", 300, "hf"
    )
    assert np.allclose(with_embed, (0.2, 0.3, 0.2, (0.1 + 0.1 + 0.2) / 3))
    no_embed = _curve_summary(
        curve(["block_1", "block_2", "block_3", "final_norm"], [0.9, 0.1, 0.2, 0.3]), "m", "random", 300, "hf"
    )
    assert np.allclose(no_embed, (0.375, 0.3, 0.2, (0.2 + 0.1 + 0.1 + 0.2) / 4))


def test_controlled_verdict_counts_only_differences_beyond_noise():
    frame = _controlled()
    assert controlled_verdict(frame).startswith("**Trained differs from untrained beyond noise in 4 of 4")
    assert "peak probe accuracy" not in controlled_verdict(frame)  # n/a: one probe seed, no noise estimate


def test_beyond_noise_needs_a_noise_estimate():
    assert beyond_noise(0.1, 0.01, 0.02) == "yes" and beyond_noise(0.05, 0.01, 0.02) == "no"
    assert beyond_noise(0.1, 0.0, 0.0) == "n/a" and beyond_noise(float("nan"), 0.1, 0.1) == ""


def test_family_answers_give_each_model_its_own_checks_and_verdict_per_arm():
    config = validate_config(_demo_with_trained_models([0, 2]))
    neo, mamba = config.models[0].name, config.models[2].name
    contrast = Check(True, "contrast: lowest TBM body 0.9 > highest SSM early 0.3")
    verdicts = [
        Verdict("F3.2.1", "pretrained", "hf", [Check(True, f"{neo} body 0.9 >= 0.8", neo), contrast]),
        Verdict(
            "F3.2.3",
            "random",
            "hf",
            [Check(False, f"{mamba} random 0.3 <= 0.2", mamba), Check(True, f"{mamba} gain 0.4 >= 0.1", mamba)],
        ),
        Verdict("F3.3.1", "pretrained", "hf", [Check(True, f"{neo} CKA", neo)]),  # not a controlled finding
    ]
    lines = family_answers(verdicts, config)
    rows = [line for line in lines if line.startswith("| ") and "---" not in line][1:]
    assert rows == [
        f"| gpt_neo | {neo} | F3.2.1 | pretrained | **supports** | 1/1 | PASS {neo} body 0.9 >= 0.8 |",
        f"| mamba | {mamba} | F3.2.3 | random | **mixed** | 1/2 | FAIL {mamba} random 0.3 <= 0.2; "
        f"PASS {mamba} gain 0.4 >= 0.1 |",
    ]
    assert family_answers([], config) == []


def test_training_gain_within_noise_is_no_disagreement():
    """A trained-minus-untrained change inside 3 SE reads "within noise", not "disagrees"."""
    from reprflow.pipeline.report import _ordering_verdict

    assert _ordering_verdict(-0.001, 0.01, 0.01) == "**within noise** (inconclusive)"
    assert _ordering_verdict(-0.5, 0.01, 0.01) == "**disagrees**"
    assert _ordering_verdict(0.5, 0.01, 0.01) == "**agrees**"
