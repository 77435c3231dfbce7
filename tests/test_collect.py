"""Tests for reprflow.collect_states: states in memory equal Hugging Face's hidden states; README example runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import reprflow.collect as collect
from reprflow import collect_states
from reprflow.errors import ConfigError, InvalidParameterError, PromptError
from reprflow.metrics import cka_matrix, inter_token_cosine
from reprflow.models.tiny import TINY_TOKENIZERS, build_tiny_model
from reprflow.prompts.tokenizers import load_tokenizer

README = Path(__file__).resolve().parents[1] / "README.md"
TEXTS = ["the key value pair", "lost in the middle of a long context window", "a b", "value pair key the key"]


_DIRS: dict[str, Path] = {}


def _saved(family: str, tmp_path_factory) -> Path:
    """A tiny random model and its tokenizer saved with save_pretrained (a hub-like folder), built once."""
    if family not in _DIRS:
        path = build_tiny_model(
            family, out_dir=tmp_path_factory.mktemp(family) / "model", seed=0, overrides={"num_hidden_layers": 2}
        )
        load_tokenizer(TINY_TOKENIZERS[family]).save_pretrained(path)
        _DIRS[family] = path
    return _DIRS[family]


@pytest.fixture(scope="module", params=["gpt_neox", "mamba"])
def tiny_dir(request, tmp_path_factory):
    return _saved(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def neox_dir(tmp_path_factory):
    return _saved("gpt_neox", tmp_path_factory)


def test_last_and_all_positions_equal_output_hidden_states(tiny_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    model.train()  # collect_states runs in eval mode and restores the mode
    last = collect_states(model, tokenizer, TEXTS, view="hf", positions="last", batch_size=3)
    full = collect_states(model, tokenizer, TEXTS, view="hf", positions="all", batch_size=3)
    assert model.training
    model.eval()
    n_states = model.config.num_hidden_layers + 1
    assert last.view == "hf" and last.positions == "last" and len(last.state_names) == n_states
    assert last.states.shape == (n_states, len(TEXTS), model.config.hidden_size)
    assert last.states.dtype == np.float32 and isinstance(full.states, list) and len(full.states) == len(TEXTS)
    for i, text in enumerate(TEXTS):
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            ref = torch.stack(model(ids, output_hidden_states=True).hidden_states)[:, 0].numpy()  # [K, n, H]
        assert full.states[i].shape == ref.shape and last.n_tokens[i] == ref.shape[1]
        np.testing.assert_allclose(full.states[i], ref, atol=1e-5, rtol=0)
        np.testing.assert_allclose(last.states[:, i], ref[:, -1], atol=1e-5, rtol=0)
    residual = collect_states(model, tokenizer, TEXTS, view="residual", batch_size=4)
    assert residual.state_names[0] == "embed" and residual.state_names[-1] == f"block_{n_states - 1}"


def test_bad_input_gets_one_clear_error(neox_dir):
    model = AutoModelForCausalLM.from_pretrained(neox_dir)
    tokenizer = AutoTokenizer.from_pretrained(neox_dir)
    with pytest.raises(PromptError, match=r"wrap a single text as \[text\]"):
        collect_states(model, tokenizer, "one text")
    with pytest.raises(ConfigError, match=r"view='logit'; expected one of \['hf', 'residual'\]"):
        collect_states(model, tokenizer, TEXTS, view="logit")
    with pytest.raises(ConfigError, match="positions='first'"):
        collect_states(model, tokenizer, TEXTS, positions="first")
    model.config.max_position_embeddings = 4  # GPT-Neo's position table would raise an IndexError
    with pytest.raises(
        PromptError, match=r"text 1 has \d+ tokens, above the context window of 4 of this gpt_neox model"
    ):
        collect_states(model, tokenizer, TEXTS)


def test_readme_notebook_example_runs(neox_dir, capsys):
    block = re.search(r"## From a notebook.*?```python\n(.*?)```", README.read_text(), re.S)
    assert block, "README has no '## From a notebook' python example"
    code = block[1]
    assert len(code.strip().splitlines()) <= 14
    assert "EleutherAI/pythia-160m" in code
    namespace: dict = {}
    exec(compile(code.replace("EleutherAI/pythia-160m", str(neox_dir)), "README.md", "exec"), namespace)
    last, full, probe = namespace["last"], namespace["full"], namespace["probe"]
    assert last.states.shape[1] == 4 and probe.predict(last.states[-1]).shape == (4,)
    assert full.states[0].shape[0] == len(full.state_names)
    np.testing.assert_allclose(inter_token_cosine(full.states[1]).shape, (len(full.state_names),))
    assert cka_matrix(full.states[1]).shape == (len(full.state_names),) * 2
    assert "[" in capsys.readouterr().out


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_states_match_cpu(neox_dir):
    """device='cuda' (or 'auto') moves the model there; states equal the CPU ones within float32 noise."""
    model = AutoModelForCausalLM.from_pretrained(neox_dir)
    tokenizer = AutoTokenizer.from_pretrained(neox_dir)
    cpu = collect_states(model, tokenizer, TEXTS, positions="all")
    gpu = collect_states(model, tokenizer, TEXTS, positions="all", device="auto")
    assert next(model.parameters()).device.type == "cuda"
    for a, b in zip(gpu.states, cpu.states):
        np.testing.assert_allclose(a, b, atol=1e-4 * np.abs(b).max(), rtol=0)


_LAST_PEAK = """
import resource, torch
from reprflow.capture import CapturedBatch
from reprflow.sinks import CapturedStates, MemorySink, RunInfo, feed
torch.set_num_threads(1)
K, N, D, B = 66, 512, 512, 8  # result: 66 x 512 x 512 float32 = 66 MiB, batches of 8 prompts

def batches():
    for start in range(0, N, B):
        last = torch.randn(K, B, D)
        states = CapturedBatch(last, None, torch.full((B,), 4), (), ())
        yield CapturedStates(tuple(range(start, start + B)), (4,) * B, None, False, states, ())

base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sink = MemorySink(N, states=range(K), positions="last")
sink.start(RunInfo((), {}, D, N))
feed(batches(), [sink])
out = sink.result()
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024, out.nbytes)
"""


def test_last_states_are_gathered_into_the_result_as_batches_arrive():
    # MemorySink kept every batch's host copy until result() and then built the result beside
    # them: 2x the result at the end (34 GB at 25,000 prompts x 66 states x 2560; on a GPU half
    # of it pinned). Now each copy goes into the preallocated result when the next batch comes.
    out = subprocess.run(
        [sys.executable, "-c", _LAST_PEAK],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"},
    )
    extra, size = (int(v) for v in out.stdout.split())
    assert extra < 1.2 * size, (extra, size)


def test_result_larger_than_host_memory_is_refused_before_any_forward(neox_dir, monkeypatch):
    # positions="all" held every token state of every text in float32 (2.8 GB per 4K-token
    # text on a 64-layer, 2560-wide model) with no check: a long list of texts ran for hours
    # and then died out of memory. The size is now checked against MemAvailable up front.
    model = AutoModelForCausalLM.from_pretrained(neox_dir)
    tokenizer = AutoTokenizer.from_pretrained(neox_dir)
    n_tokens = sum(len(ids) for ids in tokenizer(TEXTS)["input_ids"])
    need = (model.config.num_hidden_layers + 1) * n_tokens * model.config.hidden_size * 4
    monkeypatch.setattr(collect, "_available_host_bytes", lambda: need - 1)
    monkeypatch.setattr(model, "forward", None)  # any forward pass would fail differently
    with pytest.raises(ConfigError, match=r"collect_states: the states asked for take .* positions='last'"):
        collect_states(model, tokenizer, TEXTS, positions="all")
    monkeypatch.undo()
    monkeypatch.setattr(collect, "_available_host_bytes", lambda: need)
    assert len(collect_states(model, tokenizer, TEXTS, positions="all").states) == len(TEXTS)


def test_progress_bar_counts_every_token(neox_dir, capsys):
    # collect_states ran 25,000 texts with no progress bar at all; it now shows one (tokens).
    model = AutoModelForCausalLM.from_pretrained(neox_dir)
    tokenizer = AutoTokenizer.from_pretrained(neox_dir)
    out = collect_states(model, tokenizer, TEXTS, progress=True)
    total = int(out.n_tokens.sum())
    assert re.search(rf"collect_states: 100%.* {total}(\.0)?/{total}(\.0)? ", capsys.readouterr().err)


def test_a_tokenizer_that_does_not_fit_the_model_is_refused(tmp_path):
    path = build_tiny_model(
        "gpt_neox",
        out_dir=tmp_path / "small-vocab",
        seed=0,
        overrides={"num_hidden_layers": 2, "vocab_size": 128, "bos_token_id": 0, "eos_token_id": 0},
    )
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = load_tokenizer("gpt-neox-20b")  # ids up to 50276, the model embeds 128
    largest = max(max(e) for e in tokenizer(TEXTS)["input_ids"])
    with pytest.raises(InvalidParameterError) as info:
        collect_states(model, tokenizer, TEXTS)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert re.fullmatch(
        r"collect_states: text 0 has token id \d+, but the model's input embedding table has 128 rows "
        rf"\(ids 0\.\.127; 4 text\(s\) out of range\): the tokenizer's vocabulary \(largest id {largest} in these "
        r"texts\) does not fit this gpt_neox model; pass the tokenizer the model was trained with",
        message,
    ), message


def test_a_pad_id_outside_the_vocabulary_is_refused(neox_dir):
    model = AutoModelForCausalLM.from_pretrained(neox_dir)
    real = AutoTokenizer.from_pretrained(neox_dir)

    class BadPad:  # a tokenizer whose pad id is no token of the model (the real one refuses to hold such an id)
        pad_token_id = model.get_input_embeddings().num_embeddings + 3
        eos_token_id = real.eos_token_id

        def __call__(self, texts, **kwargs):
            return real(texts, **kwargs)

    with pytest.raises(InvalidParameterError, match=r"the tokenizer's pad id 50307 .* table of 50304 rows"):
        collect_states(model, BadPad(), TEXTS)


@pytest.mark.parametrize("tokenizer", [None, "gpt-neox-20b"])
def test_a_tokenizer_that_is_not_callable_is_refused(neox_dir, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(neox_dir)
    name = "None" if tokenizer is None else "str"
    with pytest.raises(ValueError, match=rf"collect_states: tokenizer is {name}, not a callable tokenizer; pass"):
        collect_states(model, tokenizer, TEXTS)
