"""The Snakemake entry points: dry run of the paper config, and bad configs."""

import re

import yaml

from reprflow.config import PROJECT_ROOT


def test_paper_dry_run_prints_the_whole_dag_offline(workdir, run_snakemake):
    run = run_snakemake(workdir, "-n", "--cores", "8", "results/table1.csv")
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout + run.stderr
    # 14 prompt sets; 36 table cells (2 transformers x 3 lengths + 3 SSMs x 4 lengths) x 2 tasks, pretrained,
    # probed; + 50 Fig. 3 cells (5 models x 5 fig3 inits, random included, x 2 tasks at 2K): the tables
    # rule takes every cell's token metrics, which the extraction jobs write (extraction.tokens: stream)
    for rule, count in (("prompts", 14), ("extract_activations", 36 + 50), ("probes", 36)):
        assert any(line.split() == [rule, str(count)] for line in out.splitlines()), (rule, out[-2000:])
    # extraction.tokens: stream -- the extraction jobs write the token metrics (tests/workflow/test_stream.py)
    assert not any(line.split()[:1] == ["token_metrics"] for line in out.splitlines()), out[-2000:]
    assert "skipping gpt-neo-2.7b at 4096 tokens" in out
    # no --resources: one GPU job per visible GPU (none here: 1), and the disk estimate
    assert "reprflow: gpu resource: 1 " in out and "reprflow: disk: 86 activation store(s) to build" in out
    assert re.search(r"^    priority: [1-9]\d*$", out, flags=re.M) or "not counted" in out
    assert not (workdir / "results").exists() and not (workdir / "data" / "prompts").exists()


def test_invalid_config_one_message_nonzero_nothing_written(workdir, run_snakemake):
    with open(PROJECT_ROOT / "config" / "demo.yaml") as fh:
        raw = yaml.safe_load(fh)
    raw["lengths"] = [300, -1]
    bad = workdir / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    run = run_snakemake(workdir, "--cores", "1", "--configfile", str(bad))
    assert run.returncode != 0
    messages = [line for line in (run.stdout + run.stderr).splitlines() if "invalid config" in line]
    assert messages == ["reprflow: invalid config: config.lengths[1]: must be >= 1, got -1"], run.stderr[-2000:]
    assert not (workdir / "results").exists() and not (workdir / "data" / "models").exists()


def test_a_bad_custom_record_stops_the_run_before_any_job(workdir, run_snakemake):
    raw = yaml.safe_load((PROJECT_ROOT / "config" / "demo.yaml").read_text())
    (workdir / "mine.jsonl").write_text('{"prompt": "a", "label": 0}\n{"prompt": "b", "label": "1"}\n')
    raw["custom_tasks"]["qword"]["jsonl"] = "mine.jsonl"
    (workdir / "bad.yaml").write_text(yaml.safe_dump(raw))
    run = run_snakemake(workdir, "--cores", "1", "--configfile", "bad.yaml")
    assert run.returncode != 0
    messages = [line for line in (run.stdout + run.stderr).splitlines() if "invalid config" in line]
    assert messages == [
        "reprflow: invalid config: config.custom_tasks.qword.jsonl: mine.jsonl line 2: 'label' must be "
        "an int >= 0 (the probe's class), got '1'; write it as a bare integer (no quotes, no decimals), "
        'e.g. "label": 1'
    ], run.stderr[-2000:]
    assert not (workdir / "runs").exists()
