"""Hook capture: parity with output_hidden_states, padding, hook scoping."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from reprflow.capture import capture_states, forward_states, last_token_index, state_names
from reprflow.errors import ReprflowError
from reprflow.models import InitSpec, build_tiny_model, get_layout, load_model, view_indices

FAMILIES = ["gpt_neo", "gpt_neox", "mamba", "mamba2", "gpt2", "llama", "bamba"]
VOCAB = 256
# GPT-Neo: alternating global/local attention with an 8-token window, far below the 40-token
# prompts below, so the local-attention mask is exercised.
OVERRIDES = {"gpt_neo": {"vocab_size": VOCAB, "window_size": 8, "bos_token_id": 0, "eos_token_id": 0}}
LENGTHS = [24, 13, 19]  # right-padded batch, longest first and not first-only


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """family -> model, each built, saved with save_pretrained and loaded back through the registry."""
    root = tmp_path_factory.mktemp("tiny")
    models = {}
    for i, family in enumerate(FAMILIES):
        path = build_tiny_model(
            family, out_dir=root / family, seed=100 + i, overrides=OVERRIDES.get(family, {"vocab_size": VOCAB})
        )
        models[family] = load_model(str(path), init=InitSpec("pretrained"), seed=None)
    return models


def _padded_batch(lengths, *, seed=0):
    gen = torch.Generator().manual_seed(seed)
    n_tokens = max(lengths)
    input_ids = torch.randint(1, VOCAB, (len(lengths), n_tokens), generator=gen)
    mask = (torch.arange(n_tokens)[None, :] < torch.tensor(lengths)[:, None]).long()
    input_ids = input_ids.masked_fill(mask == 0, 0)  # pad id 0 on the right
    return input_ids, mask


def test_state_names():
    assert state_names(3) == ["embed", "block_1", "block_2", "block_3", "final_norm"]
    with pytest.raises(ReprflowError):
        state_names(0)


def test_tiny_gpt_neo_mixes_global_and_local_attention(tiny_models):
    config = tiny_models["gpt_neo"].config
    assert config.attention_layers == ["global", "local", "global", "local"]
    assert config.window_size < min(LENGTHS)


@pytest.mark.parametrize("family", FAMILIES)
def test_hf_view_equals_output_hidden_states_exactly(tiny_models, family):
    model = tiny_models[family]
    layout = get_layout(model)
    input_ids, mask = _padded_batch(LENGTHS)
    captured = forward_states(model, input_ids, mask, token_rows=range(len(LENGTHS)))
    with torch.no_grad():
        hidden = model(input_ids, attention_mask=mask, output_hidden_states=True, use_cache=False).hidden_states
    n_blocks = model.config.num_hidden_layers
    names = state_names(n_blocks)
    hf = view_indices(layout, n_blocks)["hf"]
    assert captured.state_names == tuple(names)
    assert captured.last.shape == (n_blocks + 2, len(LENGTHS), model.config.hidden_size)
    assert len(hf) == len(hidden), f"{family}: hf view has {len(hf)} entries, output_hidden_states {len(hidden)}"
    for j, (k, ref) in enumerate(zip(hf, hidden)):
        for row, n in enumerate(LENGTHS):
            got = captured.tokens[k, row, :n]
            assert torch.equal(got, ref[row, :n]), (
                f"{family}: hidden_states[{j}] != captured '{names[k]}' (row {row}), "
                f"max_diff={float((got - ref[row, :n]).abs().max()):.3g}"
            )
            assert torch.equal(captured.last[k, row], ref[row, n - 1]), (
                f"{family}: last token of '{names[k]}' row {row}"
            )


@pytest.mark.parametrize("family", FAMILIES)
def test_right_padding_matches_each_prompt_alone(tiny_models, family):
    model = tiny_models[family]
    input_ids, mask = _padded_batch(LENGTHS, seed=1)
    batched = forward_states(model, input_ids, mask, token_rows=[1])
    for row, n in enumerate(LENGTHS):
        alone = forward_states(model, input_ids[row : row + 1, :n], mask[row : row + 1, :n], token_rows=[0])
        diff = (batched.last[:, row] - alone.last[:, 0]).abs().max()
        assert diff <= 1e-5, f"{family}: row {row} (length {n}) last-token max_diff={float(diff):.3g}"
        if row == 1:
            assert batched.tokens.shape[2] == n
            assert torch.allclose(batched.tokens[:, 0], alone.tokens[:, 0], atol=1e-5, rtol=0)


def test_unchecked_padding_gives_the_same_states(tiny_models):
    """check_padding=False (the extraction loop checks on the host) changes nothing else."""
    model = tiny_models["mamba2"]
    input_ids, mask = _padded_batch(LENGTHS, seed=2)
    checked = forward_states(model, input_ids, mask, token_rows=[0, 2])
    unchecked = forward_states(model, input_ids, mask, token_rows=[0, 2], check_padding=False)
    assert torch.equal(checked.last, unchecked.last) and torch.equal(checked.tokens, unchecked.tokens)
    assert torch.equal(checked.lengths, unchecked.lengths)
    # lengths known on the host (the extraction loop's): nothing read back, the same states
    hosted = forward_states(model, input_ids, mask, token_rows=[0, 2], check_padding=False, row_lengths=LENGTHS)
    assert torch.equal(checked.last, hosted.last) and torch.equal(checked.tokens, hosted.tokens)


def test_token_states_are_zero_past_each_length(tiny_models):
    model = tiny_models["llama"]
    input_ids, mask = _padded_batch(LENGTHS)
    captured = forward_states(model, input_ids, mask, token_rows=[2, 1])
    assert captured.token_rows == (2, 1)
    assert captured.tokens.shape[2] == max(LENGTHS[2], LENGTHS[1])  # trimmed to the longest requested row
    assert torch.count_nonzero(captured.tokens[:, 1, LENGTHS[1] :]) == 0  # row 1 is the shorter one
    assert torch.count_nonzero(captured.tokens[:, 1, : LENGTHS[1]]) > 0
    assert captured.lengths.tolist() == LENGTHS


def test_embed_state_is_the_embedding_sum(tiny_models):
    """h0 is the input of block 1: token + position embeddings for GPT-2 style models (float64 reference)."""
    model = tiny_models["gpt2"]
    input_ids, mask = _padded_batch([12])
    captured = forward_states(model, input_ids, mask, token_rows=[0])
    wte = model.transformer.wte.weight.detach().double().numpy()
    wpe = model.transformer.wpe.weight.detach().double().numpy()
    reference = wte[input_ids[0].numpy()] + wpe[:12]
    np.testing.assert_allclose(captured.tokens[0, 0].double().numpy(), reference, rtol=0, atol=1e-6)


def test_lm_head_is_not_computed(tiny_models):
    model = tiny_models["gpt_neox"]
    calls = []
    handle = model.get_output_embeddings().register_forward_hook(lambda *a: calls.append(1))
    try:
        forward_states(model, *_padded_batch([5, 3]))
    finally:
        handle.remove()
    assert calls == []


def _hook_counts(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_removed_after_exception_in_forward(tiny_models):
    model = tiny_models["mamba"]
    layout = get_layout(model)
    before = _hook_counts(model)

    def keep(name, hidden):
        if name == "block_2":
            raise RuntimeError("boom in keep")
        return hidden[:, -1]

    input_ids, mask = _padded_batch([6])
    with pytest.raises(RuntimeError, match="boom in keep"):
        with capture_states(model, layout, keep):
            assert _hook_counts(model) == before + len(state_names(4))
            model.base_model(input_ids=input_ids, attention_mask=mask, use_cache=False)
    assert _hook_counts(model) == before


def test_hooks_removed_after_exception_in_body(tiny_models):
    model = tiny_models["gpt_neo"]
    before = _hook_counts(model)
    with pytest.raises(KeyError):
        with capture_states(model, get_layout(model), lambda n, h: h):
            raise KeyError("body")
    assert _hook_counts(model) == before


def test_second_forward_in_one_context_raises(tiny_models):
    model = tiny_models["gpt2"]
    input_ids, mask = _padded_batch([4])
    with capture_states(model, get_layout(model), lambda n, h: None):
        model.base_model(input_ids=input_ids, attention_mask=mask)
        with pytest.raises(ReprflowError, match="captured twice"):
            model.base_model(input_ids=input_ids, attention_mask=mask)


def test_left_padding_is_rejected():
    mask = torch.tensor([[1, 1, 1], [0, 1, 1]])
    with pytest.raises(ReprflowError, match="row 1 .*right-padded"):
        last_token_index(mask)
    with pytest.raises(ReprflowError, match="row 0"):
        last_token_index(torch.tensor([[0, 0, 0]]))
    assert last_token_index(torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]])).tolist() == [1, 0, 2]


def test_token_rows_out_of_range(tiny_models):
    with pytest.raises(ReprflowError, match="token_rows"):
        forward_states(tiny_models["gpt2"], *_padded_batch([3, 2]), token_rows=[2])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("family", ["gpt_neo", "mamba2"])
def test_cuda_bf16_random_init_and_capture(tmp_path, family):
    path = str(build_tiny_model(family, out_dir=tmp_path / family, seed=0, overrides={"vocab_size": VOCAB}))
    cuda_rng = torch.cuda.get_rng_state()
    a = load_model(path, init=InitSpec("xavier"), seed=3, device="cuda", dtype=torch.bfloat16)
    b = load_model(path, init=InitSpec("xavier"), seed=3, device="cuda", dtype=torch.bfloat16)
    assert torch.equal(torch.cuda.get_rng_state(), cuda_rng)
    assert {(p.device.type, p.dtype) for p in a.parameters()} == {("cuda", torch.bfloat16)}
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))

    model = load_model(path, init=InitSpec("pretrained"), seed=None, device="cuda", dtype=torch.bfloat16)
    input_ids, mask = (t.cuda() for t in _padded_batch(LENGTHS))
    captured = forward_states(model, input_ids, mask, token_rows=range(len(LENGTHS)))
    assert captured.last.device.type == "cuda"
    # Mamba keeps its residual in fp32 (residual_in_fp32): states are stacked at the promoted dtype
    assert captured.last.dtype in (torch.bfloat16, torch.float32)
    with torch.no_grad():
        hidden = model(input_ids, attention_mask=mask, output_hidden_states=True, use_cache=False).hidden_states
    hf = view_indices(get_layout(model), model.config.num_hidden_layers)["hf"]
    for j, (k, ref) in enumerate(zip(hf, hidden, strict=True)):
        for row, n in enumerate(LENGTHS):
            got, want = captured.tokens[k, row, :n], ref[row, :n].to(captured.tokens.dtype)  # lossless upcast
            assert torch.equal(got, want), (
                f"{family}: hidden_states[{j}] row {row} max_diff={float((got - want).abs().max()):.3g}"
            )


def test_block_output_kind_mismatch_is_reported(tiny_models):
    model = tiny_models["gpt_neox"]
    wrong = dataclasses.replace(get_layout(model), block_output="tuple")
    with pytest.raises(ReprflowError, match="says blocks return a tuple but 'block_1' returned a Tensor"):
        forward_states(model, *_padded_batch([4]), layout=wrong)
