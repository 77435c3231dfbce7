"""On a GPU: with mamba-ssm / causal-conv1d installed, the chooser is never slower than
the project's own kernels, and every candidate it may choose matches the reference.

Skips without CUDA. Without the compiled packages it still runs (the chooser then picks
among the project's own kernels and the torch conv) and checks the same two claims.
"""

import copy
import statistics
import time

import pytest
import torch
from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

from reprflow.fastpath import prepare_model
from reprflow.kernels import select
from reprflow.kernels.optional import load_mamba_ssm_triton

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# the project's own kernels, i.e. what runs when nothing optional is installed
PROJECT = {
    "mamba": {"mamba_scan": "triton", "causal_conv": "triton"},
    "mamba2": {"mamba2_ssd": "mamba_ssm", "causal_conv": "triton"},  # the SSD needs mamba_ssm's Triton code anyway
}
TOLERANCE = 1.10  # chosen path may be at most 10% slower than the project's (timing noise)


def _model(family: str):
    torch.manual_seed(0)
    if family == "mamba":
        cfg = MambaConfig(vocab_size=1000, hidden_size=1024, state_size=16, num_hidden_layers=4, expand=2)
        return MambaForCausalLM(cfg)
    cfg = Mamba2Config(vocab_size=1000, hidden_size=1024, state_size=128, num_hidden_layers=4, expand=2,
                       head_dim=64, num_heads=32, n_groups=1, chunk_size=256)
    return Mamba2ForCausalLM(cfg)


def _states(model, ids):
    with torch.no_grad():
        out = model.base_model(input_ids=ids, output_hidden_states=True, use_cache=False)
    return torch.stack([h.float() for h in out.hidden_states])


def _ms(model, ids, n=5) -> list[float]:
    out = []
    for _ in range(n):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        _states(model, ids)
        torch.cuda.synchronize()
        out.append(1e3 * (time.perf_counter() - t0))
    return out


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("family", ["mamba", "mamba2"])
def test_chosen_kernels_are_correct_and_never_slower_than_the_projects(family, monkeypatch):
    if family == "mamba2" and load_mamba_ssm_triton() is None:
        pytest.skip("Mamba-2 fast path needs mamba_ssm's Triton kernels")
    for op in ("mamba_scan", "causal_conv", "mamba2_ssd", "attention"):
        monkeypatch.delenv(select.env_var(op), raising=False)
    monkeypatch.delenv("REPRFLOW_KERNEL_CACHE", raising=False)
    select.clear_cache()
    base = _model(family).to("cuda").eval()
    auto = copy.deepcopy(base).to(torch.bfloat16)
    own = copy.deepcopy(base).to(torch.bfloat16)
    r_auto = prepare_model(auto)
    prepare_model(own, kernels=PROJECT[family])
    ids = torch.randint(0, 1000, (8, 2048), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    want = _states(base, ids[:, :512])  # float32 transformers
    for m in (auto, own):  # first calls: checks, measurements, Triton compiles
        got = _states(m, ids[:, :512])
        rel = float((got - want).norm() / want.norm())
        assert rel < 3e-2, rel
        _states(m, ids)
    # every candidate was checked against the float64 reference; none may fail
    tol = select.REL_TOL[torch.bfloat16]
    for op, classes in r_auto["kernels"].items():
        for shape, entry in classes.items():
            assert entry["check_rel_err"], (op, shape)
            for name, err in entry["check_rel_err"].items():
                assert err <= tol, f"{op} {shape}: candidate {name} relative error {err} > {tol}"
    t_auto, t_own = [], []
    for _ in range(3):  # interleaved, against clock drift
        t_auto += _ms(auto, ids, 3)
        t_own += _ms(own, ids, 3)
    a, o = statistics.median(t_auto), statistics.median(t_own)
    chosen = {op: sorted({e["kernel"] for e in c.values()}) for op, c in r_auto["kernels"].items()}
    print(f"{family}: chosen {chosen}: {a:.2f} ms vs project kernels {o:.2f} ms per forward (B=8, T=2048)")
    assert a <= TOLERANCE * o, f"{family}: chosen {chosen} {a:.2f} ms > {TOLERANCE} x project {o:.2f} ms"
