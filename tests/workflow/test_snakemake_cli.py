"""The Snakemake entry points: dry run of the paper config, and bad configs."""

import re

import yaml

from reprflow.config import PROJECT_ROOT


def test_paper_dry_run_prints_the_whole_dag_offline(workdir, run_snakemake, monkeypatch):
    """The paper config's DAG on a simulated 8-GPU node (CUDA_VISIBLE_DEVICES; no GPU here)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", ",".join(map(str, range(8))))
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
    # no --resources: execution.jobs_per_gpu (2) GPU jobs per visible GPU, and the disk estimate
    assert "reprflow: gpu resource: 16 (2 GPU job(s) per visible GPU" in out
    assert "reprflow: disk: 86 activation store(s) to build" in out
    # longest first: tokens forwarded x model size; a Fig. 3 cell forwards its 64 token prompts only
    priority = {}
    for block in re.split(r"\n(?=\S)", out):
        if block.startswith("rule extract_activations:"):
            cell = re.search(r"wildcards: model=(\S+), init=(\S+), task=(\S+), length=(\d+)", block).groups()
            priority[cell] = int(re.search(r"^    priority: (\d+)$", block, flags=re.M).group(1))
    assert len(priority) == 86
    first = max(priority, key=priority.get)
    assert first[0] in ("mamba-2.8b", "mamba2-2.7b") and first[3] == "4096", first
    for model in {c[0] for c in priority}:
        full = [v for c, v in priority.items() if c[0] == model and c[1] == "pretrained"]
        fig3 = [v for c, v in priority.items() if c[0] == model and c[1] != "pretrained"]
        assert len(fig3) == 10 and max(fig3) < min(full), model
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


def test_a_local_model_read_past_its_window_stops_the_dry_run(workdir, run_snakemake):
    """Known from its config.json, before any job: not after a GPU job was scheduled."""
    raw = yaml.safe_load((PROJECT_ROOT / "config" / "demo.yaml").read_text())
    (workdir / "mine").mkdir()
    (workdir / "mine" / "config.json").write_text('{"model_type": "gpt_neox", "max_position_embeddings": 512}')
    raw["models"].append({"name": "mine", "family": "gpt_neox", "hf_id": "mine", "tokenizer": "gpt-neox-20b"})
    (workdir / "bad.yaml").write_text(yaml.safe_dump(raw))
    run = run_snakemake(workdir, "-n", "--cores", "1", "--configfile", "bad.yaml")
    assert run.returncode != 0
    messages = [line for line in (run.stdout + run.stderr).splitlines() if "invalid config" in line]
    assert messages == [
        f"reprflow: invalid config: config.models[{len(raw['models']) - 1}] (mine): its prompts may have up to "
        "630 tokens at length 600, beyond its context window of 512 tokens (read from mine/config.json); set "
        "`max_context: 512` in that entry (its prompts are then cut to fit and longer lengths skipped)"
    ], run.stderr[-2000:]
