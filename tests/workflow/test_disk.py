"""Disk preflight: worst-case store sizes from model dims, and a run that cannot fit stops first."""

import json

import pytest
import yaml

from reprflow.config import PROJECT_ROOT, validate_config
from reprflow.workflow import disk


def _demo_raw() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "config" / "demo.yaml").read_text())


def test_estimate_is_the_float32_formula_per_cell():
    raw = _demo_raw()
    raw["models"][1]["train"].update(width=96, depth=6)  # dims from the train block (not trained yet)
    raw["extraction"]["tokens"] = "store"  # token states on disk (the stream formula: the test below)
    cfg = validate_config(raw)
    got = {(e.model, e.init, e.task, e.length): e for e in disk.estimate_stores(cfg)}
    e = got[("tiny-pythia", "pretrained", "kvpr", 300)]
    n, t, d, states = 96, 4, 96, 6 + 2
    tokens = 330  # 300 tokens + the 10% tolerance of KVPR at 300 (config prompts.tolerance_overrides)
    assert (e.dims.hidden, e.dims.n_layers, e.max_tokens) == (96, 6, tokens)
    assert e.bytes == 4 * (n * states * d + t * states * tokens * d) + 16 * n + disk.OVERHEAD_BYTES
    mdqa = got[("tiny-pythia", "pretrained", "mdqa", 600)]
    assert mdqa.max_tokens == 630  # 5% tolerance
    assert ("tiny-gpt-neo", "pretrained", "kvpr", 600) not in got  # beyond its 512-token context


def test_streamed_stores_hold_no_token_states_and_fig3_cells_only_their_token_prompts():
    raw = _demo_raw()
    raw["inits"].append({"name": "he", "scheme": "he", "scope": "fig3"})
    raw["figures"]["length"] = 300
    n, t, d, states, tokens = 96, 4, 64, 2 + 2, 330  # tiny-pythia: width 64, 2 layers
    formula = {  # (tokens setting, init) -> bytes of the tiny-pythia kvpr 300 store
        ("store", "pretrained"): 4 * (n * states * d + t * states * tokens * d) + 16 * n,
        ("stream", "pretrained"): 4 * n * states * d + 16 * n,
        ("store", "he"): 4 * (t * states * d + t * states * tokens * d) + 16 * t,
        ("stream", "he"): 4 * t * states * d + 16 * t,
    }
    for setting in ("store", "stream"):
        cfg = validate_config({**raw, "extraction": {**raw["extraction"], "tokens": setting}})
        for override in (None, setting):  # the config's own setting, or the same one passed in
            got = {(e.model, e.init, e.task, e.length): e for e in disk.estimate_stores(cfg, tokens=override)}
            for init in ("pretrained", "he"):
                e = got[("tiny-pythia", init, "kvpr", 300)]
                assert (e.n_prompts, e.n_token_prompts) == (t if init == "he" else n, 0 if setting == "stream" else t)
                assert e.bytes == formula[(setting, init)] + disk.OVERHEAD_BYTES, (setting, init)
            assert ("tiny-pythia", "he", "kvpr", 600) not in got  # fig3: the figure length only
    paper = validate_config(yaml.safe_load((PROJECT_ROOT / "config" / "config.yaml").read_text()))
    totals = {s: sum(e.bytes for e in disk.estimate_stores(paper, tokens=s)) / 2**40 for s in ("store", "stream")}
    assert 0.3 < totals["stream"] < 0.4 and 4.2 < totals["store"] < 4.9, totals  # the README's 0.36 and 4.5 TiB


def test_the_command_prints_both_settings(capsys):
    disk.main(["--configfile", str(PROJECT_ROOT / "config" / "config.yaml")])
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("all stores"))
    # the pretrained arm at full size (P), the five Fig. 3 inits at their token prompts (5 s); with the
    # random init at every length too (before 2026-12-04) it was 2 P + 4 s = 728.89 GiB, so s = 0.255
    assert "tokens: store 4.46 TiB" in line and "tokens: stream 365.21 GiB (this config)" in line, line


def test_the_command_merges_config_files_as_snakemake_does(capsys, tmp_path):
    override = tmp_path / "small.yaml"
    override.write_text("prompts: {n_prompts: 160}\nextraction: {tokens: store}\n")
    disk.main(["--configfile", str(PROJECT_ROOT / "config" / "config.yaml"), str(override)])
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("all stores"))
    # the override's tokens: store wins; 160 last-token prompts per cell instead of 25,000 (stream
    # total 3.60 GiB, not 365.21: P x 160 / 25,000 + 5 s); the 64 token prompts of the paper config
    # stay (store 4.11 TiB)
    store, stream = line.split(": ", 1)[1].split("; ")
    assert store == "tokens: store 4.11 TiB (this config)" and stream == "tokens: stream 3.60 GiB", line


def test_model_dims_from_shipped_config_or_local_folder(tmp_path, monkeypatch):
    raw = _demo_raw()
    raw["models"].append(
        {"name": "hub-model", "family": "mamba", "hf_id": "org/some-model", "tokenizer": "gpt-neox-20b"}
    )
    local = tmp_path / "local-model"
    local.mkdir()
    (local / "config.json").write_text(json.dumps({"d_model": 2560, "n_layer": 64}))
    raw["models"].append({"name": "local-model", "family": "mamba", "hf_id": str(local), "tokenizer": "gpt-neox-20b"})
    cfg = validate_config(raw)
    assert disk.model_dims(cfg.model("hub-model")) is None  # never the hub
    shipped = tmp_path / "configs"
    shipped.mkdir()
    (shipped / "org__some-model.json").write_text(json.dumps({"hidden_size": 768, "num_hidden_layers": 24}))
    monkeypatch.setattr("reprflow.models.shipped.SHIPPED_DIR", shipped)
    assert (lambda d: (d.hidden, d.n_layers))(disk.model_dims(cfg.model("hub-model"))) == (768, 24)
    assert (lambda d: (d.hidden, d.n_layers))(disk.model_dims(cfg.model("local-model"))) == (2560, 64)
    table = disk.format_table(disk.estimate_stores(cfg))
    assert "hub-model" in table and table.splitlines()[-1].startswith("total")


def test_tiny_defaults_match_the_built_models():
    from reprflow.models.tiny import tiny_config

    for family in ("gpt_neo", "gpt_neox", "mamba", "mamba2"):
        built = tiny_config(family).to_dict()
        assert (lambda d: (d.hidden, d.n_layers))(disk._dims_from(built, "tiny")) == (
            disk.TINY_DIMS["hidden"],
            disk.TINY_DIMS["n_layers"],
        ), family


def _huge(raw: dict) -> dict:
    raw["prompts"]["n_prompts"] = 10**9  # ~ 10 TB of last-token states alone
    return raw


def test_check_names_the_shortfall():
    cfg = validate_config(_huge(_demo_raw()))
    with pytest.raises(disk.DiskSpaceError, match=r"need at most .* free under .*Short by .*disk_check: false"):
        disk.check_disk(cfg)
    assert disk.check_disk(validate_config(_demo_raw())).startswith(
        "disk: 32 activation store(s)"
    )  # 28 paper-task cells + 4 of the custom task


def test_a_run_that_cannot_fit_stops_before_any_job(workdir, run_snakemake):
    (workdir / "huge.yaml").write_text(yaml.safe_dump(_huge(_demo_raw())))
    run = run_snakemake(workdir, "--cores", "1", "--configfile=huge.yaml")
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "Short by" in out, out[-3000:]
    assert not (workdir / "runs").exists() or not any((workdir / "runs").rglob("*.jsonl")), "a job ran"
    (workdir / "nocheck.yaml").write_text("execution: {disk_check: false}\n")
    dry = run_snakemake(workdir, "-n", "--cores", "1", "--configfile", "huge.yaml", "nocheck.yaml")
    assert dry.returncode == 0 and "activation store(s) to build need at most" in dry.stdout + dry.stderr


def test_a_store_is_sized_by_the_prompts_its_set_can_hold():
    """An SSM reading the GPT-NeoX prompt set at 2K gets Pythia-2.8B's 2048-token cap (the builder
    caps the set at the smallest window among the models reading it), not its own unlimited one;
    at 4K, where no Transformer reads the set, the tolerance alone bounds it."""
    paper = validate_config(yaml.safe_load((PROJECT_ROOT / "config" / "config.yaml").read_text()))
    got = {(e.model, e.init, e.task, e.length): e.max_tokens for e in disk.estimate_stores(paper)}
    assert got[("mamba-2.8b", "pretrained", "mdqa", 2048)] == got[("pythia-2.8b", "pretrained", "mdqa", 2048)] == 2048
    tolerance = paper.prompt_tolerance("mdqa", 4096)
    assert got[("mamba-2.8b", "pretrained", "mdqa", 4096)] == int(4096 * (1 + tolerance)) > 4096
