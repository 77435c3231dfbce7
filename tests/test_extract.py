"""Tests for reprflow.extract: stored states equal unbatched reference forwards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reprflow.errors import PromptError, ReprflowError
from reprflow.extract import extract_activations, plan_window_batches
from reprflow.models.init_schemes import InitSpec
from reprflow.models.registry import load_model
from reprflow.models.tiny import build_tiny_model
from reprflow.prompts.tokenizers import load_tokenizer
from reprflow.store import open_sharded, open_store, shard_path, shard_range

WORDS = "the key value pair lost in the middle of a long context window".split()


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("gpt-neox-20b")


def make_prompts(tokenizer, n: int, *, seed: int) -> list[dict]:
    """Records in the prompt-file format, with varied lengths (3..30 words)."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 30))))
        records.append(
            {
                "id": f"kvpr-{i}",
                "task": "kvpr",
                "prompt": text,
                "label": int(rng.integers(0, 4)),
                "n_items": 4,
                "n_tokens": len(tokenizer(text)["input_ids"]),
                "answer": "x",
                "group": i,
            }
        )
    return records


def attrs_for(family: str) -> dict:
    return {
        "model": f"tiny-{family}",
        "model_id": f"tiny/{family}",
        "revision": None,
        "family": family,
        "init": {"scheme": "pretrained", "params": {}},
        "task": "kvpr",
        "length": 300,
        "tokenizer": "gpt-neox-20b",
        "prompt_file": "data/prompts/gpt-neox-20b/kvpr_n300.jsonl",
        "prompt_sha256": "0" * 64,
    }


@pytest.fixture(scope="module", params=["gpt_neox", "mamba"])
def tiny(request, tmp_path_factory):
    family = request.param
    path = build_tiny_model(
        family,
        out_dir=tmp_path_factory.mktemp(family) / "model",
        seed=0,
        overrides={"num_hidden_layers": 2},
    )
    return family, load_model(str(path), init=InitSpec("pretrained"), seed=None)


def reference_states(model, family: str, ids: list[int]) -> np.ndarray:
    """All K_all = L + 2 states of one unbatched prompt, float64, [n_states, n_tokens, hidden].

    Built from ``output_hidden_states`` plus what it lacks: for gpt_neox the raw output of
    the last block (a test-local hook), for mamba the token embeddings.
    """
    blocks = model.base_model.layers
    seen = {}
    handle = blocks[-1].register_forward_hook(lambda m, a, out: seen.__setitem__("last_block", out))
    try:
        with torch.no_grad():
            out = model(torch.tensor([ids]), output_hidden_states=True)
    finally:
        handle.remove()
    hs = [h[0].double() for h in out.hidden_states]  # L + 1 entries of [n_tokens, hidden]
    last_block = seen["last_block"]
    last_block = (last_block[0] if isinstance(last_block, tuple) else last_block)[0].double()
    if family == "gpt_neox":  # [embed, block_1 .. block_{L-1}, final_norm]
        states = hs[:-1] + [last_block, hs[-1]]
    else:  # mamba: [block_1 .. block_L, final_norm]
        with torch.no_grad():
            embed = model.get_input_embeddings()(torch.tensor(ids)).double()
        states = [embed] + hs
    return torch.stack(states).numpy()


def test_plan_window_batches_buckets_by_length():
    lengths = np.array([5, 9, 2, 9, 7])
    batches = plan_window_batches(lengths, batch_size=2)
    assert [b.tolist() for b in batches] == [[1, 3], [4, 0], [2]]


def test_token_prompts_are_evenly_spaced():
    from reprflow.extract import token_prompt_ids

    assert token_prompt_ids(12000, 64)[:3] == [0, 187, 375] and len(token_prompt_ids(12000, 64)) == 64
    assert token_prompt_ids(7, 4) == [0, 1, 3, 5]
    assert token_prompt_ids(3, 10) == [0, 1, 2]  # capped at the number of prompts
    assert token_prompt_ids(5, 0) == []
    ids = token_prompt_ids(1000, 37)
    assert len(set(ids)) == 37 and max(np.diff(ids)) - min(np.diff(ids)) <= 1


def test_stored_states_equal_unbatched_reference(tiny, tokenizer, tmp_path):
    family, model = tiny
    prompts = make_prompts(tokenizer, 7, seed=1)
    out = tmp_path / "kvpr_n300.zarr"
    summary = extract_activations(
        model,
        tokenizer,
        prompts,
        out,
        batch_size=3,
        window_batches=2,
        n_token_prompts=4,
        attrs=attrs_for(family),
        store_dtype="float32",
        progress=False,
    )
    assert summary.n_samples == 7 and summary.windows_written == 2 and not summary.already_complete
    assert summary.tokens == sum(p["n_tokens"] for p in prompts)
    g = open_store(out)
    n_blocks = 2
    assert g.attrs["state_names"] == ["embed", "block_1", "block_2", "final_norm"]
    assert g["last"].shape == (n_blocks + 2, 7, 64)
    np.testing.assert_array_equal(g["labels"][:], [p["label"] for p in prompts])
    np.testing.assert_array_equal(g["n_tokens"][:], [p["n_tokens"] for p in prompts])
    token_ids = [0, 1, 3, 5]  # evenly spaced: floor(j * 7 / 4)
    assert g.attrs["token_prompt_ids"] == token_ids
    np.testing.assert_array_equal(g["lengths"][:], [prompts[i]["n_tokens"] for i in token_ids])
    assert g.attrs["timing"]["tokens"] == summary.tokens
    last = g["last"][:].astype(np.float64)
    tokens = g["tokens"][:].astype(np.float64)
    for i, p in enumerate(prompts):
        ref = reference_states(model, family, tokenizer(p["prompt"])["input_ids"])
        np.testing.assert_allclose(last[:, i], ref[:, -1], atol=1e-5, rtol=0, err_msg=f"prompt {i}")
        if i in token_ids:
            j, n = token_ids.index(i), p["n_tokens"]
            np.testing.assert_allclose(tokens[:, j, :n], ref, atol=1e-5, rtol=0, err_msg=f"tokens {i}")
            assert not tokens[:, j, n:].any()
    # the hf view reproduces output_hidden_states at the last token
    with torch.no_grad():
        out_hf = model(torch.tensor([tokenizer(prompts[0]["prompt"])["input_ids"]]), output_hidden_states=True)
    hf = torch.stack([h[0, -1] for h in out_hf.hidden_states]).double().numpy()
    np.testing.assert_allclose(last[g.attrs["views"]["hf"], 0], hf, atol=1e-5, rtol=0)
    # rerun on the complete store is a no-op
    again = extract_activations(
        model,
        tokenizer,
        prompts,
        out,
        batch_size=3,
        window_batches=2,
        n_token_prompts=4,
        attrs=attrs_for(family),
        store_dtype="float32",
        progress=False,
    )
    assert again.already_complete and again.windows_written == 0


def test_sharded_extraction_equals_one_shot(tiny, tokenizer, tmp_path):
    family, model = tiny
    if family != "gpt_neox":
        pytest.skip("sharding is family independent; one family keeps the suite fast")
    prompts = make_prompts(tokenizer, 7, seed=2)
    kwargs = dict(
        batch_size=2,
        window_batches=1,
        n_token_prompts=3,
        attrs=attrs_for(family),
        store_dtype="float16",
        progress=False,
    )
    one = tmp_path / "kvpr_n300.zarr"
    extract_activations(model, tokenizer, prompts, one, **kwargs)
    paths = [shard_path(one, i, 2) for i in range(2)]
    for i, p in enumerate(paths):
        extract_activations(model, tokenizer, prompts, p, sample_range=shard_range(7, i, 2), overlap=False, **kwargs)
    full, view = open_store(one), open_sharded(paths)
    for name in ("last", "tokens", "labels", "n_tokens", "lengths"):
        np.testing.assert_array_equal(np.asarray(view[name][...]), full[name][:])
    assert view.attrs["token_prompt_ids"] == [0, 2, 4]  # evenly spaced, in both shards


def test_prompt_beyond_context_raises(tiny, tokenizer, tmp_path):
    family, model = tiny
    prompts = make_prompts(tokenizer, 3, seed=3)
    longest = max(prompts, key=lambda p: p["n_tokens"])
    with pytest.raises(
        ReprflowError,
        match=rf"kvpr_n300\.jsonl: prompt '{longest['id']}' has "
        rf"{longest['n_tokens']} tokens, beyond the model's context limit of 4 tokens\. "
        r"In the workflow, set `max_context: 4` on this model.s entry under `models:`",
    ):
        extract_activations(
            model,
            tokenizer,
            prompts,
            tmp_path / "x.zarr",
            batch_size=2,
            n_token_prompts=1,
            attrs=attrs_for(family),
            max_context=4,
            progress=False,
        )
    assert not (tmp_path / "x.zarr").exists()


def test_token_count_mismatch_raises(tiny, tokenizer, tmp_path):
    family, model = tiny
    prompts = make_prompts(tokenizer, 3, seed=4)
    prompts[1]["n_tokens"] += 1
    with pytest.raises(PromptError, match="prompt 'kvpr-1' tokenizes to .* record says"):
        extract_activations(
            model,
            tokenizer,
            prompts,
            tmp_path / "x.zarr",
            batch_size=2,
            n_token_prompts=1,
            attrs=attrs_for(family),
            progress=False,
        )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("family", ["gpt_neox", "mamba"])
def test_cuda_extraction_matches_cpu(family, tokenizer, tmp_path):
    path = build_tiny_model(family, out_dir=tmp_path / "model", seed=0, overrides={"num_hidden_layers": 2})
    prompts = make_prompts(tokenizer, 10, seed=5)
    kwargs = dict(
        batch_size=4,
        window_batches=1,
        n_token_prompts=3,
        attrs=attrs_for(family),
        store_dtype="float32",
        progress=False,
    )
    stores = {}
    for name, device, dtype in [
        ("cpu", "cpu", torch.float32),
        ("cuda32", "cuda", torch.float32),
        ("cuda16", "cuda", torch.bfloat16),
    ]:
        model = load_model(str(path), init=InitSpec("pretrained"), seed=None)
        extract_activations(
            model, tokenizer, prompts, tmp_path / f"{name}.zarr", device=device, compute_dtype=dtype, **kwargs
        )
        stores[name] = open_store(tmp_path / f"{name}.zarr")
    assert stores["cuda16"].attrs["dtype"] == "bfloat16"
    assert stores["cuda16"].attrs["compute_device"] == "cuda"
    ref = stores["cpu"]["last"][:].astype(np.float64)
    scale = np.abs(ref).max()
    np.testing.assert_allclose(stores["cuda32"]["last"][:], ref, atol=1e-4 * scale, rtol=0)
    np.testing.assert_allclose(stores["cuda16"]["last"][:], ref, atol=5e-2 * scale, rtol=0)
    np.testing.assert_allclose(stores["cuda32"]["tokens"][:], stores["cpu"]["tokens"][:], atol=1e-4 * scale, rtol=0)


def test_token_states_reach_the_host_in_the_store_dtype():
    """float16 store: bf16 states exactly, float32 states rounded as numpy would; float32 store: exact.

    The peak comes from the unconverted states, so overflow and NaN reach the writer's check.
    """
    from reprflow.sinks.store import start_token_states_copy

    def token_states_to_host(states, *, disk_dtype):
        return start_token_states_copy(states, disk_dtype=disk_dtype).result()

    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(3, 17, 8, generator=gen) * 100).to(torch.bfloat16)
    host, peak = token_states_to_host(x, disk_dtype="float16")
    assert host.dtype == np.float16 and peak == float(x.float().abs().max())
    np.testing.assert_array_equal(host.astype(np.float32), x.float().numpy())
    f32 = torch.randn(3, 17, 8, generator=gen) * 100
    np.testing.assert_array_equal(token_states_to_host(f32, disk_dtype="float16")[0], f32.numpy().astype(np.float16))
    exact, _ = token_states_to_host(x, disk_dtype="float32")
    assert exact.dtype == np.float32 and np.array_equal(exact, x.float().numpy())
    big = f32.clone()
    big[0, 0, 0] = -70000.0
    assert token_states_to_host(big, disk_dtype="float16")[1] == 70000.0  # not inf: the writer names the overflow
    nan = f32.clone()
    nan[1, 2, 3] = float("nan")
    assert np.isnan(token_states_to_host(nan, disk_dtype="float16")[1])


def test_writer_refuses_a_device_peak_beyond_float16(tmp_path):
    """write_tokens with a peak computed before conversion: overflow and NaN are named, nothing marked done."""
    from reprflow.errors import StoreError
    from reprflow.store import StoreSpec, StoreWriter

    spec = StoreSpec(
        n_states=2,
        hidden=4,
        n_samples_total=4,
        sample_start=0,
        sample_stop=4,
        batch_size=2,
        window_batches=1,
        token_prompt_ids=(0,),
        max_len=3,
        store_dtype="float16",
    )
    attrs = {
        **attrs_for("gpt_neox"),
        "state_names": ["embed", "final_norm"],
        "views": {"hf": [0, 1]},
        "dtype": "float32",
    }
    writer = StoreWriter(
        tmp_path / "s.zarr",
        spec,
        attrs=attrs,
        labels=np.arange(4),
        n_tokens=np.full(4, 3),
        lengths=np.array([3]),
        content_sha256="x",
    )
    writer.open()
    states = np.zeros((2, 3, 4), dtype=np.float16)
    with pytest.raises(StoreError, match=r"max \|x\| = 70000, which overflows float16"):
        writer.write_tokens(0, states, peak=70000.0)
    with pytest.raises(StoreError, match="non-finite"):
        writer.write_tokens(0, states, peak=float("nan"))
    with pytest.raises(StoreError, match=r"token states of prompts \[0\] were not written"):
        writer.write_window(0, np.zeros((2, 2, 4), dtype=np.float32))
    assert writer.pending_windows() == [0, 1]


def test_context_errors_name_the_config_key_and_the_fix(tmp_path):
    """Issue 10 item 14: a prompt past the context names `config.models[i].max_context` and its value."""
    from reprflow.errors import ConfigError
    from reprflow.pipeline.extract_stage import check_context, model_key, run_extraction

    entry = {"name": "gpt-neo-2.7b", "hf_id": "EleutherAI/gpt-neo-2.7B", "max_context": None}
    key = model_key("config.models[0].hf_id", "max_context", entry["name"])
    assert key == "config.models[0].max_context"
    prompts = [{"n_tokens": 300}, {"n_tokens": 4100}]
    check_context(prompts, limit=None, model=entry, length=4096, key=key, prompt_path="p.jsonl")  # SSM: no limit
    check_context(prompts, limit=8192, model=entry, length=4096, key=key, prompt_path="p.jsonl")
    with pytest.raises(ConfigError) as err:
        check_context(prompts, limit=2048, model=entry, length=4096, key=key, prompt_path="p.jsonl")
    assert str(err.value) == (
        "p.jsonl: prompts of up to 4100 tokens exceed gpt-neo-2.7b's context window of 2048 tokens (from "
        "EleutherAI/gpt-neo-2.7B's config); set `max_context: 2048` in that entry (config.models[0].max_context) "
        "so the workflow skips longer lengths for this model, or drop 4096 from `lengths`"
    )
    with pytest.raises(ConfigError, match=r"config.models\[0\].max_context is 8192, above .* set it to 2048"):
        check_context(
            prompts, limit=2048, model={**entry, "max_context": 8192}, length=4096, key=key, prompt_path="p.jsonl"
        )
    # a cell beyond max_context named directly: refused before any model is loaded
    with pytest.raises(
        ConfigError,
        match=r"length 4096 exceeds gpt-neo-2.7b's max_context 2048 "
        r"\(config.models\[3\].max_context\).*drop it from the targets",
    ):
        run_extraction(
            tmp_path / "p.jsonl",
            tmp_path / "s.zarr",
            model={**entry, "max_context": 2048},
            init={},
            task="kvpr",
            length=4096,
            seed=0,
            settings={},
            config_digest="x",
            origin="config.models[3].hf_id",
        )


def test_batch_tokens_sets_each_cells_batch_size():
    """execution.extraction.batch_tokens: about the same tokens per forward at every length; without
    it, batch_size; never fewer than one prompt."""
    from reprflow.pipeline.extract_stage import batch_size_for

    by_tokens = {"batch_size": 8, "batch_tokens": 32768}
    assert [batch_size_for(by_tokens, n) for n in (300, 1024, 2048, 4096)] == [109, 32, 16, 8]
    assert batch_size_for({"batch_size": 8, "batch_tokens": 1000}, 4096) == 1
    assert [batch_size_for({"batch_size": 8, "batch_tokens": None}, n) for n in (300, 4096)] == [8, 8]
    assert batch_size_for({"batch_size": 3}, 300) == 3
    # per family: the SSMs at 64K tokens (measured faster on an H200), the rest at the default
    by_family = {"batch_size": 8, "batch_tokens": {"default": 32768, "mamba": 65536, "mamba2": 65536}}
    assert [batch_size_for(by_family, 4096, f) for f in ("mamba", "mamba2", "gpt_neox")] == [16, 16, 8]
    assert batch_size_for({"batch_size": 5, "batch_tokens": {"mamba": 65536}}, 2048, "gpt_neo") == 5


def test_batch_tokens_by_family_is_validated():
    from pathlib import Path

    import yaml

    from reprflow.config import validate_config
    from reprflow.errors import ConfigError

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "config.yaml").read_text())
    for bad in ({"mamba": 0}, {"mamba": "64K"}, {}):
        raw["execution"]["extraction"]["batch_tokens"] = bad
        with pytest.raises(ConfigError, match="batch_tokens"):
            validate_config(raw)


def _store_files(store) -> dict[str, bytes]:
    """Every file of a store but its root zarr.json (whose attrs hold the run's timing)."""
    return {
        str(p.relative_to(store)): p.read_bytes()
        for p in sorted(store.rglob("*"))
        if p.is_file() and p != store / "zarr.json"
    }


def test_overlap_changes_no_byte_of_the_store(tiny, tokenizer, tmp_path):
    """Background tokenizer and writer threads vs none: the same files, the same attrs but timing."""
    family, model = tiny
    prompts = make_prompts(tokenizer, 9, seed=7)
    kwargs = dict(
        batch_size=2, window_batches=2, n_token_prompts=3, attrs=attrs_for(family), store_dtype="auto", progress=False
    )
    on = extract_activations(model, tokenizer, prompts, tmp_path / "on.zarr", overlap=True, **kwargs)
    off = extract_activations(model, tokenizer, prompts, tmp_path / "off.zarr", overlap=False, **kwargs)
    assert _store_files(tmp_path / "on.zarr") == _store_files(tmp_path / "off.zarr")
    a, b = dict(open_store(tmp_path / "on.zarr").attrs), dict(open_store(tmp_path / "off.zarr").attrs)
    timing = a.pop("timing")
    b.pop("timing")
    assert a == b
    assert timing["stages"] == on.stages and set(on.stages) == set(off.stages) == {"tokenise", "tokenise_wait", "store"}
    assert set(on.stages["store"]) == {"copy_wait", "write", "create", "stall", "drain"}


def test_a_writer_error_surfaces_once_and_the_store_still_resumes(tiny, tokenizer, tmp_path):
    """float16 overflow found in the writer thread: that StoreError, raised in the caller; no final
    store; a rerun (here with sane weights) completes the store, equal to a fresh one."""
    from reprflow.errors import StoreError

    family, model = tiny
    if family != "gpt_neox":
        pytest.skip("the writer thread is family independent")
    prompts = make_prompts(tokenizer, 8, seed=8)
    kwargs = dict(
        batch_size=2,
        window_batches=1,
        n_token_prompts=2,
        attrs=attrs_for(family),
        store_dtype="float16",
        progress=False,
    )
    out = tmp_path / "s.zarr"
    emb = model.get_input_embeddings().weight
    saved = emb.detach().clone()
    with torch.no_grad():
        emb.mul_(1e8)  # the embeddings far beyond float16
    try:
        with pytest.raises(
            StoreError,
            match=r"s\.zarr: 'tokens' \(prompt 0\) has max \|x\| = .*, which overflows "
            r"float16 \(limit 65504\); set `extraction.store_dtype: float32`",
        ):
            extract_activations(model, tokenizer, prompts, out, **kwargs)
    finally:
        with torch.no_grad():
            emb.copy_(saved)
    assert not out.exists()
    again = extract_activations(model, tokenizer, prompts, out, **kwargs)
    assert again.windows_written + again.windows_resumed == 4 and not again.already_complete
    extract_activations(model, tokenizer, prompts, tmp_path / "fresh.zarr", **kwargs)
    assert _store_files(out) == _store_files(tmp_path / "fresh.zarr")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_job_sharing_the_gpus_claims_one_late_and_gives_it_back(tokenizer, tmp_path, monkeypatch):
    """execution.jobs_per_gpu >= 2 (REPRFLOW_SHARED_GPUS=1): a pretrained job with device auto reads
    its checkpoint into host memory, then claims a GPU even where one is visible, stores the very
    bytes an unshared job stores, records its wait, and releases the GPU before it returns."""
    import fcntl

    import yaml

    from reprflow import devices
    from reprflow.config import PROJECT_ROOT, validate_config
    from reprflow.pipeline.extract_stage import run_extraction
    from reprflow.prompts.dataset import write_prompt_set

    config = validate_config(yaml.safe_load((PROJECT_ROOT / "config" / "demo.yaml").read_text()))
    settings = {**config.section("extraction"), **config.execution("extraction")}
    settings.update(device="auto", tokens="store", store_dtype="float32", n_token_prompts=3, batch_size=4)
    path = build_tiny_model("gpt_neox", out_dir=tmp_path / "model", seed=0, overrides={"num_hidden_layers": 2})
    model = {"name": "tiny", "hf_id": str(path), "family": "gpt_neox", "tokenizer": "gpt-neox-20b", "max_context": None}
    prompt_file = write_prompt_set(make_prompts(tokenizer, 10, seed=5), {"task": "kvpr"}, tmp_path / "kvpr_n300.jsonl")
    monkeypatch.setenv("REPRFLOW_GPU_LOCK_DIR", str(tmp_path / "locks"))
    stores = {}
    for shared in ("0", "1"):
        monkeypatch.setenv(devices.SHARED_ENV, shared)
        stores[shared] = run_extraction(
            prompt_file,
            tmp_path / f"shared{shared}.zarr",
            model=model,
            init={"name": "pretrained", "scheme": "pretrained"},
            task="kvpr",
            length=300,
            seed=0,
            settings=settings,
            config_digest="x",
            gpu_priority=5,
        )
    assert _store_files(stores["0"]) == _store_files(stores["1"])
    timing = open_store(stores["1"]).attrs["timing"]
    assert timing["startup"]["gpu_wait"] >= 0 and timing["startup"]["model"] > 0
    assert timing["peak_gpu_bytes"] > 0  # the loop's peak of allocated device memory
    assert not devices._CLAIMED and not list((tmp_path / "locks").glob("wait-*"))
    with open(tmp_path / "locks" / "gpu0.lock", "a+") as lock:  # free: the job gave it back
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
