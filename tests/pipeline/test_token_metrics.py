"""Tests for reprflow.pipeline.token_metrics on a tiny store written directly with zarr v3."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from reprflow import __version__
from reprflow.errors import StoreError
from reprflow.metrics import (
    binned_layerwise_cosine,
    cka_matrix,
    inter_token_cosine,
    layerwise_cosine,
    smoothness,
    smoothness_scale_free,
    stability,
    stability_scale_free,
)
from reprflow.pipeline.token_metrics import compute_token_metrics

sys.path.insert(0, str(Path(__file__).parent))  # tests/pipeline/contract_store.py
from contract_store import write_contract_arrays  # noqa: E402


L, HIDDEN, N_SAMPLES = 4, 8, 5
STATE_NAMES = ["embed", *[f"block_{i}" for i in range(1, L + 1)], "final_norm"]  # K_all = 6
VIEWS = {"residual": [0, 1, 2, 3, 4], "hf": [0, 1, 2, 3, 5]}  # GPT-Neo-like hf view
LENGTHS = np.array([20, 13, 17])
MAX_LEN = 20
N_BINS = 8


def _write_store(path: Path, *, tokens: np.ndarray | None = None, complete: bool = True) -> np.ndarray:
    """A contract-shaped store (docs/CONTRACTS.md); returns the tokens array it holds."""
    rng = np.random.default_rng(0)
    k_all = len(STATE_NAMES)
    if tokens is None:
        walk = np.cumsum(rng.normal(size=(k_all, len(LENGTHS), MAX_LEN, HIDDEN)), axis=0) + 0.5
        tokens = walk.astype(np.float16)
        for i, n in enumerate(LENGTHS):
            tokens[:, i, n:] = 0.0  # zero padding past the real length, as the writer does
    arrays = {
        "last": rng.normal(size=(k_all, N_SAMPLES, HIDDEN)).astype(np.float16),
        "labels": np.arange(N_SAMPLES, dtype=np.int64) % 3,
        "n_tokens": np.full(N_SAMPLES, 20, dtype=np.int64),
        "tokens": tokens,
        "lengths": LENGTHS.astype(np.int64),
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
            "token_prompt_ids": [0, 2, 4],
            "complete": complete,
        }
    )
    return tokens


@pytest.fixture
def store(tmp_path) -> tuple[Path, np.ndarray]:
    path = tmp_path / "kvpr_n300.zarr"
    return path, _write_store(path)


def _prompt(tokens: np.ndarray, view: str, i: int) -> np.ndarray:
    return tokens[VIEWS[view], i, : LENGTHS[i]]


def test_outputs_match_metric_functions(store, tmp_path):
    path, tokens = store
    out = tmp_path / "metrics"
    written = compute_token_metrics(path, out, n_bins=N_BINS, max_tokens_in_memory=6)
    assert sorted(written) == sorted(p.name for p in out.iterdir())  # no temp file left
    inter = pd.read_csv(out / "inter_token_cosine.csv")
    layer = pd.read_csv(out / "layerwise_cosine.csv")
    sm_st = json.loads((out / "smoothness_stability.json").read_text())
    for view in VIEWS:
        prompts = [_prompt(tokens, view, i) for i in range(len(LENGTHS))]
        names = [STATE_NAMES[k] for k in VIEWS[view]]
        # inter-token cosine: mean and population std over prompts
        ref = np.stack([inter_token_cosine(h) for h in prompts])
        rows = inter[inter.view == view].sort_values("state_index")
        assert rows.state_name.tolist() == names
        np.testing.assert_allclose(rows["mean"], ref.mean(axis=0), rtol=1e-10)
        np.testing.assert_allclose(rows["std"], ref.std(axis=0), rtol=1e-10)
        assert (rows.n_prompts == 3).all()
        # layerwise cosine: mean over tokens, then mean/std over prompts
        ref = np.stack([layerwise_cosine(h).mean(axis=1) for h in prompts])
        rows = layer[layer.view == view].sort_values("pair_index")
        assert rows.from_state.tolist() == names[:-1] and rows.to_state.tolist() == names[1:]
        np.testing.assert_allclose(rows["mean"], ref.mean(axis=0), rtol=1e-10)
        np.testing.assert_allclose(rows["std"], ref.std(axis=0), rtol=1e-10)
        # heatmap, CKA, Sm/St
        heat = np.load(out / f"layerwise_cosine_{view}.npy")
        ref = np.mean([binned_layerwise_cosine(h, n_bins=N_BINS) for h in prompts], axis=0)
        np.testing.assert_allclose(heat, ref, rtol=1e-10)
        for debiased, name in ((False, f"cka_{view}.npy"), (True, f"cka_debiased_{view}.npy")):
            ref = np.mean([cka_matrix(h, debiased=debiased) for h in prompts], axis=0)
            np.testing.assert_allclose(np.load(out / name), ref, rtol=1e-10)
        assert sm_st[view]["Sm"] == pytest.approx(np.mean([smoothness(h) for h in prompts]), rel=1e-10)
        assert sm_st[view]["St"] == pytest.approx(np.mean([stability(h) for h in prompts]), rel=1e-10)
        assert sm_st[view]["Sm_rel"] == pytest.approx(np.mean([smoothness_scale_free(h) for h in prompts]), rel=1e-10)
        assert sm_st[view]["St_rel"] == pytest.approx(np.mean([stability_scale_free(h) for h in prompts]), rel=1e-10)
    # the two views differ only in their last state
    assert not np.allclose(np.load(out / "cka_hf.npy"), np.load(out / "cka_residual.npy"))


def test_provenance_is_recorded(store, tmp_path):
    path, _ = store
    out = tmp_path / "m"
    compute_token_metrics(path, out, views=("residual",), n_bins=N_BINS)
    prov = json.loads((out / "smoothness_stability.json").read_text())["provenance"]
    assert prov["store"] == str(path) and prov["prompt_sha256"] == "ab" * 32
    assert prov["reprflow_version"] == __version__ and prov["views"] == {"residual": VIEWS["residual"]}
    for name in ("inter_token_cosine.csv", "layerwise_cosine.csv"):
        frame = pd.read_csv(out / name)
        assert set(frame.prompt_sha256) == {"ab" * 32} and set(frame.store) == {str(path)}
        assert set(frame.view) == {"residual"}


def test_without_debiased_cka_no_debiased_file(store, tmp_path):
    path, _ = store
    out = tmp_path / "m"
    compute_token_metrics(path, out, views=("hf",), debiased_cka=False, n_bins=N_BINS)
    assert (out / "cka_hf.npy").exists() and not (out / "cka_debiased_hf.npy").exists()


def test_incomplete_store_is_refused(tmp_path):
    path = tmp_path / "s.zarr"
    _write_store(path, complete=False)
    with pytest.raises(StoreError, match="complete"):
        compute_token_metrics(path, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_unknown_view_is_refused(store, tmp_path):
    path, _ = store
    with pytest.raises(StoreError, match=r"view\(s\) \['logit_lens'\]"):
        compute_token_metrics(path, tmp_path / "m", views=("logit_lens",))


def test_prompts_shorter_than_the_bins_get_one_bin_per_token_of_the_shortest(store, tmp_path):
    """A custom task's short prompts: 64 bins > 13 tokens would leave bins empty, so the heatmap
    uses 13 bins, exactly as if n_bins=13 had been asked, and the provenance says so."""
    path, _ = store
    compute_token_metrics(path, tmp_path / "auto")  # default n_bins = 64 > shortest 13 tokens
    compute_token_metrics(path, tmp_path / "asked", n_bins=int(LENGTHS.min()))
    for view in ("hf", "residual"):
        auto = np.load(tmp_path / "auto" / f"layerwise_cosine_{view}.npy")
        assert auto.shape[1] == LENGTHS.min() and not np.isnan(auto).any()
        np.testing.assert_array_equal(auto, np.load(tmp_path / "asked" / f"layerwise_cosine_{view}.npy"))
    meta = json.loads((tmp_path / "auto" / "smoothness_stability.json").read_text())
    assert meta["provenance"]["n_bins"] == LENGTHS.min()


def test_zero_token_inside_a_prompt_names_prompt_and_token(tmp_path):
    path = tmp_path / "s.zarr"
    rng = np.random.default_rng(1)
    tokens = rng.normal(size=(len(STATE_NAMES), len(LENGTHS), MAX_LEN, HIDDEN)).astype(np.float16)
    tokens[3, 1, 4] = 0.0  # state 3, prompt 1, position 4 (inside its 13 real tokens)
    _write_store(path, tokens=tokens)
    with pytest.raises(StoreError, match=r"token prompt 1, view 'hf'.*token 4 of state 3"):
        compute_token_metrics(path, tmp_path / "m", n_bins=N_BINS)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_matches_cpu(store, tmp_path):
    path, _ = store
    compute_token_metrics(path, tmp_path / "cpu", n_bins=N_BINS)
    compute_token_metrics(path, tmp_path / "gpu", n_bins=N_BINS, device="cuda")
    for name in ("cka_hf.npy", "cka_debiased_residual.npy", "layerwise_cosine_hf.npy"):
        np.testing.assert_allclose(np.load(tmp_path / "gpu" / name), np.load(tmp_path / "cpu" / name), rtol=1e-9)
    a = json.loads((tmp_path / "cpu" / "smoothness_stability.json").read_text())
    b = json.loads((tmp_path / "gpu" / "smoothness_stability.json").read_text())
    assert a["hf"]["Sm"] == pytest.approx(b["hf"]["Sm"], rel=1e-9)
