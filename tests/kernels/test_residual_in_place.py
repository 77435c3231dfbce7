"""The Mamba blocks add ``out_proj(y)`` into their float32 residual in place inside
``forward_states`` (no copy of the residual stream), with the same values as the copying path,
and never outside it."""

from __future__ import annotations

import contextlib

import pytest
import torch
from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

import reprflow.capture
from reprflow.capture import forward_states
from reprflow.kernels.mamba_mixers import out_proj_add, residual_in_place
from reprflow.models.layouts import get_layout, view_indices

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_off_cuda_the_context_changes_nothing(torch_gen):
    proj = torch.nn.Linear(16, 8, bias=False).bfloat16()
    y = torch.randn(2, 5, 16, generator=torch_gen).bfloat16()
    res = torch.randn(2, 5, 8, generator=torch_gen)
    before = res.clone()
    with residual_in_place():
        got = out_proj_add(proj, y, res)
    assert torch.equal(got, res + proj(y)) and torch.equal(res, before)


@requires_cuda
@pytest.mark.gpu
def test_out_proj_add_in_place_on_gpu_has_the_copying_values():
    g = torch.Generator(device="cuda").manual_seed(0)
    proj = torch.nn.Linear(512, 256, bias=False, device="cuda", dtype=torch.bfloat16)
    y = torch.randn(3, 700, 512, device="cuda", generator=g).bfloat16()
    res = torch.randn(3, 700, 256, device="cuda", generator=g)
    before = res.clone()
    copied = out_proj_add(proj, y, res)
    assert torch.equal(res, before) and copied.data_ptr() != res.data_ptr()
    with residual_in_place():
        in_place = out_proj_add(proj, y, res)
    assert in_place.data_ptr() == res.data_ptr() and torch.equal(in_place, copied)


def _model(family: str):
    if family == "mamba":
        cfg = MambaConfig(vocab_size=97, hidden_size=256, state_size=16, num_hidden_layers=3, expand=2)
        return MambaForCausalLM(cfg)
    cfg = Mamba2Config(
        vocab_size=97, hidden_size=256, num_heads=8, head_dim=64, state_size=64, n_groups=1, num_hidden_layers=3,
        expand=2, chunk_size=64,
    )  # fmt: skip
    return Mamba2ForCausalLM(cfg)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("family", ["mamba", "mamba2"])
def test_forward_states_in_place_equals_the_copying_path(family, monkeypatch):
    from reprflow.fastpath import prepare_model

    torch.manual_seed(0)
    model = _model(family).to("cuda", torch.bfloat16).eval()
    report = prepare_model(model)
    if "out_proj" not in str(report.get("residual", "")):
        pytest.skip(f"no fused residual on this machine: {report}")
    ids = torch.randint(0, 97, (4, 300), device="cuda")
    mask = torch.ones_like(ids)
    in_place = forward_states(model, ids, mask, token_rows=[0, 3])
    monkeypatch.setattr(reprflow.capture, "residual_in_place", contextlib.nullcontext)
    copying = forward_states(model, ids, mask, token_rows=[0, 3])
    assert torch.equal(in_place.last, copying.last) and torch.equal(in_place.tokens, copying.tokens)
    # outside forward_states every block output stays as transformers returns it: the
    # output_hidden_states of a plain call are the captured states (none overwritten by the next block)
    with torch.inference_mode():
        hidden = model.base_model(input_ids=ids, use_cache=False, output_hidden_states=True).hidden_states
    assert len({h.data_ptr() for h in hidden}) == len(hidden)
    hf_view = view_indices(get_layout(model), len(hidden) - 1)["hf"]
    for h, k in zip(hidden, hf_view):
        assert torch.equal(h[:, -1].to(copying.last.dtype), copying.last[k]), f"hidden state {k}"
