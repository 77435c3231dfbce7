"""On a GPU: with mamba-ssm / causal-conv1d installed, the chooser is never slower than
the project's own kernels, and every candidate it may choose matches the reference.

Skips without CUDA. Without the compiled packages it still runs (the chooser then picks
among the project's own kernels and the torch conv) and checks the same claims.

Accuracy is judged like with like (see docs/kernels.md, "GPU validation status"):

- in float32 (Mamba-1; TF32 off), the chosen kernels and the project's own kernels must
  reproduce the float32 transformers model to ``REL_TOL[float32]``: this sees kernel bugs
  at every position of a 512-token input, unblurred by bfloat16 rounding;
- in bfloat16, each must be as close to the float32 model as transformers' own bfloat16
  forward is, within :data:`BF16_SLACK`. The random-init 4-layer, 1024-wide Mamba of this
  test amplifies bfloat16 rounding from layer to layer: transformers' own bfloat16 path
  is about 6-7% from its float32 path (measured on CPU), so a fixed 3e-2 bound fails
  every correct bfloat16 path.
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
BF16_SLACK = 1.5  # a bfloat16 fast path may be this much further from float32 than transformers' bfloat16 path
BF16_FLOOR = 2e-2  # ... and always this far (the bound of the per-mixer tests in test_mamba_mixers.py)
# families whose float32 fast path is float32 throughout: mamba_ssm's Triton SSD (Mamba-2) multiplies
# float32 inputs in TF32 (tl.dot's default), so its float32 accuracy is not float32's
FLOAT32_FAMILIES = ("mamba",)


def _model(family: str):
    torch.manual_seed(0)
    if family == "mamba":
        cfg = MambaConfig(vocab_size=1000, hidden_size=1024, state_size=16, num_hidden_layers=4, expand=2)
        return MambaForCausalLM(cfg)
    cfg = Mamba2Config(
        vocab_size=1000,
        hidden_size=1024,
        state_size=128,
        num_hidden_layers=4,
        expand=2,
        head_dim=64,
        num_heads=32,
        n_groups=1,
        chunk_size=256,
    )
    return Mamba2ForCausalLM(cfg)


def _states(model, ids):
    with torch.no_grad():
        out = model.base_model(input_ids=ids, output_hidden_states=True, use_cache=False)
    return torch.stack([h.float() for h in out.hidden_states])


def _rel(got, want) -> float:
    return float((got - want).norm() / want.norm())


def _chosen(report: dict) -> dict:
    """``{op: {shape class: kernel}}`` and the check errors, for assertion messages."""
    return {
        op: {shape: (e["kernel"], e["check_rel_err"]) for shape, e in classes.items()}
        for op, classes in report.get("kernels", {}).items()
    }


def _ms(model, ids, n=5) -> list[float]:
    out = []
    for _ in range(n):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        _states(model, ids)
        torch.cuda.synchronize()
        out.append(1e3 * (time.perf_counter() - t0))
    return out


def accuracy_against_float32(base, family: str, ids, dtype: torch.dtype, forced: dict | None = None) -> dict:
    """Relative distances of ``base``'s fast-path copies in ``dtype`` from ``base`` itself.

    Parameters
    ----------
    base : transformers Mamba/Mamba-2 model in float32 (the reference)
    family : {"mamba", "mamba2"}
    ids : LongTensor of shape (batch, n_tokens)
    dtype : torch.dtype
        dtype of the copies.
    forced : dict, optional
        ``prepare_model(kernels=...)`` of the ``own`` copy; default the project's kernels.

    Returns
    -------
    dict
        ``rel``: ``{"auto", "own", "hf"}`` -> ``||h - h_fp32|| / ||h_fp32||`` over all
        hidden states (``hf`` is transformers' own forward in ``dtype``); ``chosen``:
        ``{"auto", "own"}`` -> the kernels each chose (with their check errors);
        ``models`` and ``reports``: the prepared ``auto`` and ``own`` copies and what
        ``prepare_model`` returned for them (its ``kernels`` fill at later first calls).
    """
    want = _states(base, ids)
    hf = copy.deepcopy(base).to(dtype)
    rel = {"hf": _rel(_states(hf, ids), want)}
    del hf
    models, reports = {}, {}
    for label, kernels in (("auto", None), ("own", forced or PROJECT[family])):
        m = copy.deepcopy(base).to(dtype)
        reports[label] = prepare_model(m, kernels=kernels)
        rel[label] = _rel(_states(m, ids), want)
        models[label] = m
    chosen = {label: _chosen(r) for label, r in reports.items()}
    return {"rel": rel, "chosen": chosen, "models": models, "reports": reports}


def assert_accurate(acc: dict, dtype: torch.dtype, what: str) -> None:
    """Each of ``auto``/``own`` within the bound of ``dtype`` (see the module docstring)."""
    rel = acc["rel"]
    if dtype == torch.float32:
        bound = select.REL_TOL[torch.float32]
    else:
        bound = max(BF16_FLOOR, BF16_SLACK * rel["hf"])
    summary = (
        f"{what} {str(dtype).removeprefix('torch.')}: relative distance from float32 transformers: "
        f"auto {rel['auto']:.4f}, own {rel['own']:.4f}, transformers' own path {rel['hf']:.4f}; "
        f"bound {bound:.4f}; chosen auto {acc['chosen']['auto']}, own {acc['chosen']['own']}"
    )
    print(summary)
    for label in ("auto", "own"):
        assert rel[label] <= bound, f"{label} fails: " + summary


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
    ids = torch.randint(0, 1000, (8, 2048), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    if family in FLOAT32_FAMILIES:  # the kernels themselves, at all 512 positions, in true float32
        # cuBLAS's switch set and put back by hand: monkeypatch's undo of torch's matmul switches
        # (allow_tf32, fp32_precision) raised AttributeError at teardown on an H100, 2026-12-05
        matmul = torch.backends.cuda.matmul
        before = matmul.fp32_precision
        matmul.fp32_precision = "ieee"
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
        try:
            acc32 = accuracy_against_float32(base, family, ids[:, :512], torch.float32)
        finally:
            matmul.fp32_precision = before
        assert_accurate(acc32, torch.float32, family)
    # bfloat16: as close to float32 as transformers' own bfloat16 path
    acc = accuracy_against_float32(base, family, ids[:, :512], torch.bfloat16)
    assert_accurate(acc, torch.bfloat16, family)
    auto, own = acc["models"]["auto"], acc["models"]["own"]
    for m in (auto, own):
        _states(m, ids)  # the timed shape class: checks, measurements, Triton compiles
    # every candidate was checked against the float64 reference; none may fail
    tol = select.REL_TOL[torch.bfloat16]
    kernels = acc["reports"]["auto"]["kernels"]
    for op, classes in kernels.items():
        for shape, entry in classes.items():
            assert entry["check_rel_err"], (op, shape)
            for name, err in entry["check_rel_err"].items():
                assert err <= tol, f"auto: {op} {shape}: candidate {name} relative error {err} > {tol}"
    t_auto, t_own = [], []
    for _ in range(3):  # interleaved, against clock drift
        t_auto += _ms(auto, ids, 3)
        t_own += _ms(own, ids, 3)
    a, o = statistics.median(t_auto), statistics.median(t_own)
    chosen = {op: sorted({e["kernel"] for e in c.values()}) for op, c in kernels.items()}
    print(f"{family}: chosen {chosen}: {a:.2f} ms vs project kernels {o:.2f} ms per forward (B=8, T=2048)")
    assert a <= TOLERANCE * o, f"{family}: chosen {chosen} {a:.2f} ms > {TOLERANCE} x project {o:.2f} ms"


def test_accuracy_comparison_on_cpu_with_the_torch_kernels():
    """The GPU test's like-with-like comparison, run on CPU with the torch kernels forced."""
    torch.manual_seed(0)
    cfg = MambaConfig(vocab_size=97, hidden_size=64, state_size=8, num_hidden_layers=2, expand=2)
    base = MambaForCausalLM(cfg).eval()
    ids = torch.randint(0, 97, (2, 96), generator=torch.Generator().manual_seed(0))
    forced = {"mamba_scan": "torch", "causal_conv": "torch"}
    select.clear_cache()
    for dtype in (torch.float32, torch.bfloat16):
        acc = accuracy_against_float32(base, "mamba", ids, dtype, forced=forced)
        assert_accurate(acc, dtype, "cpu")
        own = acc["chosen"]["own"]
        assert {k for classes in own.values() for k, _ in classes.values()} == {"torch"}
        assert acc["chosen"]["auto"] == own  # CPU auto runs the same torch kernels as the forced ones
        assert acc["rel"]["auto"] == acc["rel"]["own"]
    bad = {"rel": {"auto": 0.01, "own": 0.2, "hf": 0.05}, "chosen": {"auto": {}, "own": {"mamba_scan": "x"}}}
    with pytest.raises(AssertionError, match=r"^own fails: gpu bfloat16: .*own 0\.2000.*bound 0\.0750.*mamba_scan"):
        assert_accurate(bad, torch.bfloat16, "gpu")
