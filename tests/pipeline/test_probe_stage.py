"""Tests for reprflow.pipeline.probe_stage on a tiny store written directly with zarr v3."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import zarr

from reprflow import __version__
from reprflow.errors import ConfigError, PromptError, StoreError
from reprflow.pipeline.probe_stage import CSV_COLUMNS, run_probe_stage
from reprflow.probes import fit_layer_probes, grouped_stratified_split
from reprflow.prompts import read_manifest, write_prompt_set

sys.path.insert(0, str(Path(__file__).parent))  # tests/pipeline/contract_store.py
from contract_store import write_contract_arrays  # noqa: E402


L, HIDDEN, N_SAMPLES, N_CLASSES = 4, 12, 240, 4
STATE_NAMES = ["embed", *[f"block_{i}" for i in range(1, L + 1)], "final_norm"]  # K_all = 6
VIEWS = {"residual": [0, 1, 2, 3, 4], "hf": [0, 1, 2, 3, 5]}  # GPT-Neo-like hf view
PLANTED = 2  # block_2: index 2 in both views
KW = dict(epochs=40, lr=0.05, seeds=(0, 1, 2), val_fraction=0.25, standardize=True, n_train=20000, device="cpu")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _write_store(path: Path, *, complete: bool = True, nan: bool = False, **attrs) -> tuple[np.ndarray, np.ndarray]:
    """A contract-shaped store (docs/CONTRACTS.md); ``attrs`` override its attributes; returns (last, labels)."""
    rng = np.random.default_rng(0)
    k_all = len(STATE_NAMES)
    labels = (rng.integers(0, N_CLASSES, N_SAMPLES) * 5).astype(np.int64)  # gold positions 0, 5, 10, 15
    last = rng.normal(size=(k_all, N_SAMPLES, HIDDEN))
    last[PLANTED] += 1.5 * rng.normal(size=(N_CLASSES, HIDDEN))[labels // 5]
    last = last.astype(np.float16)
    if nan:
        last[3, 10, 1] = np.nan
    arrays = {
        "last": last,
        "labels": labels,
        "n_tokens": np.full(N_SAMPLES, 20, dtype=np.int64),
        "tokens": np.zeros((k_all, 2, 20, HIDDEN), np.float16),
        "lengths": np.array([20, 20], dtype=np.int64),
    }
    group = write_contract_arrays(path, arrays)
    group.attrs.update(
        {
            "model": "tiny",
            "model_id": "local/tiny",
            "revision": None,
            "family": "gpt_neo",
            "init": {"scheme": "pretrained"},
            "dtype": "float16",
            "task": "kvpr",
            "length": 300,
            "tokenizer": "gpt2",
            "prompt_file": "data/prompts/gpt2/kvpr_n300.jsonl",
            "prompt_sha256": "ab" * 32,
            "reprflow_version": __version__,
            "state_names": STATE_NAMES,
            "views": VIEWS,
            "token_prompt_ids": [0, 1],
            "complete": complete,
            **attrs,
        }
    )
    return last, labels


@pytest.fixture(scope="module")
def stage_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("probes")
    store = tmp / "kvpr_n300.zarr"
    last, labels = _write_store(store)
    out = tmp / "metrics" / "probes.csv"
    result = run_probe_stage(store, out, views=("hf", "residual"), **KW)
    return store, out, last, labels, result


def test_csv_rows_are_one_fit_selected_per_view(stage_run):
    store, out, last, labels, result = stage_run
    frame = pd.read_csv(out)
    assert list(frame.columns) == CSV_COLUMNS
    assert len(frame) == sum(len(v) for v in VIEWS.values()) * len(KW["seeds"])
    direct = fit_layer_probes(last, labels, progress=False, **KW)  # same arrays, no store
    for view, idx in VIEWS.items():
        sub = frame[frame.view == view]
        for (j, seed), row in sub.set_index(["state_index", "seed"]).iterrows():
            k = idx[j]
            assert row.state_name == STATE_NAMES[k]
            s = KW["seeds"].index(seed)
            assert row.val_accuracy == direct.val_accuracy[s, k]
            assert row.train_accuracy == direct.train_accuracy[s, k]
    # the shared states (embed..block_3) have identical rows in both views
    a = frame[frame.view == "hf"].set_index(["state_name", "seed"]).val_accuracy
    b = frame[frame.view == "residual"].set_index(["state_name", "seed"]).val_accuracy
    shared = a.index.intersection(b.index)
    assert len(shared) == 4 * len(KW["seeds"])
    pd.testing.assert_series_equal(a[shared], b[shared])


def test_json_summary_matches_csv(stage_run):
    store, out, *_ = stage_run
    summary = json.loads(out.with_suffix(".json").read_text())
    frame = pd.read_csv(out)
    for view, idx in VIEWS.items():
        s = summary[view]
        curve = frame[frame.view == view].groupby("state_index").val_accuracy
        mean, std = curve.mean().to_numpy(), curve.std(ddof=0).to_numpy()
        np.testing.assert_allclose(s["mean"], mean, rtol=1e-12)
        np.testing.assert_allclose(s["std"], std, rtol=1e-9, atol=1e-12)
        assert s["peak_layer"] == int(np.argmax(mean)) == PLANTED
        assert s["peak_state"] == STATE_NAMES[idx[PLANTED]]
        assert s["last_accuracy"] == pytest.approx(mean[-1])
        assert s["gap"] == pytest.approx(mean.max() - mean[-1])
        assert s["state_names"] == [STATE_NAMES[k] for k in idx]
        assert (s["n_train"], s["n_val"], s["n_classes"]) == (180, 60, N_CLASSES)
    assert summary["hf"]["peak_accuracy"] > 0.8 and summary["hf"]["gap"] > 0.4
    prov = summary["provenance"]
    assert prov["store"] == str(store) and prov["prompt_sha256"] == "ab" * 32
    assert prov["reprflow_version"] == __version__
    assert summary["protocol"]["seeds"] == list(KW["seeds"]) and summary["protocol"]["epochs"] == KW["epochs"]
    # atomic writes leave no temporary files behind
    assert sorted(p.name for p in out.parent.iterdir()) == ["probes.csv", "probes.json"]


def test_incomplete_store_is_refused_and_nothing_written(tmp_path):
    store = tmp_path / "s.zarr"
    _write_store(store, complete=False)
    out = tmp_path / "probes.csv"
    with pytest.raises(StoreError, match="complete"):
        run_probe_stage(store, out, **KW)
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_non_finite_store_and_unknown_view_raise(tmp_path):
    bad = tmp_path / "nan.zarr"
    _write_store(bad, nan=True)
    out = tmp_path / "probes.csv"
    with pytest.raises(StoreError, match=r"nan.zarr.*NaN or inf \(first at state 3\)"):
        run_probe_stage(bad, out, **{**KW, "epochs": 1})
    good = tmp_path / "ok.zarr"
    _write_store(good)
    with pytest.raises(ConfigError, match="layer view 'mamba'"):
        run_probe_stage(good, out, views=("mamba",), **{**KW, "epochs": 1})
    with pytest.raises(ConfigError, match="The 'lr' parameter of fit_layer_probes"):
        run_probe_stage(good, out, **{**KW, "lr": -1.0})
    assert not out.exists()


@pytest.mark.parametrize(
    "labels, message",
    [
        (
            np.r_[np.zeros(N_SAMPLES - 3), [-1, 1, -1]],
            r"2 of 240 prompts have no label \(stored as -1; the first is prompt 237",
        ),
        (np.full(N_SAMPLES, 5), r"all 240 prompts have label 5; a probe needs two classes or more"),
    ],
)
def test_unlabelled_prompts_or_one_class_name_the_prompt_file(tmp_path, labels, message):
    store = tmp_path / "s.zarr"
    _write_store(store, prompt_file="mine.jsonl")
    zarr.open_group(str(store), mode="r+")["labels"][:] = labels.astype(np.int64)
    out = tmp_path / "probes.csv"
    with pytest.raises(PromptError, match=message) as err:
        run_probe_stage(store, out, **{**KW, "epochs": 1})
    assert 'give every record of mine.jsonl an int "label" >= 0 and rerun the extraction' in str(err.value)
    assert not out.exists()


def _mdqa_prompt_file(path: Path, labels: np.ndarray, n_questions: int) -> np.ndarray:
    """A prompt file whose records carry ``labels`` and questions (groups) used ~N/n_questions times."""
    groups = np.arange(labels.size) % n_questions
    records = [
        {
            "id": f"mdqa-n300-{i:06d}",
            "task": "mdqa",
            "prompt": f"prompt {i}",
            "label": int(y),
            "n_items": 16,
            "n_tokens": 20,
            "answer": ["a"],
            "group": int(g),
        }
        for i, (y, g) in enumerate(zip(labels, groups))
    ]
    write_prompt_set(records, {"seed": 0}, path)
    return groups


def test_mdqa_split_keeps_each_question_on_one_side(tmp_path):
    store = tmp_path / "mdqa_n300.zarr"
    prompts = tmp_path / "mdqa_n300.jsonl"
    rng = np.random.default_rng(0)
    labels = (rng.integers(0, N_CLASSES, N_SAMPLES) * 5).astype(np.int64)
    groups = _mdqa_prompt_file(prompts, labels, 30)  # 8 prompts per question
    sha = read_manifest(prompts)["prompts_sha256"]
    last, got_labels = _write_store(store, task="mdqa", prompt_file=str(prompts), prompt_sha256=sha)
    assert np.array_equal(got_labels, labels)  # the same generator draws the same labels
    out = tmp_path / "probes.csv"
    kw = {**KW, "epochs": 5, "val_fraction": 0.2, "n_train": 150}
    result = run_probe_stage(store, out, **kw)
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["protocol"]["split"] == "grouped by MDQA question and gold passage, stratified by label"
    assert summary["protocol"]["n_groups"] == 30
    direct = fit_layer_probes(last, labels, groups=groups, progress=False, **kw)
    np.testing.assert_array_equal(result.val_accuracy, direct.val_accuracy)
    for s, seed in enumerate(kw["seeds"]):
        tr, va = grouped_stratified_split(labels, groups, val_fraction=0.2, n_train=150, seed=seed)
        assert np.intersect1d(groups[tr], groups[va]).size == 0 and tr.size == 150
        assert summary["hf"]["n_val_per_seed"][s] == va.size
    assert summary["hf"]["n_train"] == 150 and summary["hf"]["n_val"] == min(summary["hf"]["n_val_per_seed"])


def test_fewer_training_samples_than_n_train_is_said(tmp_path, caplog):
    """A store too small for probes.n_train (20,000 here, 180 available) still fits, with a warning
    that names both numbers; with n_train reachable there is none."""
    store = tmp_path / "kvpr_n300.zarr"
    _write_store(store)
    kw = {**KW, "epochs": 2}
    with caplog.at_level("WARNING", logger="reprflow.pipeline.probe_stage"):
        run_probe_stage(store, tmp_path / "a.csv", **kw)
    said = [r.getMessage() for r in caplog.records if "fewer than probes.n_train" in r.getMessage()]
    assert len(said) == 1 and "on 180 samples" in said[0] and "= 20000" in said[0] and "takes 60" in said[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="reprflow.pipeline.probe_stage"):
        run_probe_stage(store, tmp_path / "b.csv", **{**kw, "n_train": 180})
    assert not [r for r in caplog.records if "fewer than probes.n_train" in r.getMessage()]


def test_mdqa_store_needs_its_own_prompt_file(tmp_path):
    rng = np.random.default_rng(0)
    labels = (rng.integers(0, N_CLASSES, N_SAMPLES) * 5).astype(np.int64)
    prompts = tmp_path / "mdqa_n300.jsonl"
    _mdqa_prompt_file(prompts, labels, 30)
    sha = read_manifest(prompts)["prompts_sha256"]
    out = tmp_path / "probes.csv"
    cases = [
        (dict(prompt_file=str(tmp_path / "gone.jsonl"), prompt_sha256=sha), StoreError, "gone.jsonl.*missing"),
        (dict(prompt_file=str(prompts), prompt_sha256="0" * 64), PromptError, "extracted from another version"),
    ]
    for i, (attrs, err, match) in enumerate(cases):
        store = tmp_path / f"s{i}.zarr"
        _write_store(store, task="mdqa", **attrs)
        with pytest.raises(err, match=match):
            run_probe_stage(store, out, **{**KW, "epochs": 1})
    other = tmp_path / "other.jsonl"
    _mdqa_prompt_file(other, (labels + 5) % 20, 30)  # same size, other labels
    store = tmp_path / "s_other.zarr"
    _write_store(store, task="mdqa", prompt_file=str(other), prompt_sha256=read_manifest(other)["prompts_sha256"])
    with pytest.raises(StoreError, match="labels differ from the 240 labels of its prompt file"):
        run_probe_stage(store, out, **{**KW, "epochs": 1})
    assert not out.exists()
