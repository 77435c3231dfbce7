"""prepare_model: the choices it reports and the models it leaves exact."""

import json

import pytest
import torch
from transformers import (
    GPTNeoConfig,
    GPTNeoForCausalLM,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    MambaConfig,
    MambaForCausalLM,
)

from reprflow.errors import ConfigError
from reprflow.fastpath import prepare_model


def _neo():
    torch.manual_seed(0)
    cfg = GPTNeoConfig(
        vocab_size=50,
        max_position_embeddings=32,
        hidden_size=16,
        num_layers=2,
        num_heads=2,
        attention_types=[[["global", "local"], 1]],
        window_size=4,
    )
    return GPTNeoForCausalLM(cfg).eval()


def _mamba():
    torch.manual_seed(0)
    return MambaForCausalLM(MambaConfig(vocab_size=50, hidden_size=16, state_size=4, num_hidden_layers=2)).eval()


def test_gpt_neo_report_and_exactness():
    model = _neo()
    ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(ids, use_cache=False).logits
    report = prepare_model(model)
    assert report["family"] == "gpt_neo" and report["attention"].startswith("sdpa")
    assert report["compute_dtype"] == "float32" and report["use_cache"] is False
    assert report["patched_modules"] == 4  # 2 attention modules + 2 gelu_new activations
    assert "tanh" in report["mlp_activation"]
    json.dumps(report)  # recorded in store attrs
    with torch.no_grad():
        got = model(ids).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert prepare_model(model)["patched_modules"] == 0  # idempotent


def test_float16_transformers_are_refused():
    with pytest.raises(ConfigError, match="float16"):
        prepare_model(_neo().half())


def test_gpt_neox_uses_sdpa():
    cfg = GPTNeoXConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    model = GPTNeoXForCausalLM._from_config(cfg, attn_implementation="eager")
    assert prepare_model(model)["attention"] == "sdpa"


@pytest.mark.parametrize("scan", ["auto", "torch"])
def test_mamba_on_cpu_runs_reprflow_torch_path_equal_to_transformers(scan):
    hf = _mamba()
    assert prepare_model(hf, scan="hf")["scan"] == "hf (transformers)"  # forced: transformers' mixers stay
    assert not any(hasattr(m, "_reprflow_fast") for m in hf.modules())
    model = _mamba()
    ids = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # a left-padded row
    with torch.no_grad():
        want = hf(ids, attention_mask=mask, use_cache=False).logits
    report = prepare_model(model, scan=scan)
    assert report["scan"] == (
        "torch (forced)" if scan == "torch" else "chosen at first use among ['torch'] (see 'kernels')"
    )
    assert report["patched_modules"] == 2
    with torch.no_grad():
        got = model(ids, attention_mask=mask).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # the ops recorded their choice at the first call: the CPU's only scan and conv, not measured
    kernels = report["kernels"]
    assert [e["kernel"] for e in kernels["mamba_scan"].values()] == ["torch"]
    conv = next(iter(kernels["causal_conv"].values()))
    assert conv["kernel"] == "torch" and "not measured" in conv["reason"] and "ms" not in conv
    json.dumps(report)


def test_environment_forces_a_kernel_and_names_the_culprit(monkeypatch):
    model = _mamba()
    monkeypatch.setenv("REPRFLOW_KERNEL_MAMBA_SCAN", "torch")
    report = prepare_model(model)
    assert report["scan"] == "torch (forced)" and report["patched_modules"] == 2
    monkeypatch.setenv("REPRFLOW_KERNEL_MAMBA_SCAN", "cuda-magic")
    with pytest.raises(ConfigError, match="REPRFLOW_KERNEL_MAMBA_SCAN.*unknown kernel"):
        prepare_model(_mamba())
    monkeypatch.setenv("REPRFLOW_KERNEL_MAMBA_SCAN", "triton")  # a GPU kernel on a CPU model
    with pytest.raises(ConfigError, match="'triton': not available"):
        prepare_model(_mamba())
    with pytest.raises(ConfigError, match=r"prepare_model\(kernels=\{'bogus': \.\.\.\}\): unknown op"):
        prepare_model(_mamba(), kernels={"bogus": "x"})
    with pytest.raises(ConfigError, match=r"\(or prepare_model\(kernels=\{'mamba_scan': \.\.\.\}\)\)") as exc:
        prepare_model(_mamba())  # REPRFLOW_KERNEL_MAMBA_SCAN=triton, still set
    assert "execution.kernels" not in str(exc.value)  # no such config key (reprflow/data/schema.yaml)


def test_attention_can_be_forced_to_eager(monkeypatch):
    cfg = GPTNeoXConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    model = GPTNeoXForCausalLM._from_config(cfg, attn_implementation="sdpa")
    monkeypatch.setenv("REPRFLOW_KERNEL_ATTENTION", "eager")
    report = prepare_model(model)
    assert report["attention"] == "eager" and report["why"] == "forced"
    monkeypatch.setenv("REPRFLOW_KERNEL_ATTENTION", "flash")
    with pytest.raises(ConfigError, match="REPRFLOW_KERNEL_ATTENTION"):
        prepare_model(_neo())


def test_unknown_scan_is_a_config_error():
    with pytest.raises(ConfigError, match="scan"):
        prepare_model(_mamba(), scan="cuda")


def test_fusions_switch_reads_the_environment(monkeypatch):
    assert prepare_model(_neo())["fusions"] == "on"
    monkeypatch.setenv("REPRFLOW_FUSE", "0")
    assert prepare_model(_neo())["fusions"] == "off"
    assert prepare_model(_neo(), fuse=True)["fusions"] == "on"
    monkeypatch.setenv("REPRFLOW_FUSE", "maybe")
    with pytest.raises(ConfigError, match="REPRFLOW_FUSE"):
        prepare_model(_neo())
