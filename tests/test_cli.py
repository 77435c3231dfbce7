"""The ``reprflow`` command: extract -> metrics -> probe over files, on a tiny model, on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from reprflow.cli import build_parser, main
from reprflow.collect import collect_states
from reprflow.models.tiny import build_tiny_model
from reprflow.prompts import load_tokenizer
from reprflow.store import open_store

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_model("gpt_neox", out_dir=tmp_path_factory.mktemp("models") / "neox", seed=0)


def _prompts(n: int = 24) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {"prompt": " ".join(rng.choice(WORDS, 10 + i % 4)) + (" yes" if i % 2 else " no"), "label": i % 2}
        for i in range(n)
    ]


def test_extract_metrics_probe(tmp_path, tiny_model, capsys):
    records = _prompts()
    prompts = tmp_path / "mine.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in records))
    store = tmp_path / "acts.zarr"
    assert (
        main(
            [
                "-q",
                "extract",
                str(prompts),
                str(tiny_model),
                "-o",
                str(store),
                "--tokenizer",
                "gpt-neox-20b",
                "--token-prompts",
                "4",
                "--store-dtype",
                "float32",
                "--device",
                "cpu",
                "--batch-size",
                "5",
            ]
        )
        == 0
    )
    assert (
        f"{store}: 24 prompts, 6 states x 64 features (float32), token states of 4 prompts" in capsys.readouterr().out
    )

    group = open_store(store)
    assert group.attrs["task"] == "mine" and group.attrs["family"] == "gpt_neox"
    np.testing.assert_array_equal(group["labels"][:], [r["label"] for r in records])
    # the stored last-token states are the model's: the in-memory API gives the same numbers
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    ref = collect_states(model, load_tokenizer("gpt-neox-20b"), [r["prompt"] for r in records], view="hf", device="cpu")
    hf = group.attrs["views"]["hf"]
    np.testing.assert_allclose(group["last"][:][hf], ref.states, rtol=1e-5, atol=1e-5)

    metrics = tmp_path / "metrics"
    assert main(["-q", "metrics", str(store), "-o", str(metrics), "--bins", "8"]) == 0
    written = [Path(p) for p in capsys.readouterr().out.split()]
    assert written and all(p.is_file() and p.is_relative_to(metrics) for p in written)
    assert {p.suffix for p in written} >= {".csv", ".npy", ".json"}

    # the same metrics streamed during extraction (no token states stored) equal store-then-compute
    streamed = tmp_path / "streamed"
    assert (
        main(
            [
                "-q",
                "extract",
                str(prompts),
                str(tiny_model),
                "-o",
                str(tmp_path / "lean.zarr"),
                "--tokenizer",
                "gpt-neox-20b",
                "--token-prompts",
                "4",
                "--stream-metrics",
                str(streamed),
                "--bins",
                "8",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert open_store(tmp_path / "lean.zarr").attrs["token_prompt_ids"] == []
    for path in written:
        twin = streamed / path.name
        if path.suffix == ".npy":
            np.testing.assert_allclose(np.load(twin), np.load(path), rtol=1e-6, atol=1e-9, err_msg=path.name)
        elif path.suffix == ".csv":
            a, b = pd.read_csv(path), pd.read_csv(twin)
            num = [c for c in a.columns if pd.api.types.is_float_dtype(a[c])]
            assert num, path.name
            np.testing.assert_allclose(b[num].to_numpy(), a[num].to_numpy(), rtol=1e-6, atol=1e-9, err_msg=path.name)
    capsys.readouterr()
    # the lean store has no token states: `metrics` on it says why and what to do
    assert main(["-q", "metrics", str(tmp_path / "lean.zarr"), "-o", str(tmp_path / "m2")]) == 1
    assert "token metrics streamed" in capsys.readouterr().err

    out = tmp_path / "probes.csv"
    assert (
        main(["-q", "probe", str(store), "-o", str(out), "--epochs", "10", "--seeds", "0", "1", "--device", "cpu"]) == 0
    )
    table = pd.read_csv(out)
    assert set(table["view"]) == {"hf", "residual"} and set(table["seed"]) == {0, 1}
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["hf"]["n_train"] + summary["hf"]["n_val"] == 24
    assert "hf: peak" in capsys.readouterr().out


def test_text_file_is_one_prompt_a_line_without_labels(tmp_path, tiny_model, capsys):
    prompts = tmp_path / "lines.txt"
    prompts.write_text("the first prompt\n\nand a second one here\n")
    store = tmp_path / "t.zarr"
    assert (
        main(
            [
                "-q",
                "extract",
                str(prompts),
                str(tiny_model),
                "-o",
                str(store),
                "--tokenizer",
                "gpt-neox-20b",
                "--token-prompts",
                "0",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    group = open_store(store)
    np.testing.assert_array_equal(group["labels"][:], [-1, -1])
    assert group.attrs["token_prompt_ids"] == [] and group.attrs["task"] == "lines"
    assert main(["-q", "probe", str(store), "-o", str(tmp_path / "p.csv"), "--device", "cpu"]) == 1
    assert f"{store}: 2 of 2 prompts have no label (stored as -1" in capsys.readouterr().err


def test_workflow_prompt_set_keeps_its_task_and_length(tmp_path, tiny_model):
    from reprflow.prompts.dataset import write_prompt_set

    tok = load_tokenizer("gpt-neox-20b")
    records = []
    for i, r in enumerate(_prompts(6)):
        n = len(tok(r["prompt"])["input_ids"])
        records.append(
            {
                "id": f"kvpr-{i}",
                "task": "kvpr",
                "prompt": r["prompt"],
                "label": r["label"],
                "n_items": 2,
                "n_tokens": n,
                "answer": "v",
                "group": i,
            }
        )
    path = write_prompt_set(records, {"task": "kvpr", "target_tokens": 16}, tmp_path / "kvpr_n16.jsonl")
    store = tmp_path / "k.zarr"
    assert (
        main(
            [
                "-q",
                "extract",
                str(path),
                str(tiny_model),
                "-o",
                str(store),
                "--tokenizer",
                "gpt-neox-20b",
                "--token-prompts",
                "0",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    attrs = open_store(store).attrs
    assert (attrs["task"], attrs["length"], attrs["tokenizer"]) == ("kvpr", 16, "gpt-neox-20b")


def test_bad_input_is_one_line_naming_the_culprit(tmp_path, tiny_model, capsys):
    prompts = tmp_path / "bad.jsonl"
    prompts.write_text(
        json.dumps({"prompt": "fine", "label": 0}) + "\n" + json.dumps({"prompt": "x", "label": "3"}) + "\n"
    )
    args = [
        "extract",
        str(prompts),
        str(tiny_model),
        "-o",
        str(tmp_path / "s.zarr"),
        "--tokenizer",
        "gpt-neox-20b",
        "--device",
        "cpu",
    ]
    assert main(["-q", *args]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith(
            f"reprflow extract: error: {prompts} line 2: 'label' must be an int >= 0 (the probe's class), "
            "got '3'; write it as a bare integer"
        )
        and "\n" not in err
    )
    assert not (tmp_path / "s.zarr").exists()
    nowhere = tmp_path / "no-model"
    assert main(["-q", "extract", str(prompts), str(nowhere), "-o", str(tmp_path / "s.zarr"), "--device", "cpu"]) == 1
    assert f"MODEL '{nowhere}': no tokenizer could be loaded from it" in capsys.readouterr().err
    assert main(["-q", *args[:5], "--device", "cpu"]) == 1  # the tiny model's folder holds no tokenizer files
    assert f"MODEL '{tiny_model}': no tokenizer could be loaded from it (no tokenizer files)" in capsys.readouterr().err
    assert main(["-q", "probe", str(tmp_path / "missing.zarr"), "-o", str(tmp_path / "p.csv")]) == 1
    assert capsys.readouterr().err.startswith("reprflow probe: error: ")


@pytest.mark.parametrize("suffix", [".jsonl", ".txt"])
def test_a_prompt_file_not_in_utf8_is_one_line_naming_it(tmp_path, suffix, capsys):
    prompts = tmp_path / f"latin1{suffix}"
    prompts.write_bytes("caf\u00e9 au lait\n".encode("latin-1"))
    out = tmp_path / "s.zarr"
    args = ["-q", "extract", str(prompts), str(tmp_path / "model"), "-o", str(out), "--tokenizer", "gpt2"]
    assert main([*args, "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert (
        err
        == f"reprflow extract: error: {prompts} line 1: not UTF-8 text (byte 0xe9 at offset 3); save the file as UTF-8\n"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    "command, option, value",
    [
        ("extract", "--batch-size", "0"),
        ("extract", "--token-prompts", "-1"),
        ("extract", "--bins", "0"),
        ("metrics", "--bins", "0"),
        ("probe", "--epochs", "0"),
        ("probe", "--seeds", "-1"),
        ("probe", "--seeds", str(2**64)),  # before: an overflow blamed on the store, "delete it"
        ("extract", "--seed", str(2**32)),  # before: an 18-line traceback
        ("probe", "--n-train", "two"),
        ("probe", "--val-fraction", "1.5"),  # before: exit 1 from inside the probe code
        ("probe", "--lr", "-1"),
    ],
)
def test_an_option_out_of_range_is_refused_by_name(command, option, value, capsys):
    inputs = ["p.jsonl", "model"] if command == "extract" else ["s.zarr"]
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([command, *inputs, "-o", "out", option, value])
    assert exc.value.code == 2
    assert f"argument {option}: expected a" in capsys.readouterr().err


def test_an_output_path_the_file_system_refuses_is_one_line(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "results"
    blocker.write_text("a file where a folder is needed")

    def write_beside_it(store, out_csv, **_):  # the stage's first write: the CSV's folder
        out_csv.parent.mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr("reprflow.pipeline.probe_stage.run_probe_stage", write_beside_it)
    assert main(["-q", "probe", str(tmp_path / "s.zarr"), "-o", str(blocker / "p.csv")]) == 1
    err = capsys.readouterr().err
    assert err == f"reprflow probe: error: [Errno 17] File exists: '{blocker}'\n"


@pytest.mark.parametrize("command", ["extract", "metrics", "probe"])
def test_every_command_documents_itself(command, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: reprflow {command}") and "--out" in text and "--device" in text


def test_extract_refuses_a_foreign_output_before_loading_anything(tmp_path, capsys):
    """-o naming a folder of other data is refused first: no model or tokenizer is looked for."""
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "fine", "label": 0}) + "\n")
    results = tmp_path / "results"
    results.mkdir()
    (results / "thesis.tex").write_text("precious")
    assert main(["-q", "extract", str(prompts), str(tmp_path / "no-model"), "-o", str(results)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"reprflow extract: error: {results}: exists and is a folder that is not a Zarr store")
    assert "no-model" not in err and (results / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize("out", ["summary.json", "", "."])
def test_probe_output_must_be_a_csv_path(tmp_path, monkeypatch, capsys, out):
    """Refused before the store is read: before, `-o X.json` wrote the CSV over X.json and crashed."""
    monkeypatch.chdir(tmp_path)
    assert main(["-q", "probe", "missing.zarr", "-o", out]) == 1
    err = capsys.readouterr().err
    assert "must be a CSV file path" in err and "missing.zarr" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_stream_metrics_problems_are_found_before_the_forward_passes(tmp_path, tiny_model, capsys):
    """An unusable --stream-metrics folder, and token prompts too short for the metrics, stop the
    command before any forward pass: no store, no partial store (before: both after the extraction)."""
    prompts = tmp_path / "short.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": w, "label": i % 2}) + "\n" for i, w in enumerate(WORDS)))
    blocker = tmp_path / "metrics"
    blocker.write_text("a file where the metrics folder goes")
    store = tmp_path / "s.zarr"
    common = [str(prompts), str(tiny_model), "-o", str(store), "--tokenizer", "gpt-neox-20b", "--device", "cpu"]
    assert main(["-q", "extract", *common, "--stream-metrics", str(blocker)]) == 1
    err = capsys.readouterr().err
    assert f"--stream-metrics '{blocker}' is a file, not a folder" in err
    assert main(["-q", "extract", *common, "--stream-metrics", str(tmp_path / "m"), "--token-prompts", "4"]) == 1
    err = capsys.readouterr().err
    assert "token prompt 0 has 1 tokens" in err and "debiased CKA >= 4" in err and "--no-debiased-cka" in err
    assert not store.exists() and not Path(f"{store}.partial").exists()


def test_config_seeds_are_bounded_and_distinct():
    import yaml

    from reprflow.config import PROJECT_ROOT, validate_config
    from reprflow.errors import ConfigError

    raw = yaml.safe_load((PROJECT_ROOT / "config" / "demo.yaml").read_text())
    with pytest.raises(ConfigError, match=r"probes\.seeds"):
        validate_config({**raw, "probes": {**raw.get("probes", {}), "seeds": [0, 0]}})
    with pytest.raises(ConfigError, match=r"seed"):
        validate_config({**raw, "seed": 2**64})


def test_a_hub_id_offline_without_tokenizer_is_one_error_at_once(tmp_path, monkeypatch, capsys):
    """MODEL a hub id, no --tokenizer, no hub: before, transformers retried for ~50 s and logged ~44
    warnings; now the tokenizer goes through the model loader's cache-then-hub path."""
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "alpha beta", "label": 0}) + "\n")
    t0 = time.perf_counter()
    assert main(["-q", "extract", str(prompts), "EleutherAI/pythia-160m", "-o", str(tmp_path / "o.zarr")]) == 1
    assert time.perf_counter() - t0 < 10
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not in the local Hugging Face cache and the hub is unreachable" in err[0]
    assert "hf download EleutherAI/pythia-160m" in err[0] and "pass its path as MODEL" in err[0]


def test_a_model_folder_extract_cannot_trust_is_one_line_and_no_store(tmp_path, tiny_model, capsys):
    import shutil

    prompts = tmp_path / "good.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in _prompts(4)))
    wrong = tmp_path / "wrongw"  # mamba weights under a gpt_neox config.json
    build_tiny_model("mamba", out_dir=wrong, seed=0)
    shutil.copy(tiny_model / "config.json", wrong / "config.json")
    truncated = shutil.copytree(tiny_model, tmp_path / "truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    cases = [
        (wrong, [], f"model '{wrong}' (MODEL): the weights in {wrong} do not match its config.json"),
        (truncated, [], f"{weights} is damaged or truncated (Error while deserializing header: "),
        (tiny_model, ["--revision", "main"], f"--revision/revision applies to hub ids; '{tiny_model}' is a local"),
    ]
    for model, extra, expected in cases:
        out = tmp_path / f"{model.name}.zarr"
        args = ["-q", "extract", str(prompts), str(model), "-o", str(out), "--tokenizer", "gpt-neox-20b"]
        assert main([*args, "--device", "cpu", *extra]) == 1
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]  # above it at most transformers' progress bar
        assert last.startswith("reprflow extract: error: ") and expected in last, err
        assert "Traceback" not in err and "LOAD REPORT" not in err and not out.exists()
