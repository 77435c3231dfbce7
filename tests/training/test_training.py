"""Training: matched sizing, the unigram baseline, learning, resume after a kill, loading.

The learning and resume tests train on real English (the shipped NQ-Open passages) read as
bytes (vocabulary 256), so they take seconds on the CPU; the loop, checkpoints and saving are
the ones the workflow runs.
"""

from __future__ import annotations

import copy
import csv
import json
import math
from collections import Counter

import numpy as np
import pytest
import yaml
import torch
from transformers import AutoModelForCausalLM

from reprflow.config import PROJECT_ROOT, validate_config
from reprflow.errors import ConfigError
from reprflow.models.init_schemes import InitSpec
from reprflow.models.registry import load_model
from reprflow.training.baseline import unigram_cross_entropy
from reprflow.training.corpus import load_documents, split_documents
from reprflow.models.init_schemes import build_from_config
from reprflow.training.loop import Streams, _loss, _windows, build_config, train_model
from reprflow.training.recipe import TrainSpec
from reprflow.training.kernels import describe_kernels, mamba1_train_path, prepare_training
from reprflow.training.sizing import MATCHED_FAMILIES, count_params, match_families, padded_vocab, train_flops_per_token


@pytest.mark.parametrize("width,depth", [(64, 2), (384, 8)])
def test_matched_families_agree_within_ten_percent(width, depth):
    suite = match_families(MATCHED_FAMILIES, width=width, depth=depth, vocab_size=50304, context=1024)
    assert set(suite) == set(MATCHED_FAMILIES)
    for key in ("n_params", "n_non_embedding"):  # within 10% of GPT-NeoX, the reference block
        ref = getattr(suite["gpt_neox"], key)
        for s in suite.values():
            assert abs(getattr(s, key) - ref) <= 0.10 * ref, (s.family, key, getattr(s, key), ref)
    for s in suite.values():  # one width; Transformers at `depth`, SSMs with more (expand-2) blocks
        assert s.config.hidden_size == width
        assert s.depth == depth if s.family in ("gpt_neo", "gpt_neox") else s.depth >= depth
        assert s.config.tie_word_embeddings


def test_count_params_matches_a_built_model():
    suite = match_families(["mamba2"], width=64, depth=2, vocab_size=512, context=64)
    model = AutoModelForCausalLM.from_config(suite["mamba2"].config)
    assert suite["mamba2"].n_params == sum(p.numel() for p in model.parameters())
    assert padded_vocab(50277) == 50304 and padded_vocab(50257) == 50304


@pytest.mark.parametrize("family", MATCHED_FAMILIES)
def test_train_flops_per_token_counts_the_matmul_weights(family):
    """6 x (every nn.Linear weight of a built model, the tied head included) + the attention
    matmuls (12 L T d for the Transformers), at the matched suite's shape, up to the norms,
    biases, convs and SSM parameters the formula also counts (under 2% there)."""
    context, width, depth = 1024, 384, 8
    config = build_config(family, TrainSpec(width=width, depth=depth, context=context), vocab_size=50304)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    attention = 12 * depth * context * width if family in ("gpt_neo", "gpt_neox") else 0
    assert train_flops_per_token(config, context) == pytest.approx(6 * linear + attention, rel=0.02)


def test_mamba1_trains_through_the_linear_backward_scan_on_the_cpu():
    cpu = torch.device("cpu")
    assert mamba1_train_path(cpu) == "reprflow-autograd"
    model = build_from_config(
        build_config("mamba", TrainSpec(width=64, depth=2, context=16), vocab_size=512),
        seed=0,
        dtype=torch.float32,
        device=cpu,
    )
    assert prepare_training(model, "mamba", cpu) == "reprflow-autograd"
    mixers = [m for m in model.modules() if hasattr(m, "A_log")]
    assert mixers and all(getattr(m, "_reprflow_train_forward", False) for m in mixers)
    assert prepare_training(model, "gpt_neox", cpu) == "transformers"
    with pytest.raises(ValueError, match="Mamba-1 training path"):
        prepare_training(model, "mamba", cpu, path="triton")


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")],
        ),
    ],
)
def test_gpt_neo_trains_through_sdpa_with_eagers_loss_and_gradients(device):
    """GPT-Neo's training path swaps transformers' eager attention for the project's SDPA one
    (local and global layers, no 1/sqrt(d) scale): same loss and gradients as eager, and the
    naive head (full logits) equals the chunked one (float32 on the CPU; bf16 autocast on CUDA,
    where the tolerance is bf16's)."""
    cpu = torch.device(device)
    spec = TrainSpec(width=64, depth=2, context=40)
    config = build_config("gpt_neo", spec, vocab_size=512)
    assert config.window_size < 40 and set(config.attention_layers) == {"global", "local"}
    eager = build_from_config(config, seed=0, dtype=torch.float32, device=cpu)
    fast = copy.deepcopy(eager)
    assert prepare_training(eager, "gpt_neo", cpu, path="hf-eager") == "hf-eager"
    assert prepare_training(fast, "gpt_neo", cpu) == "reprflow-sdpa"
    assert "sdpa" in describe_kernels(fast, "gpt_neo", "reprflow-sdpa")
    x = torch.randint(0, 512, (3, 41), generator=torch.Generator().manual_seed(0)).to(cpu)
    ref = _loss(eager, x, cpu, fused_head=False)
    ref.backward()
    loss = _loss(fast, x, cpu)
    loss.backward()
    bf16 = cpu.type == "cuda"
    assert loss.item() == pytest.approx(ref.item(), rel=2e-2 if bf16 else 1e-5)
    for (name, p_ref), (_, p) in zip(eager.named_parameters(), fast.named_parameters()):
        if bf16:  # relative error of the whole gradient, bf16 matmuls on both sides
            assert float((p.grad - p_ref.grad).norm() / p_ref.grad.norm().clamp_min(1e-12)) < 5e-2, name
        else:
            torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-4, atol=1e-6, msg=name)
    with pytest.raises(ValueError, match="GPT-Neo training path"):
        prepare_training(fast, "gpt_neo", cpu, path="flash")


def test_unigram_baseline_matches_direct_count():
    rng = np.random.default_rng(0)
    train, val = rng.integers(0, 7, 500), rng.integers(0, 9, 80)
    counts = Counter(train.tolist())
    expected = -sum(math.log((counts.get(t, 0) + 1) / (500 + 10)) for t in val.tolist()) / 80
    assert unigram_cross_entropy(train, val, 10) == pytest.approx(expected, rel=1e-12)


def _byte_streams(val_fraction=0.1) -> Streams:
    train_docs, val_docs = split_documents(load_documents("nq_open"), val_fraction)
    enc = lambda docs: np.frombuffer("\x00".join(docs).encode(), dtype=np.uint8).astype(np.int32)  # noqa: E731
    return Streams(enc(train_docs), enc(val_docs), 256, "bytes", "nq_open")


@pytest.fixture(scope="module")
def streams():
    return _byte_streams()


def _spec(**kw):
    base = dict(
        corpus="nq_open",
        width=64,
        depth=2,
        context=64,
        batch_size=8,
        tokens=64 * 8 * 60,
        lr=1e-2,
        warmup_steps=5,
        eval_every=20,
        eval_tokens=4096,
        checkpoint_every=4,
        device="cpu",
        threads=1,
    )
    return TrainSpec.from_dict({**base, **kw})


def _run(tmp_path, family, spec, streams, name="m", **kw):
    return train_model(
        family,
        spec,
        streams=streams,
        out_dir=tmp_path / name,
        metrics_path=tmp_path / f"{name}.csv",
        summary_path=tmp_path / f"{name}.json",
        checkpoint_path=tmp_path / f"{name}.ckpt",
        progress=False,
        **kw,
    )


@pytest.mark.parametrize("family", ["gpt_neox", "mamba2"])
def test_training_beats_the_unigram_baseline(tmp_path, streams, family):
    summary = _run(tmp_path, family, _spec(), streams)
    assert summary["initial_val_loss"] > summary["unigram_val_loss"]
    assert summary["final_val_loss"] < summary["unigram_val_loss"] - 0.2, {
        k: summary[k] for k in ("final_val_loss", "unigram_val_loss")
    }
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert [int(r["step"]) for r in rows] == [0, 20, 40, 60]
    assert float(rows[-1]["val_loss"]) == pytest.approx(summary["final_val_loss"])
    assert json.loads((tmp_path / "m.json").read_text())["n_params"] == summary["n_params"]
    assert not (tmp_path / "m.ckpt").exists()  # removed once the model is saved


@pytest.mark.parametrize("family", MATCHED_FAMILIES)
def test_cpu_training_loss_is_the_models_loss(family):
    """The CPU training step feeds the base model's output to the LM head itself (float32 on
    the CPU): that must be exactly the model's logits, the step's loss the naive float32 loss
    (``fused_head=False``) to float32 rounding, and a bf16 head's loss the same up to bf16
    rounding. Embeddings are scaled up so the logits are far from 0."""
    cpu = torch.device("cpu")
    model = build_from_config(
        build_config(family, TrainSpec(width=64, depth=2, context=16), vocab_size=512),
        seed=0,
        dtype=torch.float32,
        device=cpu,
    )
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(50.0)
    x = torch.randint(0, 512, (2, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(input_ids=x[:, :-1], use_cache=False).logits
        hidden = model.base_model(input_ids=x[:, :-1], use_cache=False).last_hidden_state
        torch.testing.assert_close(model.get_output_embeddings()(hidden), logits, rtol=1e-5, atol=1e-5)
        naive = float(_loss(model, x, cpu, fused_head=False))
        step, bf16 = float(_loss(model, x, cpu)), float(_loss(model, x, cpu, head_dtype=torch.bfloat16))
    assert naive > 1.5 * math.log(512)  # far from uniform: the head's scale matters
    assert step == pytest.approx(naive, rel=1e-5)
    assert bf16 == pytest.approx(naive, rel=2e-2)


class _Killed(Exception):
    pass


def test_resume_after_kill_gives_the_same_weights(tmp_path, streams):
    spec = _spec(tokens=64 * 8 * 10, eval_every=5)
    _run(tmp_path, "gpt_neo", spec, streams, name="whole")

    def kill(step):
        if step == 7:  # after the checkpoint at step 4, before the one at step 8
            raise _Killed

    with pytest.raises(_Killed):
        _run(tmp_path, "gpt_neo", spec, streams, name="killed", on_step=kill)
    assert (tmp_path / "killed.ckpt").is_file() and not (tmp_path / "killed").exists()
    _run(tmp_path, "gpt_neo", spec, streams, name="killed")
    whole = AutoModelForCausalLM.from_pretrained(tmp_path / "whole").state_dict()
    resumed = AutoModelForCausalLM.from_pretrained(tmp_path / "killed").state_dict()
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key


def test_checkpoint_of_another_recipe_is_not_resumed(tmp_path, streams):
    spec = _spec(tokens=64 * 8 * 6)
    with pytest.raises(_Killed):
        _run(tmp_path, "gpt_neox", spec, streams, on_step=lambda s: (_ for _ in ()).throw(_Killed) if s == 5 else None)
    other = _run(tmp_path, "gpt_neox", _spec(tokens=64 * 8 * 6, lr=5e-3), streams)
    reference = _run(tmp_path, "gpt_neox", _spec(tokens=64 * 8 * 6, lr=5e-3), streams, name="ref")
    assert other["final_val_loss"] == reference["final_val_loss"]


def test_saved_model_loads_through_the_pipeline_path(tmp_path, streams):
    spec = _spec(tokens=64 * 8 * 4)
    summary = _run(tmp_path, "mamba", spec, streams)
    model = load_model(str(tmp_path / "m"), init=InitSpec("pretrained"), seed=None)
    val = torch.as_tensor(_windows(streams.val, 64)[:64], dtype=torch.long)
    with torch.no_grad():
        loss = sum(float(_loss(model, val[i : i + 8], torch.device("cpu"))) for i in range(0, 64, 8)) / 8
    assert loss == pytest.approx(summary["final_val_loss"], rel=1e-5)
    fresh = load_model(str(tmp_path / "m"), init=InitSpec("default"), seed=3)  # the random arm: same config
    assert fresh.config.to_dict() == model.config.to_dict() or fresh.config.hidden_size == model.config.hidden_size
    assert sum(p.numel() for p in fresh.parameters()) == summary["n_params"] == count_params(model.config)[0]


def _config(model):
    raw = yaml.safe_load((PROJECT_ROOT / "config" / "demo.yaml").read_text())
    raw.pop("custom_tasks", None)  # it names demo models this config drops
    return {**raw, "models": [model]}


def test_train_block_is_validated():
    entry = {
        "name": "t",
        "family": "gpt_neox",
        "hf_id": "runs/demo/data/models/t",
        "tokenizer": "gpt-neox-20b",
        "train": {"corpus": "nq_open", "width": 64, "depth": 2, "tokens": 1000},
    }
    cfg = validate_config(_config(entry))
    assert cfg.models[0].train["batch_size"] == 4  # schema default filled in
    with pytest.raises(ConfigError, match=r"config.models\[0\]: has both `tiny` and `train`"):
        validate_config(_config({**entry, "tiny": {"seed": 1}}))
    with pytest.raises(ConfigError, match=r"config.models\[0\].train.depth: 3 must be even"):
        validate_config(
            _config({**entry, "family": "gpt_neo", "tokenizer": "gpt2", "train": {**entry["train"], "depth": 3}})
        )
    with pytest.raises(ConfigError, match=r"config.models\[0\].train: unknown key 'width_x'"):
        validate_config(_config({**entry, "train": {**entry["train"], "width_x": 1}}))


def test_gpt_neo_query_scaling_trains_like_scaled_attention():
    """GPT-Neo's scores are q.k without 1/sqrt(head_dim). With gpt_neo_query_scale, q_proj starts
    s = 1/sqrt(head_dim) times smaller and trains with lr * s and weight decay / s: after AdamW
    steps its weights must be s times those of the same model whose q_proj output is multiplied by
    s (scaled attention, trained plainly), and every other weight equal."""
    from reprflow.training.loop import _optimizer, _query_scale, initial_model

    spec = TrainSpec(width=64, depth=2, context=16, lr=1e-2, grad_clip=0.0, seed=0)  # no clipping: exact equivalence
    config = build_config("gpt_neo", spec, vocab_size=128)
    reparam = initial_model(config, spec, "cpu", dtype=torch.float64)  # the training run's own init
    scaled = build_from_config(config, seed=0, dtype=torch.float64, device="cpu")
    s = _query_scale(reparam, spec)
    assert s == pytest.approx(1 / math.sqrt(16))
    queries = [n for n, _ in reparam.named_parameters() if n.endswith("q_proj.weight")]
    assert len(queries) == 2
    for name, p in reparam.named_parameters():  # queries start s times smaller, the rest as built
        assert torch.equal(p, scaled.get_parameter(name) * (s if name in queries else 1.0))
    for block in scaled.transformer.h:  # scaled attention: scores (s q).k
        block.attn.attention.q_proj.register_forward_hook(lambda mod, inp, out: out * s)
    start = scaled.get_parameter(queries[0]).detach().clone()
    opt_reparam = _optimizer(reparam, spec)
    opt_scaled = _optimizer(scaled, TrainSpec(**{**vars(spec), "gpt_neo_query_scale": False}))
    assert [g["lr_scale"] for g in opt_reparam.param_groups] == [1.0, 1.0, s]
    x = torch.randint(0, 128, (4, 17), generator=torch.Generator().manual_seed(1))
    for model, opt in ((reparam, opt_reparam), (scaled, opt_scaled)):
        model.train()
        for _ in range(5):
            for group in opt.param_groups:
                group["lr"] = spec.lr * group["lr_scale"]
            loss = _loss(model, x, torch.device("cpu"))
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        y = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(2))
        after = [model(input_ids=y).logits for model in (reparam, scaled)]
    a, b = dict(reparam.named_parameters()), dict(scaled.named_parameters())
    # the same function (GPT-Neo's attention computes in float32, and Adam normalises the tiny
    # early q/k gradients, so rounding shows at 1e-3 in q/k and well below elsewhere; measured:
    # logits 4e-4 apart, against 1.4 between the plain unscaled GPT-Neo and scaled attention)
    torch.testing.assert_close(after[0], after[1], rtol=0, atol=2e-3)
    for name in a:
        expected = s * b[name] if name.endswith("q_proj.weight") else b[name]
        tol = 2e-3 if name.endswith(("q_proj.weight", "k_proj.weight")) else 2e-4
        torch.testing.assert_close(a[name], expected, rtol=0, atol=tol, msg=name)
    assert (b[queries[0]] - start).abs().max() > 0.01  # it trained


def test_demo_models_are_a_matched_suite():
    """config/demo.yaml: one recipe, one tokenizer (the shipped nq-bpe-2048), the four families
    matched within 10% at the trained context (GPT-Neo's position rows past it are never trained)."""
    from reprflow.config import load_config
    from reprflow.prompts.tokenizers import load_tokenizer

    demo = load_config(PROJECT_ROOT / "config" / "demo.yaml")
    assert {m.family for m in demo.models} == set(MATCHED_FAMILIES)
    assert {m.tokenizer for m in demo.models} == {"nq-bpe-2048"}
    recipes = {json.dumps({k: v for k, v in m.train.items() if k != "seed"}, sort_keys=True) for m in demo.models}
    assert len(recipes) == 1
    spec = TrainSpec.from_dict(demo.models[0].train)
    vocab = padded_vocab(len(load_tokenizer("nq-bpe-2048")))
    assert vocab == 2048
    suite = match_families(MATCHED_FAMILIES, width=spec.width, depth=spec.depth, vocab_size=vocab, context=spec.context)
    for m in demo.models:  # what train_model builds is the matched config (plus GPT-Neo's longer table)
        built = build_config(m.family, spec, vocab_size=vocab, positions=m.max_context)
        assert count_params(built)[1] == suite[m.family].n_non_embedding


def test_token_cache_is_tied_to_the_tokenizer_that_made_it(tmp_path, monkeypatch):
    """A cached stream is reused only by the tokenizer whose tokenizer.json made it: another
    one (a rebuilt tokenizer under the same name) tokenizes again, and where the corpus is not
    installed it is one ConfigError instead of silently wrong token ids."""
    from reprflow.training import loop

    spec = TrainSpec(corpus="nq_open", val_fraction=0.1)
    fresh = loop.load_streams(spec, "nq-bpe-2048", cache_dir=tmp_path)
    cache = tmp_path / "nq_open_nq-bpe-2048_val0.1.npz"
    with np.load(cache) as data:
        assert "tokenizer_sha256" in data.files
    # the same tokenizer reuses the cache without reading the corpus
    monkeypatch.setattr(loop, "load_documents", lambda name: pytest.fail("corpus read despite a valid cache"))
    again = loop.load_streams(spec, "nq-bpe-2048", cache_dir=tmp_path)
    assert np.array_equal(again.train, fresh.train) and np.array_equal(again.val, fresh.val)
    # a cache written by another tokenizer (here: wrong ids, another digest) is not trusted
    np.savez_compressed(cache, train=fresh.train[:10], val=fresh.val[:10], tokenizer_sha256=np.array("0" * 64))
    monkeypatch.undo()
    rebuilt = loop.load_streams(spec, "nq-bpe-2048", cache_dir=tmp_path)
    assert np.array_equal(rebuilt.train, fresh.train)
    # ... and without the corpus it is an error naming the cache
    np.savez_compressed(cache, train=fresh.train[:10], val=fresh.val[:10])  # an older cache: no digest

    def missing(name):
        raise ConfigError(f"corpus {name!r}: not installed")

    monkeypatch.setattr(loop, "load_documents", missing)
    with pytest.raises(ConfigError, match="another tokenizer.*not installed"):
        loop.load_streams(spec, "nq-bpe-2048", cache_dir=tmp_path)


@pytest.mark.parametrize("width", [64, 128, 256, 384, 512, 768, 1024])
def test_mamba2_in_proj_is_a_multiple_of_8(width):
    """transformers' Mamba2 in eval mode gives causal_conv1d's compiled kernel a channel-last slice
    of in_proj's output, whose strides must be multiples of 8 (block_counts.mamba2_head_dim)."""
    c = build_config("mamba2", TrainSpec(width=width, depth=2, context=256), vocab_size=512)
    assert c.num_heads * c.head_dim == c.expand * width
    assert (2 * c.expand * width + 2 * c.n_groups * c.state_size + c.num_heads) % 8 == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("family", MATCHED_FAMILIES)
def test_matched_width_trains_and_validates_on_cuda(tmp_path, streams, family):
    """The matched suite's width (384) for a few steps on CUDA, validation passes included (eval
    mode: transformers' inference path with whatever compiled kernels are installed)."""
    spec = _spec(
        width=384, depth=2, context=64, batch_size=8, tokens=64 * 8 * 6, eval_every=3, checkpoint_every=3, device="cuda"
    )
    summary = _run(tmp_path, family, spec, streams)
    assert summary["device"].startswith("cuda") and summary["steps"] == 6
    assert summary["final_val_loss"] < summary["initial_val_loss"]
