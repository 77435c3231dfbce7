"""mamba_ssm's SSD kernels tune per size class, not once at the first (tiny) call.

The wrapper's bookkeeping is tested on the CPU with autotuners that "tune" by recording the size
they first saw (what a ``triton.autotune`` cache holds: autotune key -> configuration); the real
``mamba_ssm`` kernels on the GPU (Triton's autotuner benchmarks on the device)."""

from __future__ import annotations

import json

import pytest
import torch

from reprflow.kernels.autotune_by_size import AutotuneBySize
from reprflow.kernels.optional import load_mamba_ssm_triton
from reprflow.kernels.ssd import ssd_reference

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class _Tuner:
    """The part of ``triton.runtime.autotuner.Autotuner`` the wrapper touches: ``configs``, and
    ``cache`` (autotune key -> one of ``configs``), filled on a miss."""

    def __init__(self, configs=("BLOCK 32, warps 2", "BLOCK 64, warps 4", "BLOCK 128, warps 8")):
        self.configs = list(configs)
        self.cache: dict = {}
        self.tunings = 0

    def launch(self, x: torch.Tensor, chunk_size: int = 256) -> str:
        key = (chunk_size, 64, "torch.bfloat16")  # like mamba_ssm's keys: no batch, no length
        if key not in self.cache:
            self.tunings += 1  # "the best configuration" grows with the problem, as on a GPU
            self.cache[key] = self.configs[min(len(self.configs) - 1, x.numel().bit_length() // 6)]
        return self.cache[key]


def _tuned_at(n: int, tuner: _Tuner | None = None) -> str:
    """What ``_Tuner`` picks for ``n`` elements."""
    configs = (tuner or _Tuner()).configs
    return configs[min(len(configs) - 1, n.bit_length() // 6)]


def test_by_size_tunes_each_size_class_at_its_own_size_and_restores_it(monkeypatch):
    monkeypatch.delenv("REPRFLOW_KERNEL_CACHE", raising=False)
    tuners = [_Tuner(), _Tuner()]
    ssd = AutotuneBySize(lambda x, chunk_size: [t.launch(x) for t in tuners], tuners)
    small, big = _tuned_at(1 * 4), _tuned_at(16 * 2048)
    assert small != big
    assert ssd(torch.empty(1, 4), 256) == [small] * 2
    assert ssd(torch.empty(16, 2048), 256) == [big] * 2  # not the tiny call's
    assert ssd(torch.empty(13, 1500), chunk_size=256) == [big] * 2  # same class
    assert ssd(x=torch.empty(1, 3), chunk_size=256) == [small] * 2  # restored, not re-tuned
    assert ssd(torch.empty(2, 300), 256) == [small] * 2  # small calls share one class
    assert [t.tunings for t in tuners] == [2, 2]
    assert set(ssd.saved) == {("cpu", "small"), ("cpu", 16, 2048)}
    assert ssd.size_class((torch.empty(17, 2049),), {}) == ("cpu", 32, 4096)
    assert ssd.size_class((torch.empty(4, 4096),), {}) == ("cpu", 4, 4096)  # 16384 tokens: not small
    assert ssd.size_class((torch.empty(4, 4095),), {}) == ("cpu", 4, 4096)
    assert ssd.size_class((torch.empty(5, 2048),), {}) == ("cpu", 8, 2048)
    assert ssd.size_class((torch.empty(3, 2048),), {}) == ("cpu", "small")  # 4 x 2048 = 8192
    assert ssd.size_class((torch.empty(2, 2048),), {}) == ("cpu", "small")


def test_calls_outside_the_wrapper_keep_their_own_configurations(monkeypatch):
    """A direct call to the same kernels, before and after wrapped calls of other sizes, runs with
    the configuration it tuned itself; an exception inside the wrapper puts them back too."""
    monkeypatch.delenv("REPRFLOW_KERNEL_CACHE", raising=False)
    tuners = [_Tuner(), _Tuner()]
    raw = _launch_all(tuners)
    ssd = AutotuneBySize(raw, tuners)
    small, big = _tuned_at(1 * 4), _tuned_at(16 * 2048)
    assert raw(torch.empty(1, 4)) == [small] * 2  # tuned outside, on a small call
    assert ssd(torch.empty(16, 2048)) == [big] * 2
    assert raw(torch.empty(16, 2048)) == [small] * 2  # its own, not the wrapped call's
    assert [t.cache for t in tuners] == [{(256, 64, "torch.bfloat16"): small}] * 2

    def fails(x, chunk_size=256):
        [t.launch(x, chunk_size) for t in tuners]
        raise RuntimeError("kernel failed")

    with pytest.raises(RuntimeError, match="kernel failed"):
        AutotuneBySize(fails, tuners)(torch.empty(16, 4096))
    assert raw(torch.empty(1, 4)) == [small] * 2


def _launch_all(tuners):
    def ssd(x, chunk_size=256):
        return [t.launch(x, chunk_size) for t in tuners]

    return ssd


def test_a_size_class_tuned_in_one_process_is_restored_in_the_next(tmp_path, monkeypatch):
    """With REPRFLOW_KERNEL_CACHE, a class is tuned once per run: a new process (new autotuners
    with the same configurations) restores the choices from the file instead of benchmarking."""
    cache = tmp_path / "kernels.json"
    monkeypatch.setenv("REPRFLOW_KERNEL_CACHE", str(cache))
    first = [_Tuner(), _Tuner()]
    AutotuneBySize(_launch_all(first), first)(torch.empty(16, 2048))
    assert [t.tunings for t in first] == [1, 1]
    (key,) = json.loads(cache.read_text())
    assert key.startswith("autotune ") and "(16, 2048)" in key and "reprflow kernels " in key
    assert "torch " in key and "triton " in key and "mamba_ssm " in key  # versions
    big = _tuned_at(16 * 2048)
    assert json.loads(cache.read_text())[key] == [[["(256, 64, 'torch.bfloat16')", first[0].configs.index(big)]]] * 2

    again = [_Tuner(), _Tuner()]  # "the next process"
    ssd = AutotuneBySize(_launch_all(again), again)
    assert ssd(torch.empty(9, 1100)) == [big] * 2  # the same class (16 x 2048): restored
    assert [t.tunings for t in again] == [0, 0]
    restored = ssd.saved[("cpu", 16, 2048)]  # the autotuners' own caches are put back after the call
    assert all(c[(256, 64, "torch.bfloat16")] is t.configs[t.configs.index(big)] for c, t in zip(restored, again))
    assert ssd(torch.empty(9, 1100), chunk_size=128) == [big] * 2  # a key the file lacks is tuned...
    assert [t.tunings for t in again] == [1, 1]
    assert ssd(torch.empty(1, 8)) == [_tuned_at(8)] * 2  # ...as is a class the file lacks
    assert len(json.loads(cache.read_text())) == 2  # that class is now in the file too

    other = [_Tuner(configs=("BLOCK 16", "BLOCK 32")), _Tuner(configs=("BLOCK 16", "BLOCK 32"))]
    AutotuneBySize(_launch_all(other), other)(torch.empty(16, 2048))
    assert [t.tunings for t in other] == [1, 1]  # other configurations: tuned, not restored
    assert len(json.loads(cache.read_text())) == 3


def test_a_damaged_autotune_cache_means_tuning_again(tmp_path, monkeypatch, caplog):
    cache = tmp_path / "kernels.json"
    monkeypatch.setenv("REPRFLOW_KERNEL_CACHE", str(cache))
    first = [_Tuner()]
    AutotuneBySize(_launch_all(first), first)(torch.empty(16, 2048))
    entries = json.loads(cache.read_text())
    (key,) = entries
    for bad in ([[["(256, 64, 'torch.bfloat16')", 7]]], [[["(256, 64", -1]]], "nonsense", [[], []]):
        cache.write_text(json.dumps({key: bad}))
        tuner = [_Tuner()]
        assert AutotuneBySize(_launch_all(tuner), tuner)(torch.empty(16, 2048)) == [_tuned_at(16 * 2048)]
        assert tuner[0].tunings == 1, bad
    assert "malformed" in caplog.text
    cache.write_text("{not json")
    tuner = [_Tuner()]
    AutotuneBySize(_launch_all(tuner), tuner)(torch.empty(16, 2048))
    assert tuner[0].tunings == 1 and "unreadable" in caplog.text
    assert json.loads(cache.read_text())[key] == entries[key]  # rewritten whole


def _ssd_args(batch: int, n_tokens: int, heads: int = 8, head_dim: int = 64, d_state: int = 128) -> dict:
    g = torch.Generator(device="cuda").manual_seed(batch * 10_000 + n_tokens)
    x = torch.randn(batch, n_tokens, heads, head_dim, device="cuda", generator=g).bfloat16()
    dt = torch.randn(batch, n_tokens, heads, device="cuda", generator=g).bfloat16()
    B = torch.randn(batch, n_tokens, 1, d_state, device="cuda", generator=g).bfloat16()
    C = torch.randn(batch, n_tokens, 1, d_state, device="cuda", generator=g).bfloat16()
    A = -torch.linspace(1.0, 16.0, heads, device="cuda")
    return dict(
        x=x,
        dt=dt,
        A=A,
        B=B,
        C=C,
        D=torch.ones(heads, device="cuda"),
        dt_bias=torch.full((heads,), -2.0, device="cuda"),
        dt_softplus=True,
    )


@requires_cuda
@pytest.mark.gpu
def test_ssd_tunes_once_per_size_class_and_keeps_each_choice():
    kernels = load_mamba_ssm_triton()
    if kernels is None:
        pytest.skip("mamba_ssm's Triton kernels are not importable here")
    ssd = kernels.chunk_scan_combined
    assert isinstance(ssd, AutotuneBySize)
    tuners = ssd.autotuners
    assert len(tuners) >= 5, [t.base_fn.__name__ for t in tuners]  # the five SSD forward kernels at least

    def timings():  # a new object each time an autotuner benchmarks its configurations
        return [id(getattr(t, "configs_timings", None)) for t in tuners]

    def run(batch, n_tokens):
        a = _ssd_args(batch, n_tokens)
        return a, ssd(a["x"], a["dt"], a["A"], a["B"], a["C"], 256, D=a["D"], dt_bias=a["dt_bias"], dt_softplus=True)

    big_class = ssd.size_class((torch.empty(8, 2048, device="cuda"),), {})
    ssd.saved.pop(big_class, None)  # an earlier test in this process may have used that size
    run(1, 4)  # the tiny first call that used to fix the configurations for every size
    after_tiny = timings()
    tiny_class = ssd.size_class((torch.empty(1, 4, device="cuda"),), {})
    a, big = run(8, 2048)
    after_big = timings()
    tuned_again = [i for i, (p, q) in enumerate(zip(after_tiny, after_big)) if p != q]
    assert tuned_again, "the large call reused the tiny call's autotuning"
    assert {tiny_class, big_class} <= set(ssd.saved)
    run(8, 2000)  # same size class (8 x 2048): no new tuning
    assert timings() == after_big
    run(1, 4)  # back to the tiny class: its own choices restored, no new tuning
    run(2, 300)  # the chooser's check size: small, the same class
    assert timings() == after_big
    # the result is still the SSD's: first sequence, first 300 tokens, against float64
    small = {k: (v[:1, :300] if k in ("x", "dt", "B", "C") else v) for k, v in a.items()}
    want = ssd_reference(**{k: (v.double() if torch.is_tensor(v) else v) for k, v in small.items()}, chunk_size=0)
    got = big[:1, :300].double()
    assert float((got - want).norm() / want.norm()) < 3e-2


@requires_cuda
@pytest.mark.gpu
def test_ssd_choices_survive_the_process_through_the_kernel_cache(tmp_path, monkeypatch):
    """The real mamba_ssm autotuners: a class tuned by one wrapper is restored by a fresh one (as
    in the next extraction job) from REPRFLOW_KERNEL_CACHE, with no benchmarking and the same output."""
    kernels = load_mamba_ssm_triton()
    if kernels is None:
        pytest.skip("mamba_ssm's Triton kernels are not importable here")
    monkeypatch.setenv("REPRFLOW_KERNEL_CACHE", str(tmp_path / "kernels.json"))
    fn, tuners = kernels.chunk_scan_combined.fn, kernels.chunk_scan_combined.autotuners
    a = _ssd_args(4, 4096)
    call = dict(D=a["D"], dt_bias=a["dt_bias"], dt_softplus=True)
    one, two = AutotuneBySize(fn, tuners), AutotuneBySize(fn, tuners)
    first = one(a["x"], a["dt"], a["A"], a["B"], a["C"], 256, **call)
    (size_class,) = one.saved
    benchmarked = [id(getattr(t, "configs_timings", None)) for t in tuners]
    again = two(a["x"], a["dt"], a["A"], a["B"], a["C"], 256, **call)
    assert [id(getattr(t, "configs_timings", None)) for t in tuners] == benchmarked  # nothing benchmarked
    assert two.saved[size_class] == one.saved[size_class] and any(one.saved[size_class])
    assert torch.equal(first, again)


def test_cache_keys_name_partials_by_function_and_keywords():
    """Two candidates wrapping one function with different keywords (the SSD's `gluon` and
    `fused_states`) get different, process-independent keys: no object address in them."""
    import functools

    from reprflow.kernels.autotune_by_size import _callable_name

    name = _callable_name(functools.partial(_launch_all, output="gluon"))
    assert name == f"{__name__}._launch_all(output='gluon')"
    assert _callable_name(functools.partial(_launch_all, output="mamba_ssm")) != name
    assert " at 0x" not in _callable_name(AutotuneBySize) and "0x" not in name
