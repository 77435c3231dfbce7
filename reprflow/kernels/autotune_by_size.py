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
"""

from __future__ import annotations

import importlib
from typing import Callable

from torch import Tensor

from reprflow.kernels.select import _pow2  # the kernel chooser's size classes

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
    replaced by the one saved for the call's size class (empty for a new class, so the call
    tunes); after it, the caches are saved for the class. The swap is a few dict operations per
    call (5.6 us, measured on a CPU). Tuning a new class benchmarks each kernel's configurations
    once (seconds, once per class and process). Not thread-safe: one process drives one GPU from
    one thread, as reprflow does.
    """

    def __init__(self, fn: Callable, autotuners: list, tensor_arg: str = "x"):
        self.fn = fn
        self.autotuners = list(autotuners)
        self.tensor_arg = tensor_arg
        self.saved: dict[tuple, list[dict]] = {}
        self.__wrapped__ = fn
        self.__doc__ = fn.__doc__

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
        for i, tuner in enumerate(self.autotuners):
            tuner.cache.clear()
            if saved is not None:
                tuner.cache.update(saved[i])
        out = self.fn(*args, **kwargs)
        self.saved[key] = [dict(t.cache) for t in self.autotuners]
        return out
