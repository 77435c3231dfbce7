"""The kernel chooser: correctness gate, measurement, caches and forcing (CPU)."""

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from reprflow.errors import ConfigError
from reprflow.kernels import select
from reprflow.kernels.causal_conv1d import causal_conv1d_silu_reference
from reprflow.kernels.ops import causal_conv_op, mamba2_ssd_op, mamba_scan_op
from reprflow.kernels.select import Candidate, KernelOp
from reprflow.kernels.selective_scan import selective_scan_reference

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    select.clear_cache()
    for op in ("causal_conv", "mamba_scan", "mamba2_ssd", "toy_conv"):
        monkeypatch.delenv(select.env_var(op), raising=False)
    monkeypatch.delenv("REPRFLOW_KERNEL_CACHE", raising=False)
    yield
    select.clear_cache()


def _conv_inputs(g, batch=3, n_tokens=70, channels=6, width=4):
    x = torch.randn(batch, n_tokens, channels, generator=g)
    return x, torch.randn(channels, width, generator=g), torch.randn(channels, generator=g)


def _shifted_sum_conv(x, weight, bias=None, *, mask=None):
    """A second, independent causal conv + SiLU: sum of shifted copies (no F.conv1d)."""
    width = weight.shape[1]
    xp = F.pad(x, (0, 0, width - 1, 0))
    y = sum(xp[:, k : k + x.shape[1]] * weight[:, k] for k in range(width))
    y = F.silu(y + (bias if bias is not None else 0))
    return y if mask is None else y * mask[:, :, None].to(y.dtype)


def _toy_op(report, calls, forced=None):
    def counted(name, fn):
        def run(*a, **k):
            calls[name] = calls.get(name, 0) + 1
            return fn(*a, **k)

        return run

    cands = [
        Candidate("fconv", counted("fconv", causal_conv1d_silu_reference), "F.conv1d", devices=("cpu",)),
        Candidate("shifted", counted("shifted", _shifted_sum_conv), "shifted sum", devices=("cpu",)),
        Candidate(
            "no_silu",
            counted(
                "no_silu",
                lambda x, weight, bias=None, *, mask=None: (
                    _shifted_sum_conv(x, weight, bias, mask=mask).logit().nan_to_num()
                ),
            ),
            "wrong on purpose",
            devices=("cpu",),
        ),
    ]
    return _conv_op(cands, report, forced)


def _conv_op(cands, report, forced=None):
    """A ``toy_conv`` op over ``cands`` (causal conv + SiLU candidates), one shape class per channel count."""
    return KernelOp(
        "toy_conv",
        causal_conv1d_silu_reference,
        cands,
        time_major=("x", "mask"),
        sizes=lambda a: (a["x"].shape[2],),
        report=report,
        forced=forced,
    )


def test_cpu_ops_pick_torch_without_measuring(torch_gen):
    report = {}
    x, w, b = _conv_inputs(torch_gen)
    conv = causal_conv_op(CPU, report=report)
    torch.testing.assert_close(conv(x, w, b), causal_conv1d_silu_reference(x, w, b))
    (entry,) = report["causal_conv"].values()
    assert entry["kernel"] == "torch" and "not measured" in entry["reason"] and "ms" not in entry
    assert [c.name for c in mamba_scan_op(CPU, report=report).candidates] == ["torch"]
    assert [c.name for c in mamba2_ssd_op(CPU, None, report=report).candidates] == ["torch"]


def test_wrong_candidate_is_rejected_and_fastest_correct_one_wins(torch_gen, caplog):
    report, calls = {}, {}
    op = _toy_op(report, calls)
    x, w, b = _conv_inputs(torch_gen)
    with caplog.at_level("INFO", logger="reprflow.kernels.select"):
        y = op(x, w, b)
    torch.testing.assert_close(y, causal_conv1d_silu_reference(x, w, b), rtol=1e-5, atol=1e-6)
    (entry,) = report["toy_conv"].values()
    assert set(entry["ms"]) == {"fconv", "shifted"}  # the wrong one was never timed
    assert entry["kernel"] == min(entry["ms"], key=entry["ms"].get)
    assert entry["check_rel_err"]["no_silu"] > select.REL_TOL[torch.float32]
    assert "rejected" in caplog.text and "toy_conv" in caplog.text
    before = dict(calls)
    op(x + 1, w, b)  # same shape class: no new check, no new timing
    assert sum(calls.values()) == sum(before.values()) + 1
    op(x[:, :20], w, b)  # a new shape class (32 tokens) is chosen again
    assert len(report["toy_conv"]) == 2


def test_a_candidate_that_fails_at_full_size_is_dropped(torch_gen, caplog):
    """Passing the check on a small slice is not enough: one that raises when timed at the real
    size (out of shared memory, an unsupported shape) is dropped and the others still compete."""
    report, calls = {}, {}
    op = _toy_op(report, calls)

    def small_only(x, weight, bias=None, *, mask=None):
        if x.shape[1] > select.CHECK_TOKENS:
            raise RuntimeError("too many tokens for this kernel")
        return causal_conv1d_silu_reference(x, weight, bias, mask=mask)

    op.candidates.append(Candidate("small_only", small_only, "fails past the check's size", devices=("cpu",)))
    x, w, b = _conv_inputs(torch_gen, n_tokens=select.CHECK_TOKENS + 40)
    with caplog.at_level("WARNING", logger="reprflow.kernels.select"):
        y = op(x, w, b)
    torch.testing.assert_close(y, causal_conv1d_silu_reference(x, w, b), rtol=1e-5, atol=1e-6)
    (entry,) = report["toy_conv"].values()
    assert entry["check_rel_err"]["small_only"] < select.REL_TOL[torch.float32]  # it passed the check
    assert set(entry["ms"]) == {"fconv", "shifted"} and entry["kernel"] in ("fconv", "shifted")
    assert "small_only rejected" in caplog.text and "too many tokens" in caplog.text


def test_disk_cache_skips_timing(torch_gen, tmp_path, monkeypatch):
    cache = tmp_path / "kernels.json"
    monkeypatch.setenv("REPRFLOW_KERNEL_CACHE", str(cache))
    x, w, b = _conv_inputs(torch_gen)
    first = {}
    _toy_op(first, {})(x, w, b)
    stored = json.loads(cache.read_text())
    (key,) = stored
    assert (
        key.startswith("toy_conv")
        and "torch " in key
        and stored[key] == first["toy_conv"][next(iter(first["toy_conv"]))]["kernel"]
    )
    # what was timed and the kernels' code are part of the key: a new candidate or kernel is measured
    (timed,) = (e["ms"] for e in first["toy_conv"].values())
    assert f"| among {','.join(sorted(timed))} |" in key and "| reprflow kernels " in key
    select.clear_cache()
    again = {}
    _toy_op(again, {})(x, w, b)
    (entry,) = again["toy_conv"].values()
    assert "cache" in entry["reason"] and "ms" not in entry and entry["kernel"] == stored[key]


def test_forcing_by_argument_or_environment(torch_gen, monkeypatch):
    x, w, b = _conv_inputs(torch_gen)
    report = {}
    _toy_op(report, {}, forced="shifted")(x, w, b)
    (entry,) = report["toy_conv"].values()
    assert entry["kernel"] == "shifted" and "forced" in entry["reason"]
    monkeypatch.setenv("REPRFLOW_KERNEL_TOY_CONV", "no_silu")
    with pytest.raises(RuntimeError, match="fails its check"):
        _toy_op({}, {})(x, w, b)
    monkeypatch.setenv("REPRFLOW_KERNEL_TOY_CONV", "nope")
    with pytest.raises(ConfigError, match="REPRFLOW_KERNEL_TOY_CONV.*unknown kernel"):
        _toy_op({}, {})
    monkeypatch.setenv("REPRFLOW_KERNEL_TOY_CONV", "auto")
    _toy_op({}, {})(x, w, b)


def test_reference_ops_agree_with_their_float64_definitions(torch_gen):
    g = torch_gen
    u, dt, z = (torch.randn(2, 9, 5, generator=g) for _ in range(3))
    A = -torch.rand(5, 4, generator=g) - 0.1
    Bm, Cm = torch.randn(2, 9, 4, generator=g), torch.randn(2, 9, 4, generator=g)
    D = torch.randn(5, generator=g)
    report = {}
    y = mamba_scan_op(CPU, report=report)(u, dt, A, Bm, Cm, D, z, delta_softplus=True)
    want = selective_scan_reference(
        u.double(),
        dt.double(),
        A.double(),
        Bm.double(),
        Cm.double(),
        D.double(),
        z.double(),
        delta_softplus=True,
        compute_dtype=torch.float64,
    )
    torch.testing.assert_close(y.double(), want, rtol=1e-5, atol=1e-6)
    # SSD with one group and head_dim 1 is the Mamba-1 scan with A constant over the state
    x = torch.randn(2, 9, 3, 1, generator=g)
    d = torch.randn(2, 9, 3, generator=g)
    a = -torch.rand(3, generator=g) - 0.1
    Bs, Cs = torch.randn(2, 9, 1, 4, generator=g), torch.randn(2, 9, 1, 4, generator=g)
    got = mamba2_ssd_op(CPU, None, report=report)(x, d, a, Bs, Cs, 8, dt_softplus=True)
    want = selective_scan_reference(
        x[..., 0].double(),
        d.double(),
        a.double()[:, None].expand(3, 4),
        Bs[:, :, 0].double(),
        Cs[:, :, 0].double(),
        delta_softplus=True,
        compute_dtype=torch.float64,
    )
    torch.testing.assert_close(got[..., 0].double(), want, rtol=1e-5, atol=1e-6)


def test_ops_inside_the_mamba_mixer_match_transformers(torch_gen):
    """The ops as the mixer calls them (views, padding mask, keyword arguments)."""
    import copy

    from transformers import MambaConfig, MambaForCausalLM

    from reprflow.kernels.mamba_mixers import install_mamba_forward

    torch.manual_seed(0)
    hf = MambaForCausalLM(MambaConfig(vocab_size=97, hidden_size=16, state_size=4, num_hidden_layers=2)).eval()
    fast = copy.deepcopy(hf)
    report = {}
    conv = causal_conv_op(CPU, report=report)
    conv.candidates.append(Candidate("shifted", _shifted_sum_conv, "shifted sum", devices=("cpu",)))
    assert install_mamba_forward(fast, scan_impl=mamba_scan_op(CPU, report=report), conv_impl=conv) == 2
    ids = torch.randint(0, 97, (2, 23), generator=torch_gen)
    mask = torch.ones_like(ids)
    mask[1, 17:] = 0
    with torch.no_grad():
        want = hf(ids, attention_mask=mask, output_hidden_states=True, use_cache=False).hidden_states
        got = fast(ids, attention_mask=mask, output_hidden_states=True, use_cache=False).hidden_states
    real = mask.bool()
    for w, g in zip(want, got):
        torch.testing.assert_close(g[real], w[real], rtol=1e-4, atol=1e-5)
    (entry,) = report["causal_conv"].values()  # one shape class for both layers
    assert set(entry["ms"]) == {"torch", "shifted"}
    assert next(iter(report["mamba_scan"].values()))["kernel"] == "torch"


def test_check_covers_more_than_one_ssd_chunk(torch_gen):
    """A kernel wrong only after token 256 (e.g. a bug in the state passed between 256-token
    chunks) is rejected: the check slice is longer than one chunk."""
    assert select.CHECK_TOKENS > 256

    def wrong_after_chunk(x, weight, bias=None, *, mask=None):
        y = causal_conv1d_silu_reference(x, weight, bias, mask=mask).clone()
        y[:, 256:] *= 2
        return y

    report = {}
    op = KernelOp(
        "toy_conv",
        causal_conv1d_silu_reference,
        [
            Candidate("fconv", causal_conv1d_silu_reference, "F.conv1d", devices=("cpu",)),
            Candidate("chunked", wrong_after_chunk, "wrong past 256 tokens", devices=("cpu",)),
        ],
        time_major=("x", "mask"),
        sizes=lambda a: (a["x"].shape[2],),
        report=report,
    )
    x, w, b = _conv_inputs(torch_gen, batch=3, n_tokens=400)
    torch.testing.assert_close(op(x, w, b), causal_conv1d_silu_reference(x, w, b))
    (entry,) = report["toy_conv"].values()
    assert entry["kernel"] == "fconv" and "ms" not in entry  # the only correct one, not measured
    assert entry["check_rel_err"]["chunked"] > select.REL_TOL[torch.float32]
    assert entry["check_rel_err"]["fconv"] < 1e-6


@pytest.mark.parametrize("slow_ms", [[9.9] * 5 + [10.3] * 20, [30.0] * 25])
def test_close_candidates_are_timed_again(torch_gen, monkeypatch, slow_ms):
    """Two candidates within CLOSE_MARGIN get CLOSE_ROUNDS more rounds of N_TIMED calls each and
    the median of all decides: "slow" (10.3 ms, but 9.9 in its first calls: noise) loses to "fast"
    (10.0 ms), where its first N_TIMED calls alone would have chosen it. A clear winner is settled by
    the first N_TIMED calls. The candidates advance a clock the chooser reads (wall time on a shared
    CPU is too noisy to script)."""
    report, calls, clock = {}, {"fast": 0, "slow": 0}, [0.0]
    cost_ms = {"fast": [10.0] * 25, "slow": slow_ms}

    def costs(name):
        def run(x, weight, bias=None, *, mask=None):
            clock[0] += cost_ms[name][calls[name]] / 1e3  # call 0 is the check, 1 the warm-up
            calls[name] += 1
            return causal_conv1d_silu_reference(x, weight, bias, mask=mask)

        return run

    monkeypatch.setattr(select, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    cands = [Candidate(n, costs(n), n, devices=("cpu",)) for n in ("fast", "slow")]
    op = _conv_op(cands, report)
    x, w, b = _conv_inputs(torch_gen)
    op(x, w, b)
    (entry,) = report["toy_conv"].values()
    close = slow_ms[0] < 11
    timed = select.N_TIMED * (1 + select.CLOSE_ROUNDS) if close else select.N_TIMED
    assert entry["kernel"] == "fast"
    assert calls == {"fast": 2 + timed + 1, "slow": 2 + timed}  # check, warm-up, timed; + the call itself
    assert entry["ms"] == pytest.approx({"fast": 10.0, "slow": 10.3 if close else 30.0})
    assert ("median of 12 calls" in entry["reason"]) == close


def test_the_reference_runs_once_per_choice_and_fallbacks_are_checked_only_when_needed(torch_gen):
    """The float64 reference is computed once for all candidates of a choice, and a fallback
    (``timed=False``, e.g. the per-token torch loops) is neither run nor checked while a timed
    candidate passes: on a GPU its loop and the reference's cost seconds with the GPU idle."""
    x, w, b = _conv_inputs(torch_gen)
    ref_calls, calls = [], {}

    def reference(x, weight, bias=None, *, mask=None):
        ref_calls.append(x.shape)
        return causal_conv1d_silu_reference(x, weight, bias, mask=mask)

    def counted(name, fn):
        def run(*a, **k):
            calls[name] = calls.get(name, 0) + 1
            return fn(*a, **k)

        return run

    def op_with(timed_fn):
        return KernelOp(
            "toy_conv",
            reference,
            [
                Candidate("loop", counted("loop", _shifted_sum_conv), "fallback", devices=("cpu",), timed=False),
                Candidate("fconv", counted("fconv", timed_fn), "F.conv1d", devices=("cpu",)),
                Candidate("shifted", counted("shifted", _shifted_sum_conv), "shifted sum", devices=("cpu",)),
            ],
            time_major=("x", "mask"),
            sizes=lambda a: (a["x"].shape[2],),
            report=report,
        )

    report = {}
    op_with(causal_conv1d_silu_reference)(x, w, b)
    (entry,) = report["toy_conv"].values()
    assert len(ref_calls) == 1 and ref_calls[0][1] == min(x.shape[1], select.CHECK_TOKENS)
    assert "loop" not in calls and set(entry["check_rel_err"]) == {"fconv", "shifted"}
    assert entry["kernel"] in ("fconv", "shifted")

    # every timed candidate wrong: the fallback is checked (against the same reference) and taken
    select.clear_cache()
    report, ref_calls[:], calls = {}, [], {}
    wrong = lambda x, weight, bias=None, *, mask=None: -causal_conv1d_silu_reference(x, weight, bias, mask=mask)  # noqa: E731
    op = op_with(wrong)
    op.candidates[2] = Candidate("shifted", wrong, "wrong too", devices=("cpu",))
    y = op(x, w, b)
    (entry,) = report["toy_conv"].values()
    assert entry["kernel"] == "loop" and "only correct candidate" in entry["reason"]
    assert len(ref_calls) == 1 and set(entry["check_rel_err"]) == {"fconv", "shifted", "loop"}
    torch.testing.assert_close(y, causal_conv1d_silu_reference(x, w, b), rtol=1e-5, atol=1e-6)
