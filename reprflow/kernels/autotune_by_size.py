"""Triton autotuning per problem size, for kernels whose autotune key leaves the size out.

``mamba_ssm``'s SSD kernels (the five behind ``mamba_chunk_scan_combined``: chunk cumsum,
chunk state, state passing, ``C B^T`` and chunk scan) are ``triton.autotune``\\ d on the
chunk size, head dim and state size only (``key=['chunk_size', 'hdim', 'dstate', ...]`` in
``mamba_ssm/ops/triton/ssd_*.py``), not on the batch or the sequence length. Each tunes at its
first call in the process and keeps that launch configuration for every later call, of any size.
Under reprflow that first call is small: the 4-token warm-up forward or the kernel chooser's
check on at most 2 x 300 tokens. The 16 x 2048-token forwards then ran with configurations
tuned on a problem thousands of times smaller, where every configuration costs about one
launch, so which one won varied from process to process: 1.92-3.10 ms per Mamba2-2.7B layer
against 1.62-1.64 ms tuned per size (docs/kernels.md, "mamba_ssm's SSD tunes per size
class").

:class:`AutotuneBySize` wraps such a function and keeps the autotuners' caches per size class
(device, batch and tokens each rounded up to a power of two, as the kernel chooser's shape
classes): the first call of a class tunes at that size, later calls of the class reuse its
configurations, and a small call no longer decides for a large one. Calls below
:data:`SMALL_TOKENS` (batch x tokens, each rounded up) share one class: they take microseconds
whatever the configuration, and tuning each of them (the warm-up, the kernel chooser's checks)
would cost seconds per process for nothing.

Tuning one size class benchmarks every configuration of the five forward kernels (42 in
``mamba_ssm`` 2.3.2) for Triton's fixed ~125 ms each: about 5 s, twice per extraction job (the
small class and the job's). When ``REPRFLOW_KERNEL_CACHE`` names a file (the workflow sets it:
``reprflow/kernels/kernel_cache.py``), the configurations chosen for a class are kept there, as
each autotuner's keys and the index of its chosen configuration, and the next process restores
them instead of tuning: each class is tuned once per run, GPU model and package version.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import logging
from typing import Callable

from torch import Tensor

from reprflow.kernels import kernel_cache
from reprflow.kernels.select import _pow2  # the kernel chooser's size classes

logger = logging.getLogger(__name__)

__all__ = ["AutotuneBySize", "SMALL_TOKENS", "SSD_MODULES", "ssd_autotuners"]

#: calls with fewer (batch x tokens, each rounded up to a power of two) share the class "small"
SMALL_TOKENS = 16384

#: the modules of ``mamba_ssm.ops.triton`` behind ``mamba_chunk_scan_combined``
SSD_MODULES = ("ssd_chunk_scan", "ssd_chunk_state", "ssd_state_passing", "ssd_bmm", "ssd_combined")


def ssd_autotuners() -> list:
    """Every ``triton.autotune``\\ d kernel of ``mamba_ssm``'s SSD modules (forward and backward)."""
    from triton.runtime.autotuner import Autotuner

    modules = [importlib.import_module(f"mamba_ssm.ops.triton.{n}") for n in SSD_MODULES]
    return [obj for m in modules for obj in vars(m).values() if isinstance(obj, Autotuner)]


class AutotuneBySize:
    """``fn`` with the caches of ``autotuners`` kept per size class of its first tensor argument.

    Parameters
    ----------
    fn : callable
        The function that launches the autotuned kernels (e.g. ``mamba_chunk_scan_combined``);
        its first argument (or keyword ``tensor_arg``) is a ``(batch, n_tokens, ...)`` tensor.
    autotuners : list of triton.runtime.autotuner.Autotuner
        The kernels ``fn`` launches whose autotune key leaves batch and tokens out.
    tensor_arg : str
        Keyword name of that first argument.

    Notes
    -----
    Before each call every autotuner's ``cache`` (autotune key -> chosen ``triton.Config``) is
    replaced by the one saved for the call's size class (read from the disk cache, or empty for
    a new class, so the call tunes); after it, the caches are saved for the class, a class this
    process tuned is written to the disk cache, and the caches are put back as they were: a call
    to the same kernels outside the wrapper (``mamba_ssm`` called directly, or another wrapper's
    function) runs with its own configurations, never with the last wrapped call's. The swap is a
    few dict operations per call (5.6 us one way, measured on a CPU). Tuning a new class benchmarks each kernel's configurations once
    (seconds, once per class and run). Not thread-safe: one process drives one GPU from one
    thread, as reprflow does.
    """

    def __init__(self, fn: Callable, autotuners: list, tensor_arg: str = "x"):
        self.fn = fn
        self.autotuners = list(autotuners)
        self.tensor_arg = tensor_arg
        self.saved: dict[tuple, list[dict]] = {}
        self.__wrapped__ = fn
        self.__doc__ = fn.__doc__
        # what the tuning chose from: every autotuner's configurations, in order
        configs = "\n".join(str(c) for t in self.autotuners for c in [*t.configs, "|"])
        self._configs_digest = hashlib.sha256(configs.encode()).hexdigest()[:12]
        self._name = _callable_name(fn)

    def size_class(self, args: tuple, kwargs: dict) -> tuple:
        """(device, batch, tokens) of the call, batch and tokens rounded up to powers of two;
        (device, "small") below :data:`SMALL_TOKENS`."""
        x: Tensor = args[0] if args else kwargs[self.tensor_arg]
        batch, tokens = _pow2(x.shape[0]), _pow2(x.shape[1])
        if batch * tokens < SMALL_TOKENS:
            return (str(x.device), "small")
        return (str(x.device), batch, tokens)

    def __call__(self, *args, **kwargs):
        key = self.size_class(args, kwargs)
        saved = self.saved.get(key)
        disk_key = None
        if saved is None and (path := kernel_cache.cache_path()) is not None:
            x: Tensor = args[0] if args else kwargs[self.tensor_arg]
            disk_key = f"autotune {self._name} | {key[1:]} | configs {self._configs_digest} | {kernel_cache.identity(x.device)}"
            saved = self._restore(kernel_cache.read_entries(path).get(disk_key))
        outside = [dict(t.cache) for t in self.autotuners]
        for i, tuner in enumerate(self.autotuners):
            tuner.cache.clear()
            if saved is not None:
                tuner.cache.update(saved[i])
        try:
            out = self.fn(*args, **kwargs)
            self.saved[key] = [dict(t.cache) for t in self.autotuners]
        finally:  # callers outside the wrapper keep their own configurations
            for tuner, cache in zip(self.autotuners, outside):
                tuner.cache.clear()
                tuner.cache.update(cache)
        tuned = saved is None or any(set(now) != set(was) for now, was in zip(self.saved[key], saved))
        if disk_key is not None and tuned:  # tuned here: keep it for the next process
            kernel_cache.write_entry(path, disk_key, self._entry(self.saved[key]))
        return out

    def _entry(self, caches: list[dict]) -> list[list]:
        """Per autotuner, ``[repr(autotune key), index of the chosen configuration]`` pairs (keys
        that ``ast.literal_eval`` cannot rebuild, or configurations not among the autotuner's own,
        are left out: the next process tunes them again)."""
        entry = []
        for tuner, cache in zip(self.autotuners, caches):
            pairs = []
            for tkey, config in cache.items():
                index = next((i for i, c in enumerate(tuner.configs) if c is config), None)
                if index is None:  # a pruned copy: the same configuration by its description
                    index = next((i for i, c in enumerate(tuner.configs) if str(c) == str(config)), None)
                if index is not None and _literal(repr(tkey)) == tkey:
                    pairs.append([repr(tkey), index])
            entry.append(pairs)
        return entry

    def _restore(self, entry) -> list[dict] | None:
        """The caches an :meth:`_entry` describes, or None (tune) when it is missing or malformed."""
        if not isinstance(entry, list) or len(entry) != len(self.autotuners):
            return None
        caches = []
        try:
            for tuner, pairs in zip(self.autotuners, entry):
                cache = {}
                for k, i in pairs:
                    if not (isinstance(i, int) and 0 <= i < len(tuner.configs)):
                        raise ValueError(f"configuration index {i!r} of {len(tuner.configs)}")
                    cache[_literal(k)] = tuner.configs[i]
                caches.append(cache)
        except (TypeError, ValueError) as exc:
            logger.warning("autotune cache entry for %s malformed (%s); tuning again", self._name, exc)
            return None
        return caches


def _callable_name(fn: Callable) -> str:
    """A name for ``fn`` that is the same in every process (a ``functools.partial`` with its
    keywords; never an object's address), for the disk cache's keys."""
    if isinstance(fn, functools.partial):
        keywords = ", ".join(f"{k}={v!r}" for k, v in sorted(fn.keywords.items()))
        return f"{_callable_name(fn.func)}({keywords})"
    return f"{getattr(fn, '__module__', None) or ''}.{getattr(fn, '__qualname__', None) or type(fn).__qualname__}"


def _literal(text: str):
    """``ast.literal_eval(text)``, or a value equal to no autotune key when it cannot be read."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return object()
