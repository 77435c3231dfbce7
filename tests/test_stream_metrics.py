"""Streamed token metrics (TokenMetricsSink) equal the store-then-compute path, for the four families."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from reprflow.extract import extract_activations, token_prompt_ids
from reprflow.models.init_schemes import InitSpec
from reprflow.models.registry import load_model
from reprflow.models.tiny import TINY_TOKENIZERS, build_tiny_model
from reprflow.pipeline.token_metrics import compute_token_metrics
from reprflow.pipeline.token_stream import extract_with_streamed_token_metrics
from reprflow.prompts.tokenizers import load_tokenizer
from reprflow.sinks import TokenMetricsSink
from reprflow.store import open_store

WORDS = "the key value pair lost in the middle of a long context window".split()
N_PROMPTS, N_TOKEN_PROMPTS, N_BINS = 6, 3, 4


def _prompts(tokenizer) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(N_PROMPTS):
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(6, 16))))
        out.append({"id": f"p{i}", "prompt": text, "label": i % 3, "n_tokens": len(tokenizer(text)["input_ids"])})
    return out


def _attrs(family: str, tokenizer_name: str) -> dict:
    return {
        "model": f"tiny-{family}",
        "model_id": f"tiny/{family}",
        "revision": None,
        "family": family,
        "init": {"scheme": "pretrained"},
        "task": "kvpr",
        "length": 300,
        "tokenizer": tokenizer_name,
        "prompt_file": "kvpr_n300.jsonl",
        "prompt_sha256": "0" * 64,
    }


def _assert_same_metrics(streamed, stored) -> None:
    """Same files, same values within float32-forward tolerance (batches may be composed differently)."""
    names = sorted(p.name for p in stored.iterdir())
    assert sorted(p.name for p in streamed.iterdir()) == names
    for name in names:
        a, b = streamed / name, stored / name
        if name.endswith(".npy"):
            np.testing.assert_allclose(np.load(a), np.load(b), rtol=1e-5, atol=1e-7, err_msg=name)
        elif name.endswith(".csv"):
            fa, fb = pd.read_csv(a), pd.read_csv(b)
            np.testing.assert_allclose(fa[["mean", "std"]], fb[["mean", "std"]], rtol=1e-5, atol=1e-7, err_msg=name)
            cols = [c for c in fb.columns if c not in ("mean", "std", "store")]  # store: the provenance
            pd.testing.assert_frame_equal(fa[cols], fb[cols])
        else:
            ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
            assert ja["provenance"]["tokens"] == "stream" and ja["provenance"]["n_prompts"] == N_TOKEN_PROMPTS
            for view in ("hf", "residual"):
                assert ja[view] == pytest.approx(jb[view], rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("family", ["gpt_neo", "gpt_neox", "mamba", "mamba2"])
def test_streamed_metrics_equal_store_then_compute(family, tmp_path):
    path = build_tiny_model(family, out_dir=tmp_path / "model", seed=0)
    tokenizer = load_tokenizer(TINY_TOKENIZERS[family])
    model = load_model(str(path), init=InitSpec("pretrained"), seed=None)
    prompts = _prompts(tokenizer)
    attrs = _attrs(family, TINY_TOKENIZERS[family])
    kwargs = dict(batch_size=2, window_batches=1, attrs=attrs, store_dtype="float32", progress=False)

    stored = tmp_path / "with_tokens.zarr"  # tokens: store, then the token-metrics stage
    extract_activations(model, tokenizer, prompts, stored, n_token_prompts=N_TOKEN_PROMPTS, **kwargs)
    compute_token_metrics(stored, tmp_path / "from_store", n_bins=N_BINS)

    last_only = tmp_path / "last_only.zarr"  # tokens: stream, in the same forward passes
    summary, written = extract_with_streamed_token_metrics(
        model,
        tokenizer,
        prompts,
        last_only,
        tmp_path / "streamed",
        n_token_prompts=N_TOKEN_PROMPTS,
        n_bins=N_BINS,
        **kwargs,
    )
    assert summary.n_token_prompts == 0 and set(written) == {p.name for p in (tmp_path / "streamed").iterdir()}
    assert open_store(last_only)["tokens"].shape[1] == 0  # no token states on disk
    np.testing.assert_array_equal(open_store(last_only)["last"][:], open_store(stored)["last"][:])
    _assert_same_metrics(tmp_path / "streamed", tmp_path / "from_store")

    if family == "gpt_neox":  # the store is complete: the token prompts are forwarded for the sink alone
        again = TokenMetricsSink(token_prompt_ids(N_PROMPTS, N_TOKEN_PROMPTS), n_bins=N_BINS, overlap=False)
        summary = extract_activations(model, tokenizer, prompts, last_only, n_token_prompts=0, sinks=[again], **kwargs)
        assert summary.already_complete and summary.windows_written == 0
        assert summary.tokens == sum(prompts[i]["n_tokens"] for i in again.token_prompts)
        again.write(tmp_path / "again", source=last_only, attrs=attrs)
        _assert_same_metrics(tmp_path / "again", tmp_path / "from_store")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("family", ["gpt_neo", "gpt_neox", "mamba", "mamba2"])
def test_streamed_on_the_gpu_equal_store_then_compute_on_the_cpu(family, tmp_path):
    """tokens: stream on CUDA (float32 compute, metrics in the background thread) vs the CPU store path."""
    path = build_tiny_model(family, out_dir=tmp_path / "model", seed=0)
    tokenizer = load_tokenizer(TINY_TOKENIZERS[family])
    prompts = _prompts(tokenizer)
    attrs = _attrs(family, TINY_TOKENIZERS[family])
    kwargs = dict(batch_size=2, window_batches=1, attrs=attrs, store_dtype="float32", progress=False)
    stored = tmp_path / "cpu.zarr"
    extract_activations(
        load_model(str(path), init=InitSpec("pretrained"), seed=None),
        tokenizer,
        prompts,
        stored,
        n_token_prompts=N_TOKEN_PROMPTS,
        **kwargs,
    )
    compute_token_metrics(stored, tmp_path / "from_store", n_bins=N_BINS)
    sink = TokenMetricsSink(token_prompt_ids(N_PROMPTS, N_TOKEN_PROMPTS), n_bins=N_BINS)
    gpu_store = tmp_path / "cuda.zarr"
    extract_activations(
        load_model(str(path), init=InitSpec("pretrained"), seed=None),
        tokenizer,
        prompts,
        gpu_store,
        n_token_prompts=0,
        device="cuda",
        sinks=[sink],
        **kwargs,
    )
    sink.write(tmp_path / "streamed", source=gpu_store, attrs=attrs)
    for name in ("cka_hf.npy", "cka_debiased_residual.npy", "layerwise_cosine_hf.npy"):
        np.testing.assert_allclose(
            np.load(tmp_path / "streamed" / name), np.load(tmp_path / "from_store" / name), atol=1e-4, err_msg=name
        )
    sm = json.loads((tmp_path / "streamed" / "smoothness_stability.json").read_text())
    ref = json.loads((tmp_path / "from_store" / "smoothness_stability.json").read_text())
    assert sm["hf"]["Sm"] == pytest.approx(ref["hf"]["Sm"], rel=1e-3) and sm["hf"]["St"] == pytest.approx(
        ref["hf"]["St"], rel=1e-3
    )


def test_an_error_in_the_metrics_thread_stops_the_run_and_leaves_no_store(tmp_path):
    """A prompt too short for debiased CKA fails in the background thread: one error naming it, no final store."""
    from reprflow.errors import ReprflowError
    from reprflow.store import partial_path

    path = build_tiny_model("gpt_neox", out_dir=tmp_path / "model", seed=0, overrides={"num_hidden_layers": 2})
    tokenizer = load_tokenizer("gpt-neox-20b")
    model = load_model(str(path), init=InitSpec("pretrained"), seed=None)
    prompts = _prompts(tokenizer)
    prompts[2] = {**prompts[2], "prompt": "key value", "n_tokens": len(tokenizer("key value")["input_ids"])}
    out = tmp_path / "s.zarr"
    sink = TokenMetricsSink([0, 2], n_bins=2)
    with pytest.raises(
        ReprflowError, match=r"streamed token metrics, prompt 2, CKA over states .*needs n_tokens >= 4, got 2"
    ):
        extract_activations(
            model,
            tokenizer,
            prompts,
            out,
            n_token_prompts=0,
            sinks=[sink],
            batch_size=2,
            window_batches=1,
            attrs=_attrs("gpt_neox", "gpt-neox-20b"),
            progress=False,
        )
    assert not out.exists()  # no final store; the partial one (if its first write happened) is resumed
    extract_activations(
        model,
        tokenizer,
        prompts,
        out,
        n_token_prompts=0,
        batch_size=2,
        window_batches=1,
        attrs=_attrs("gpt_neox", "gpt-neox-20b"),
        progress=False,
    )
    assert out.exists() and not partial_path(out).exists()


_CUDA = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=_CUDA)])
def test_overlap_changes_no_byte_of_the_metrics_or_the_store(device, tmp_path):
    """Metrics in the background thread (on CUDA: on their side stream, concurrent with the forward
    passes), ids from the tokenizer thread, writes in the writer thread -- vs everything inline."""
    path = build_tiny_model("mamba", out_dir=tmp_path / "model", seed=0)
    tokenizer = load_tokenizer(TINY_TOKENIZERS["mamba"])
    prompts = _prompts(tokenizer)
    kwargs = dict(
        batch_size=2,
        window_batches=1,
        attrs=_attrs("mamba", TINY_TOKENIZERS["mamba"]),
        store_dtype="float32",
        progress=False,
        device=device,
        n_token_prompts=N_TOKEN_PROMPTS,
        n_bins=N_BINS,
    )
    for overlap in (True, False):
        model = load_model(str(path), init=InitSpec("pretrained"), seed=None)
        summary, _ = extract_with_streamed_token_metrics(
            model,
            tokenizer,
            prompts,
            tmp_path / f"{overlap}.zarr",
            tmp_path / f"metrics_{overlap}",
            overlap=overlap,
            **kwargs,
        )
        assert summary.stages["token_metrics"]["compute"] > 0
    np.testing.assert_array_equal(
        open_store(tmp_path / "True.zarr")["last"][:], open_store(tmp_path / "False.zarr")["last"][:]
    )
    # bit for bit on the CPU; on CUDA the float64 kernels run on another stream: 1e-12 relative allowed
    rtol = 0.0 if device == "cpu" else 1e-12
    for name in sorted(p.name for p in (tmp_path / "metrics_False").iterdir()):
        on, off = tmp_path / "metrics_True" / name, tmp_path / "metrics_False" / name
        if name.endswith(".json"):  # the provenance names the store
            a, b = json.loads(on.read_text()), json.loads(off.read_text())
            for view in ("hf", "residual"):
                assert a[view].keys() == b[view].keys()
                np.testing.assert_allclose(list(a[view].values()), list(b[view].values()), rtol=rtol, atol=0)
        elif name.endswith(".csv"):
            cols = ["mean", "std", "n_prompts"]
            np.testing.assert_allclose(pd.read_csv(on)[cols], pd.read_csv(off)[cols], rtol=rtol, atol=0)
        else:
            np.testing.assert_allclose(np.load(on), np.load(off), rtol=rtol, atol=0, err_msg=name)


def test_streamed_mixed_precision_within_tolerance_of_the_float64_store_path(tmp_path):
    """metrics.precision: mixed in the sink vs float64 from the store; both record their precision."""
    path = build_tiny_model("gpt_neox", out_dir=tmp_path / "model", seed=0)
    tokenizer = load_tokenizer(TINY_TOKENIZERS["gpt_neox"])
    model = load_model(str(path), init=InitSpec("pretrained"), seed=None)
    prompts = _prompts(tokenizer)
    attrs = _attrs("gpt_neox", TINY_TOKENIZERS["gpt_neox"])
    kwargs = dict(batch_size=2, window_batches=1, attrs=attrs, store_dtype="float32", progress=False)
    stored = tmp_path / "with_tokens.zarr"
    extract_activations(model, tokenizer, prompts, stored, n_token_prompts=N_TOKEN_PROMPTS, **kwargs)
    compute_token_metrics(stored, tmp_path / "from_store", n_bins=N_BINS)
    extract_with_streamed_token_metrics(
        model,
        tokenizer,
        prompts,
        tmp_path / "last.zarr",
        tmp_path / "streamed",
        n_token_prompts=N_TOKEN_PROMPTS,
        n_bins=N_BINS,
        precision="mixed",
        **kwargs,
    )
    for name in sorted(p.name for p in (tmp_path / "from_store").glob("*.npy")):  # CKA and cosine maps
        np.testing.assert_allclose(
            np.load(tmp_path / "streamed" / name),
            np.load(tmp_path / "from_store" / name),
            rtol=0,
            atol=1e-4,
            err_msg=name,
        )
    for name in ("inter_token_cosine.csv", "layerwise_cosine.csv"):
        np.testing.assert_allclose(
            pd.read_csv(tmp_path / "streamed" / name)[["mean", "std"]],
            pd.read_csv(tmp_path / "from_store" / name)[["mean", "std"]],
            rtol=0,
            atol=1e-4,
        )
    sm = json.loads((tmp_path / "streamed" / "smoothness_stability.json").read_text())
    ref = json.loads((tmp_path / "from_store" / "smoothness_stability.json").read_text())
    assert sm["provenance"]["precision"] == "mixed" and ref["provenance"]["precision"] == "float64"
    for view in ("hf", "residual"):
        for key in ("Sm", "St", "Sm_rel", "St_rel", "state_rms"):
            assert sm[view][key] == pytest.approx(ref[view][key], rel=1e-5), (view, key)
