"""One log line per process for transformers' "falling back to its reference PyTorch implementation".

transformers (``transformers.integrations.hub_kernels``) logs one warning per kernel function
(``causal_conv1d_fn``, ``selective_scan_fn``, ``mamba_chunk_scan_combined``, ...) in every
process whose Mamba / Mamba-2 forward runs without ``mamba_ssm`` / ``causal_conv1d``: the demo's
extraction jobs printed about 32 such lines. Those packages are CUDA-only, so on a CPU the
fallback is expected and the path is exact (the same numbers, slower).

:func:`install` (run by ``import reprflow``) puts a filter on that transformers logger which
drops these warnings and logs, once per process, on the ``reprflow.kernels`` logger:

- on CPU, at INFO: the fallback is expected there (Mamba-1 then runs reprflow's torch path where
  :func:`reprflow.fastpath.prepare_model` switched it, Mamba-2 transformers' own);
- on CUDA, where :func:`reprflow.fastpath.prepare_model` replaced transformers' mixers by
  reprflow's own kernels (:func:`note_ssm_kernels`), at INFO: transformers' reference path is
  not what runs (transformers warns when it builds the model, before the fast path is set up;
  the line then waits for the fast path's verdict);
- on CUDA otherwise, a WARNING naming the packages to install (envs/gpu.yaml, docs/kernels.md).

The device is the last one :func:`note_device` was told (the model's device, by
:func:`reprflow.fastpath.prepare_model` and :func:`reprflow.collect.collect_states`), or CUDA
when torch sees a GPU. Other transformers messages pass untouched.

A line waiting for the fast path's verdict is also decided by the first forward of a transformers
Mamba / Mamba-2 mixer (a global forward pre-hook, held only while the line waits): a process that
imports reprflow and then runs transformers' model itself, without ``prepare_model`` or
``collect_states``, gets the line from what that forward runs on and whether its mixer is
reprflow's. Forwards inside :func:`layout_probe` (reprflow's own 3-token probe of a model's block
outputs, which runs transformers' mixers while the model loads, before the fast path exists)
decide nothing.

No stored value depends on this module (it only logs): the workflow's lineage leaves it out
(``reprflow.workflow.lineage.LOGGING_ONLY``), so editing it reruns no job.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["HF_LOGGER", "install", "layout_probe", "note_device", "note_model", "note_ssm_kernels"]

HF_LOGGER = "transformers.integrations.hub_kernels"
"""The transformers logger that emits the per-function fallback warnings."""

_PATTERN = re.compile(
    r"`(?P<func>[^`]+)` is falling back to its reference PyTorch implementation because "
    r"`(?P<dist>[^`]+)` is not installed"
)
_PACKAGES = ("mamba_ssm", "causal_conv1d")
logger = logging.getLogger("reprflow.kernels")

_state: dict = {"device": None, "said": False, "replaced": None, "pending": None, "hook": None, "probing": 0}

#: transformers' SSM mixer classes, whose first forward decides a waiting line
_MIXER_CLASSES = ("MambaMixer", "Mamba2Mixer")


def note_device(device) -> None:
    """Record the device kind (``"cpu"``, ``"cuda"``, ...) the next forwards run on."""
    _state["device"] = str(getattr(device, "type", device)).split(":")[0]


def note_ssm_kernels(replaced: bool) -> None:
    """Record whether the SSM mixers of the model about to run are reprflow's kernels
    (``replaced``) or transformers' own; a fallback notice that was waiting for this is said now."""
    _state["replaced"] = bool(replaced)
    if _state["hook"] is not None:
        _state["hook"].remove()
        _state["hook"] = None
    if _state["pending"] is not None:
        first, _state["pending"] = _state["pending"], None
        _say(first)


def note_model(model) -> None:
    """Tell the notice whether ``model``'s SSM mixers are reprflow's kernels (a Mamba / Mamba-2
    model; any other family says nothing): :func:`reprflow.fastpath.prepare_model` and
    :func:`reprflow.collect.collect_states` call it before their forwards."""
    if getattr(getattr(model, "config", None), "model_type", None) in ("mamba", "mamba2"):
        note_ssm_kernels(_ssm_forward_patched(model))


@contextmanager
def layout_probe() -> Iterator[None]:
    """Within this context a transformers SSM mixer's forward decides no waiting line.

    :func:`reprflow.models.discover.probe_block_output` runs a 3-token forward through
    transformers' own mixers while a model loads, before :func:`reprflow.fastpath.prepare_model`
    can route them to reprflow's kernels; transformers' fallback warning fires in its first mixer.
    Without this the probe's next mixer decided the line, so every CUDA extraction of a Mamba
    model warned of a slow path it never ran (found in a cell run on an H200, 2026-12-06).
    """
    _state["probing"] += 1
    try:
        yield
    finally:
        _state["probing"] -= 1


def _first_mixer_forward(module, args) -> None:
    """Global forward pre-hook while a line waits: the first transformers SSM mixer to run decides it
    (its input's device; reprflow's kernels if :func:`~reprflow.kernels.mamba_mixers.patch_forward`
    routed it)."""
    if _state["probing"] or type(module).__name__ not in _MIXER_CLASSES:
        return
    device = getattr(args[0], "device", None) if args else None
    if device is not None:
        note_device(device)
    note_ssm_kernels(_ssm_forward_patched(module))


def _ssm_forward_patched(module) -> bool:
    """:func:`reprflow.kernels.mamba_mixers.ssm_forward_patched` (the one place that knows the mark).
    Imported by name at the call: this module is imported by every ``import reprflow`` and only
    logs, so the static import walk of ``reprflow.workflow.lineage`` must not make the kernels a
    DVC dependency of every stage; torch is loaded by then (a model exists)."""
    import importlib

    return importlib.import_module("reprflow.kernels.mamba_mixers").ssm_forward_patched(module)


def _wait_for_a_forward() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and _state["hook"] is None:
        _state["hook"] = torch.nn.modules.module.register_module_forward_pre_hook(_first_mixer_forward)


def _say(first: str) -> None:
    """The one line of this process about transformers' fallback (``first``: the first function named)."""
    if _device_kind() == "cpu":
        logger.info(
            "SSM kernels: torch paths on CPU, as expected (%s are CUDA-only): transformers' own, or "
            "reprflow's for Mamba-1 after reprflow.fastpath.prepare_model (same results); first was %s",
            " / ".join(_PACKAGES),
            first,
        )
    elif _state["replaced"]:
        logger.info(
            "SSM kernels on %s: transformers reports its reference PyTorch path (%s not installed; first was "
            "%s), but reprflow's own kernels replace it (the fast path report names them)",
            _device_kind(),
            " / ".join(_PACKAGES),
            first,
        )
    else:
        logger.warning(
            "SSM kernels on %s fall back to transformers' reference PyTorch path (same results, much "
            "slower): install %s (envs/gpu.yaml, docs/kernels.md); first was %s",
            _device_kind(),
            " and ".join(_PACKAGES),
            first,
        )


def _device_kind() -> str:
    if _state["device"] is not None:
        return _state["device"]
    torch = sys.modules.get("torch")
    return "cuda" if torch is not None and torch.cuda.is_available() else "cpu"


class _FallbackNotice(logging.Filter):
    """Drops the per-function fallback warnings; the first one becomes one reprflow line."""

    def filter(self, record: logging.LogRecord) -> bool:
        match = _PATTERN.search(record.getMessage())
        if match is None:
            return True
        if not _state["said"]:
            _state["said"] = True
            first = f"`{match['func']}` (needs `{match['dist']}`)"
            if _device_kind() != "cpu" and _state["replaced"] is None:
                _state["pending"] = first  # built before the fast path: its verdict decides the line,
                _wait_for_a_forward()  # or the first mixer forward, if nothing gives one
            else:
                _say(first)
        return False


def install() -> None:
    """Filter the transformers fallback warnings of this process (idempotent)."""
    hf = logging.getLogger(HF_LOGGER)
    if not any(isinstance(f, _FallbackNotice) for f in hf.filters):
        hf.addFilter(_FallbackNotice())
