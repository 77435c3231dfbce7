"""transformers' per-function SSM kernel fallback warnings become one reprflow line per process."""

import logging

import pytest
import torch
from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

import reprflow  # noqa: F401  (installs the filter)
from reprflow.kernels import fallback_notice


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def fresh(monkeypatch):
    """A process that has said nothing yet, and a handler on the transformers logger itself."""
    monkeypatch.setitem(fallback_notice._state, "said", False)
    monkeypatch.setitem(fallback_notice._state, "device", None)
    monkeypatch.setitem(fallback_notice._state, "replaced", None)
    monkeypatch.setitem(fallback_notice._state, "pending", None)
    monkeypatch.setitem(fallback_notice._state, "hook", None)
    logging.Logger.warning_once.cache_clear()  # transformers says each message once per process (lru_cache)
    hf = logging.getLogger(fallback_notice.HF_LOGGER)
    seen = _Collect()
    hf.addHandler(seen)
    yield seen
    hf.removeHandler(seen)
    if fallback_notice._state["hook"] is not None:  # a test that left a line waiting
        fallback_notice._state["hook"].remove()


def _ours(caplog):
    return [r for r in caplog.records if r.name == "reprflow.kernels"]


def test_cpu_forwards_of_mamba_and_mamba2_log_one_expected_line(fresh, caplog):
    caplog.set_level(logging.INFO)
    fallback_notice.note_device(torch.device("cpu"))
    models = (
        MambaForCausalLM(MambaConfig(hidden_size=16, num_hidden_layers=2, vocab_size=64, state_size=4)),
        Mamba2ForCausalLM(
            Mamba2Config(
                hidden_size=32,
                num_hidden_layers=2,
                vocab_size=64,
                state_size=8,
                num_heads=4,
                head_dim=16,
                n_groups=1,
                expand=2,
            )
        ),
    )
    with torch.no_grad():
        for model in models:
            for _ in range(2):  # a second batch, as a second prompt set in the same process
                model.eval()(torch.randint(0, 64, (2, 9)))
    (line,) = _ours(caplog)
    assert line.levelno == logging.INFO and "on CPU, as expected" in line.getMessage()
    assert "mamba_ssm / causal_conv1d are CUDA-only" in line.getMessage()
    assert not [r for r in fresh.records if "falling back" in r.getMessage()]  # transformers' own lines dropped


def _transformers_warns_at_model_build():
    hf = logging.getLogger(fallback_notice.HF_LOGGER)
    for func, dist in (("selective_scan_fn", "mamba_ssm"), ("causal_conv1d_fn", "causal_conv1d")):
        hf.warning(
            f"`{func}` is falling back to its reference PyTorch implementation because `{dist}` is not "
            f"installed. This is correct but much slower; install `{dist}` for the optimized kernel."
        )
    hf.warning("an unrelated transformers warning")


def test_on_cuda_with_transformers_mixers_the_line_is_a_warning_naming_what_to_install(fresh, caplog):
    caplog.set_level(logging.INFO)
    fallback_notice.note_device("cuda:1")
    _transformers_warns_at_model_build()
    assert _ours(caplog) == []  # built before the fast path: the line waits for its verdict
    fallback_notice.note_ssm_kernels(replaced=False)  # e.g. kernels={"mamba_scan": "hf"}
    (line,) = _ours(caplog)
    assert line.levelno == logging.WARNING
    assert "install mamba_ssm and causal_conv1d" in line.getMessage() and "`selective_scan_fn`" in line.getMessage()
    assert [r.getMessage() for r in fresh.records] == ["an unrelated transformers warning"]


def test_on_cuda_with_reprflow_kernels_the_line_says_they_replace_the_fallback(fresh, caplog):
    caplog.set_level(logging.INFO)
    fallback_notice.note_device("cuda:0")
    _transformers_warns_at_model_build()
    fallback_notice.note_ssm_kernels(replaced=True)  # prepare_model routed the mixers to reprflow's kernels
    (line,) = _ours(caplog)
    assert line.levelno == logging.INFO
    assert "reprflow's own kernels replace it" in line.getMessage() and "`selective_scan_fn`" in line.getMessage()
    assert [r.getMessage() for r in fresh.records] == ["an unrelated transformers warning"]


def test_prepare_model_tells_the_notice_whether_its_mixers_stay_transformers(fresh):
    from reprflow.fastpath import prepare_model

    model = MambaForCausalLM(MambaConfig(hidden_size=16, num_hidden_layers=2, vocab_size=64, state_size=4))
    prepare_model(model, scan="hf")
    assert fallback_notice._state["replaced"] is False
    prepare_model(model, scan="torch")
    assert fallback_notice._state["replaced"] is True


def test_collect_states_on_transformers_mixers_tells_the_notice_they_stay(fresh):
    from reprflow.collect import collect_states
    from reprflow.prompts.tokenizers import load_tokenizer

    model = MambaForCausalLM(MambaConfig(hidden_size=16, num_hidden_layers=2, vocab_size=50304, state_size=4))
    collect_states(model, load_tokenizer("gpt-neox-20b"), ["a b c d"], view="hf", positions="last", device="cpu")
    assert fallback_notice._state["replaced"] is False  # not prepared: transformers' forward runs


def test_a_plain_transformers_forward_decides_a_waiting_line(fresh, caplog):
    """No prepare_model, no collect_states: the model's first mixer forward decides the line (here on
    the CPU, where the line is the expected INFO); the global hook is gone once it has."""
    caplog.set_level(logging.INFO)
    fallback_notice.note_device("cuda")  # e.g. torch sees a GPU; nothing else told the notice
    _transformers_warns_at_model_build()
    assert _ours(caplog) == [] and fallback_notice._state["hook"] is not None
    model = MambaForCausalLM(MambaConfig(hidden_size=16, num_hidden_layers=2, vocab_size=64, state_size=4)).eval()
    with torch.no_grad():
        model(torch.randint(0, 64, (1, 5)))
    (line,) = _ours(caplog)
    assert line.levelno == logging.INFO and "on CPU, as expected" in line.getMessage()
    assert fallback_notice._state["hook"] is None and fallback_notice._state["replaced"] is False


def test_a_waiting_line_after_an_unpatched_cuda_mixer_is_a_warning(fresh, caplog):
    """The hook's decision as a CUDA forward of transformers' own mixer would make it: a WARNING."""
    caplog.set_level(logging.INFO)
    fallback_notice.note_device("cuda")
    _transformers_warns_at_model_build()
    mixer = (
        MambaForCausalLM(MambaConfig(hidden_size=16, num_hidden_layers=1, vocab_size=64, state_size=4))
        .backbone.layers[0]
        .mixer
    )

    class _OnCuda:  # the input's device is all the hook reads
        device = torch.device("cuda", 0)

    fallback_notice._first_mixer_forward(mixer, (_OnCuda(),))
    (line,) = _ours(caplog)
    assert line.levelno == logging.WARNING and "on cuda fall back" in line.getMessage()


def test_the_layout_probe_at_load_decides_no_line(fresh, caplog):
    """Loading a model runs reprflow's 3-token layout probe through transformers' own mixers before
    prepare_model can route them: transformers' fallback warning fires in its first mixer, and the
    probe's second mixer once decided the line as "falls back" (every CUDA Mamba extraction warned of
    a slow path it never ran). The line now waits for the fast path's verdict."""
    from reprflow.kernels.mamba_mixers import install_mamba_forward
    from reprflow.models.layouts import get_layout

    caplog.set_level(logging.INFO)
    fallback_notice.note_device("cuda")  # as on a GPU machine: only the device kind is read
    model = MambaForCausalLM(MambaConfig(hidden_size=16, num_hidden_layers=3, vocab_size=64, state_size=4)).eval()
    get_layout(model)  # the probe: transformers' mixers run (on the CPU here) and warn
    assert fallback_notice._state["pending"] is not None  # transformers did warn, inside the probe
    assert _ours(caplog) == [] and fallback_notice._state["replaced"] is None  # and the probe decided nothing
    install_mamba_forward(model, scan_impl="torch", conv_impl="torch")  # what prepare_model does next
    fallback_notice.note_model(model)
    (line,) = _ours(caplog)
    assert line.levelno == logging.INFO and "reprflow's own kernels replace it" in line.getMessage()
    assert fallback_notice._state["hook"] is None and fallback_notice._state["probing"] == 0
