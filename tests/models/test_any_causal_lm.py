"""Any Hugging Face causal LM: generic layout discovery, capture and the hf-view check.

Each model type is built tiny and random (2 blocks, hidden 32, vocabulary 128), saved with
``save_pretrained`` and loaded back through :func:`reprflow.models.load_model`, as a user's
checkpoint would be. Hybrids get one SSM/recurrent/conv block and one attention block.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from reprflow.capture import forward_states, state_names
from reprflow.errors import ReprflowError
from reprflow.models import InitSpec, get_layout, load_model, model_max_context, view_indices
from reprflow.models.hf_view import HfViewMismatchError, check_hf_view, hf_hidden_states, verify_hf_view

VOCAB, HIDDEN, N_BLOCKS = 128, 32, 2
LENGTHS = [9, 5, 7]  # right-padded batch
_ATTN = dict(
    vocab_size=VOCAB,
    hidden_size=HIDDEN,
    num_hidden_layers=N_BLOCKS,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=64,
    max_position_embeddings=256,
)
_SSM = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=N_BLOCKS, state_size=8, expand=2, conv_kernel=4)
_MAMBA2_MIXER = dict(
    mamba_n_heads=4, mamba_d_head=16, mamba_expand=2, mamba_d_state=8, mamba_n_groups=1, mamba_chunk_size=16
)

#: model_type -> (config kwargs, expected (blocks path from the causal LM, final norm path))
CASES = {
    # the paper's four families
    "gpt_neo": (
        dict(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            num_layers=N_BLOCKS,
            num_heads=4,
            attention_types=[[["global", "local"], 1]],
            window_size=4,
            bos_token_id=0,
            eos_token_id=0,
        ),
        ("transformer.h", "transformer.ln_f"),
    ),
    "gpt_neox": (dict(_ATTN, rotary_pct=0.25), ("gpt_neox.layers", "gpt_neox.final_layer_norm")),
    "mamba": (_SSM, ("backbone.layers", "backbone.norm_f")),
    "mamba2": (dict(_SSM, num_heads=4, head_dim=16, n_groups=1, chunk_size=16), ("backbone.layers", "backbone.norm_f")),
    # plain decoders and an SSM
    "gpt2": (
        dict(
            vocab_size=VOCAB, n_embd=HIDDEN, n_layer=N_BLOCKS, n_head=4, n_positions=256, bos_token_id=0, eos_token_id=0
        ),
        ("transformer.h", "transformer.ln_f"),
    ),
    "llama": (_ATTN, ("model.layers", "model.norm")),
    "qwen2": (_ATTN, ("model.layers", "model.norm")),
    "falcon_mamba": (_SSM, ("backbone.layers", "backbone.norm_f")),
    # recurrent / SSM / conv hybrids
    "recurrent_gemma": (
        dict(
            _ATTN,
            num_key_value_heads=1,
            lru_width=HIDDEN,
            attention_window_size=4,
            block_types=["recurrent", "attention"],
        ),
        ("model.layers", "model.final_norm"),
    ),
    "bamba": (dict(_ATTN, attn_layer_indices=[1], **_MAMBA2_MIXER), ("model.layers", "model.final_layernorm")),
    "jamba": (
        dict(
            _ATTN,
            attn_layer_period=2,
            attn_layer_offset=1,
            expert_layer_period=2,
            expert_layer_offset=1,
            num_experts=2,
            num_experts_per_tok=1,
            mamba_d_state=8,
            mamba_d_conv=4,
            mamba_expand=2,
        ),
        ("model.layers", "model.final_layernorm"),
    ),
    "zamba2": (
        dict(
            _ATTN,
            mamba_d_state=8,
            mamba_ngroups=1,
            mamba_headdim=16,
            n_mamba_heads=4,
            layers_block_type=["mamba", "hybrid"],
            num_mem_blocks=1,
            chunk_size=16,
            attention_head_dim=8,
        ),
        ("model.layers", "model.final_layernorm"),
    ),
    "falcon_h1": (
        dict(
            _ATTN,
            head_dim=8,
            mamba_d_ssm=64,
            mamba_n_heads=4,
            mamba_d_head=16,
            mamba_d_state=8,
            mamba_n_groups=1,
            mamba_chunk_size=16,
            mamba_expand=2,
        ),
        ("model.layers", "model.final_layernorm"),
    ),
    "granitemoehybrid": (
        dict(
            _ATTN,
            layer_types=["mamba", "attention"],
            num_local_experts=2,
            num_experts_per_tok=1,
            shared_intermediate_size=64,
            **_MAMBA2_MIXER,
        ),
        ("model.layers", "model.norm"),
    ),
    "nemotron_h": (
        dict(
            _ATTN,
            hybrid_override_pattern="M*",
            mamba_num_heads=4,
            mamba_head_dim=16,
            ssm_state_size=8,
            n_groups=1,
            chunk_size=16,
            head_dim=8,
        ),
        ("model.layers", "model.norm_f"),
    ),
    # LFM2 names its final norm "embedding_norm": found by position, not by name
    "lfm2": (dict(_ATTN, layer_types=["conv", "full_attention"]), ("model.layers", "model.embedding_norm")),
    # OPT registers its final norm before the layers: an OVERRIDES entry
    "opt": (
        dict(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            num_hidden_layers=N_BLOCKS,
            num_attention_heads=4,
            ffn_dim=64,
            word_embed_proj_dim=HIDDEN,
            max_position_embeddings=256,
        ),
        ("model.decoder.layers", "model.decoder.final_layer_norm"),
    ),
}
#: families whose output_hidden_states starts at block_1 (no embeddings) and keeps block_L
BLOCK_OUTPUTS = {"mamba", "mamba2", "falcon_mamba"}


def _save(root, model_type: str, kwargs: dict, seed: int) -> str:
    config = AutoConfig.for_model(model_type, **kwargs)
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_config(config)
    path = root / model_type
    model.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """model_type -> model, saved with save_pretrained and loaded back with load_model."""
    root = tmp_path_factory.mktemp("any_lm")
    out = {}
    for seed, (model_type, (kwargs, _)) in enumerate(CASES.items()):
        path = _save(root, model_type, kwargs, seed)
        out[model_type] = load_model(path, init=InitSpec("pretrained"), seed=None, family=model_type)
    return out


def _batch(lengths, *, seed=0):
    gen = torch.Generator().manual_seed(seed)
    n_tokens = max(lengths)
    input_ids = torch.randint(1, VOCAB, (len(lengths), n_tokens), generator=gen)
    mask = (torch.arange(n_tokens)[None, :] < torch.tensor(lengths)[:, None]).long()
    return input_ids.masked_fill(mask == 0, 0), mask


def test_at_least_fourteen_model_types_including_the_hybrids():
    required = {
        "jamba",
        "bamba",
        "zamba2",
        "falcon_h1",
        "granitemoehybrid",
        "nemotron_h",
        "lfm2",
        "llama",
        "qwen2",
        "gpt2",
        "falcon_mamba",
        "recurrent_gemma",
        "gpt_neo",
        "gpt_neox",
        "mamba",
        "mamba2",
    }
    assert required <= set(CASES) and len(CASES) >= 14


@pytest.mark.parametrize("model_type", list(CASES))
def test_layout_is_discovered(models, model_type):
    model = models[model_type]
    layout = get_layout(model)
    blocks_path, norm_path = CASES[model_type][1]
    assert (layout.model_type, layout.blocks_path, layout.final_norm_path) == (model_type, blocks_path, norm_path)
    assert len(layout.block_list(model)) == N_BLOCKS
    assert layout.embedding_module(model) is model.get_input_embeddings()
    assert layout.block_output in ("tuple", "tensor")
    assert layout.hf_records == ("block_outputs" if model_type in BLOCK_OUTPUTS else "block_inputs")
    assert set(layout.overridden) <= {"hf_records", "final_norm"}
    assert get_layout(model) is layout  # cached: forward_states(layout=None) does not rediscover per batch


@pytest.mark.parametrize("model_type", list(CASES))
def test_captured_states_and_hf_view(models, model_type):
    model = models[model_type]
    layout = get_layout(model)
    input_ids, mask = _batch(LENGTHS)
    captured = forward_states(model, input_ids, mask, token_rows=range(len(LENGTHS)))
    names = state_names(N_BLOCKS)
    assert captured.state_names == tuple(names)
    assert captured.last.shape == (N_BLOCKS + 2, len(LENGTHS), HIDDEN)

    # the hf view reproduces output_hidden_states bitwise (every token of every row)
    hidden = hf_hidden_states(model, input_ids, layout=layout)
    check_hf_view(model, layout, captured, hidden)
    # ... and so does the full model with the attention mask, the way a user calls it
    with torch.inference_mode():
        full = model(input_ids, attention_mask=mask, output_hidden_states=True, use_cache=False).hidden_states
    for j, k in enumerate(view_indices(layout, N_BLOCKS)["hf"]):
        for row, n in enumerate(LENGTHS):
            torch.testing.assert_close(
                captured.tokens[k, row, :n],
                full[j][row, :n],
                rtol=1e-5,
                atol=1e-5,
                msg=lambda m, j=j, row=row: f"{model_type} hidden_states[{j}] row {row}: {m}",
            )

    # residual view = embed (input of block 1), block_1 .. block_L; check its ends independently:
    # block_L is what the final norm normalises, and embed is what HF records first (or, for
    # the Mamba families, whose hidden_states omit it, the raw token embedding)
    with torch.inference_mode():
        normed = layout.final_norm_module(model)(captured.tokens[N_BLOCKS])
    for row, n in enumerate(LENGTHS):
        assert torch.equal(normed[row, :n], captured.tokens[N_BLOCKS + 1, row, :n]), f"{model_type}: norm(block_L)"
    if layout.hf_records == "block_inputs":
        embed_ref = hidden[0]
    else:
        with torch.inference_mode():
            embed_ref = layout.embedding_module(model)(input_ids)
    for row, n in enumerate(LENGTHS):
        assert torch.equal(captured.tokens[0, row, :n], embed_ref[row, :n]), f"{model_type}: embed row {row}"
    assert view_indices(layout, N_BLOCKS)["residual"] == [0, 1, 2]


@pytest.mark.parametrize("model_type", ["gpt_neox", "mamba", "jamba"])
def test_wrong_convention_names_the_model_type_the_state_and_the_fix(models, model_type):
    model = models[model_type]
    layout = get_layout(model)
    other = "block_inputs" if layout.hf_records == "block_outputs" else "block_outputs"
    wrong = dataclasses.replace(layout, hf_records=other)
    input_ids, mask = _batch(LENGTHS, seed=1)
    captured = forward_states(model, input_ids, mask, layout=wrong)
    with pytest.raises(HfViewMismatchError) as info:
        check_hf_view(model, wrong, captured, hf_hidden_states(model, input_ids))
    message = str(info.value)
    first = "block_1" if other == "block_outputs" else "embed"  # the first entry of the wrong view
    assert f"model_type '{model_type}'" in message and f"captured state '{first}'" in message
    assert f'"hf_records": "{layout.hf_records}"' in message and "reprflow/models/layouts.py" in message


def test_a_dropped_state_is_a_length_mismatch(models):
    model = models["llama"]
    input_ids, mask = _batch([4, 3])
    captured = forward_states(model, input_ids, mask)
    hidden = hf_hidden_states(model, input_ids)
    with pytest.raises(HfViewMismatchError, match=r"model_type 'llama': output_hidden_states has 2 entries"):
        check_hf_view(model, get_layout(model), captured, hidden[:-1])


def test_context_limits(models):
    assert model_max_context(models["llama"]) == 256
    assert model_max_context(models["gpt2"]) == 256  # n_positions, through GPT-2's attribute map
    for ssm in ("mamba", "mamba2", "falcon_mamba"):
        assert model_max_context(models[ssm]) is None


def test_mamba1_mixers_keep_their_dt_bias_at_its_own_init(models):
    for model_type in CASES:
        expected = ("dt_proj.bias",) if model_type in ("mamba", "falcon_mamba", "jamba") else ()
        assert get_layout(models[model_type]).keep_init == expected, model_type


def test_layout_from_a_config_needs_no_weights():
    config = AutoConfig.for_model("qwen2", **_ATTN)
    layout = get_layout(config)  # built on the meta device
    assert (layout.blocks_path, layout.final_norm_path, layout.block_output) == ("model.layers", "model.norm", None)


# ---- model types the rules cannot handle: one clear error each, saying what to add ----


def test_no_final_norm_says_which_override_to_add(tmp_path):
    # GPT-1 is post-norm: nothing normalises the last block's output
    path = _save(
        tmp_path,
        "openai-gpt",
        dict(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=N_BLOCKS, n_head=4, n_positions=64),
        seed=0,
    )
    with pytest.raises(ReprflowError) as info:
        load_model(path, init=InitSpec("pretrained"), seed=None)
    message = str(info.value)
    assert "model_type 'openai-gpt'" in message and "no norm module registered after the block list 'h'" in message
    assert "add OVERRIDES['openai-gpt'] = {'final_norm':" in message and "reprflow/models/layouts.py" in message


def test_an_override_path_missing_in_a_variant_is_reported():
    # OPT-350m applies no final norm (do_layer_norm_before=False): the OPT override names a None module
    config = AutoConfig.for_model("opt", **dict(CASES["opt"][0], do_layer_norm_before=False))
    with pytest.raises(ReprflowError, match=r"OVERRIDES\['opt'\]\['final_norm'\] = 'decoder.final_layer_norm' is not"):
        get_layout(config)


def test_ambiguous_block_lists_are_reported():
    # XLM keeps attention, norms and FFNs in parallel lists of length n_layers
    config = AutoConfig.for_model("xlm", vocab_size=VOCAB, emb_dim=HIDDEN, n_layers=N_BLOCKS, n_heads=4)
    with pytest.raises(
        ReprflowError,
        match=r"several nn.ModuleLists of length num_hidden_layers=2 .*"
        r"add OVERRIDES\['xlm'\] = \{'blocks': 'attentions'\}",
    ):
        get_layout(config)


def test_not_a_causal_lm():
    with pytest.raises(ReprflowError, match=r"model_type 't5' has no causal-LM class"):
        get_layout(AutoConfig.for_model("t5", num_layers=1, d_model=16, num_heads=2, d_kv=8, d_ff=32))


def test_wrong_final_norm_is_named(models):
    model = models["llama"]
    wrong = dataclasses.replace(get_layout(model), final_norm="layers.1.post_attention_layernorm")
    input_ids, mask = _batch([6, 4])
    captured = forward_states(model, input_ids, mask, layout=wrong)
    with pytest.raises(
        HfViewMismatchError,
        match=r"model_type 'llama': hf view entry 2 \(captured state 'final_norm'"
        r".*equals no captured state.*final_norm: now 'layers.1",
    ):
        check_hf_view(model, wrong, captured, hf_hidden_states(model, input_ids))


@pytest.mark.parametrize("model_type", ["jamba", "falcon_mamba"])
def test_a_random_scheme_keeps_the_mamba1_step_sizes(tmp_path, model_type):
    """Random arm: Linear weights redrawn, dt_proj.bias left at the family's own init (same seed)."""
    path = _save(tmp_path, model_type, CASES[model_type][0], seed=0)
    own = load_model(path, init=InitSpec("default"), seed=3, family=model_type)
    model = load_model(path, init=InitSpec("xavier"), seed=3, family=model_type)
    params, own_params = dict(model.named_parameters()), dict(own.named_parameters())
    dt_bias = [name for name in params if name.endswith("dt_proj.bias")]
    assert dt_bias and all(torch.equal(params[n], own_params[n]) for n in dt_bias)
    assert not torch.equal(
        params[dt_bias[0].replace("bias", "weight")], own_params[dt_bias[0].replace("bias", "weight")]
    )
    assert torch.isfinite(forward_states(model, *_batch(LENGTHS)).last).all()


def test_verify_hf_view_on_the_first_rows_of_a_batch(models):
    input_ids, mask = _batch(LENGTHS, seed=2)
    for model_type in ("gpt_neo", "mamba2", "zamba2"):
        verify_hf_view(models[model_type], input_ids, mask)  # passes: the discovered layouts are right
    wrong = dataclasses.replace(get_layout(models["mamba2"]), hf_records="block_inputs")
    with pytest.raises(HfViewMismatchError, match=r"model_type 'mamba2': hf view entry 0 \(captured state 'embed'"):
        verify_hf_view(models["mamba2"], input_ids, mask, layout=wrong, max_rows=1)
