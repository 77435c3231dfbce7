"""Choose, per op and shape class, the fastest implementation that is correct here.

An *op* (:class:`KernelOp`) is one computation with several implementations
(*candidates*, :class:`Candidate`) that take the same arguments as its reference
function. Calling the op dispatches to the candidate chosen for the call's *shape class*
(dtype, device and sizes, with batch and sequence length rounded up to a power of two).
The first call of a shape class chooses, in this order:

1. **Forced**: ``REPRFLOW_KERNEL_<OP>=<name>`` in the environment (``<OP>`` is the op
   name in capitals, e.g. ``REPRFLOW_KERNEL_MAMBA_SCAN=triton``), or the ``forced``
   argument (``prepare_model(kernels={...})``). ``auto`` or unset: not forced. A name the
   op does not know, or one not available on this device, is a :class:`ConfigError`.
2. **Checked**: every available candidate runs once on a slice of the call's own
   inputs (batch <= :data:`CHECK_BATCH`, tokens <= :data:`CHECK_TOKENS`) and is compared
   with the reference, computed once in float64 from the same (already rounded) inputs; a
   relative error ``||got - want|| / ||want||`` above :data:`REL_TOL` (by dtype) or an
   exception removes it (logged at WARNING). A forced candidate that fails is an error.
   The fallbacks (``timed=False``) are checked only when no timed candidate passes: they
   are never chosen otherwise, and their per-token loops keep the GPU waiting.
3. **Chosen**: with one timed candidate left it is taken without measuring (always the
   case on CPU, where only the torch paths exist); with several, each runs on the call's
   own inputs (one warm-up, then :data:`N_TIMED` timed calls, median) and the fastest
   wins. When the runner-up is within :data:`CLOSE_MARGIN` of the fastest, the close
   candidates are timed again, :data:`N_TIMED` calls each per round, in alternating order,
   for up to :data:`CLOSE_ROUNDS` more rounds, and the median of all their calls decides
   (three calls once chose a slower Mamba-1 scan by noise on an H200, 2026-12-06).
   Candidates marked ``timed=False`` (the per-token torch loops) are fallbacks,
   taken only when nothing else passes.

The choice is cached per process (all models and layers share it) and, when
``REPRFLOW_KERNEL_CACHE`` names a JSON file, on disk (``reprflow/kernels/kernel_cache.py``),
keyed by op, shape class, the candidates timed, GPU name, the versions of torch, triton,
mamba_ssm and causal_conv1d and a digest of reprflow's kernel sources; a cached choice is still
checked for correctness but not re-timed. Each choice is logged at INFO with its reason
and recorded in the ``report`` dict passed to the op (``report[op][shape] = {kernel,
reason, ms}``), which ``prepare_model`` returns and ``extract`` stores in the store attrs.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from reprflow.errors import ConfigError
from reprflow.kernels import kernel_cache

logger = logging.getLogger(__name__)

__all__ = ["Candidate", "KernelOp", "REL_TOL", "env_var", "forced_name", "clear_cache"]

REL_TOL = {torch.float32: 1e-3, torch.float16: 1e-2, torch.bfloat16: 3e-2, torch.float64: 1e-6}
N_TIMED = 3
#: Candidates within this fraction of the fastest's time are timed again (see the module doc).
CLOSE_MARGIN = 0.05
#: At most this many extra rounds of :data:`N_TIMED` calls for close candidates.
CLOSE_ROUNDS = 3
#: The check's slice: batch rows and leading tokens. 300 tokens is longer than one
#: 256-token chunk of ``mamba_ssm``'s SSD (the paper's Mamba-2 checkpoints use
#: ``chunk_size=256``) and not a multiple of a power of two, so the state passed between
#: chunks and a partial last block are both checked (64 tokens checked neither).
CHECK_BATCH, CHECK_TOKENS = 2, 300
_PROCESS_CACHE: dict[tuple, str] = {}


@dataclass(frozen=True)
class Candidate:
    """One implementation of an op.

    Attributes
    ----------
    name : str
        Short name used in logs, reports and ``REPRFLOW_KERNEL_<OP>`` (e.g. ``triton``).
    fn : callable
        Same signature and output (shape, dtype, layout-independent values) as the op's
        reference.
    origin : str
        Where it comes from, for the log (e.g. ``causal_conv1d 1.7.0 (compiled CUDA)``).
    devices : tuple of str
        ``torch.device.type`` values it runs on.
    timed : bool
        False for slow fallbacks (Python loops over tokens): never measured, chosen only
        when no timed candidate passes its check.
    """

    name: str
    fn: Callable[..., Tensor]
    origin: str
    devices: tuple[str, ...] = ("cuda",)
    timed: bool = True


def env_var(op: str) -> str:
    """Environment variable that forces ``op``'s kernel: ``REPRFLOW_KERNEL_<OP>``."""
    return f"REPRFLOW_KERNEL_{op.upper()}"


def forced_name(op: str, forced: str | None = None) -> str | None:
    """The kernel forced for ``op`` (argument first, then environment), or None for auto."""
    name = forced if forced not in (None, "") else os.environ.get(env_var(op), "")
    name = (name or "").strip()
    return None if name in ("", "auto") else name


def clear_cache() -> None:
    """Forget every in-process choice (tests)."""
    _PROCESS_CACHE.clear()


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _to64(v: Any) -> Any:
    return v.detach().to(torch.float64) if isinstance(v, Tensor) and v.is_floating_point() else v


@dataclass
class KernelOp:
    """A callable op that dispatches to its chosen candidate (see the module docstring).

    Parameters
    ----------
    name : str
        Op name (``mamba_scan``, ``causal_conv``, ``mamba2_ssd``).
    reference : callable
        Ground truth, called with float64 copies of the sliced inputs in the check.
    candidates : list of Candidate
        In order of preference (the first wins ties of availability; timing decides
        among several).
    time_major : tuple of str
        Parameter names of the reference whose tensors are ``(batch, n_tokens, ...)``:
        sliced for the check and used for the shape class.
    sizes : callable
        ``sizes(bound_arguments) -> tuple`` of the sizes other than batch and tokens that
        define the shape class (channels, state size, ...).
    report : dict
        Receives ``report[name][shape_class] = {"kernel", "reason", "ms"}``.
    forced : str, optional
        Kernel name forced by the caller (config); the environment variable is read
        when this is None.
    known : tuple of str
        Every kernel name of the op, installed here or not (for error messages);
        defaults to the candidates' names.
    """

    name: str
    reference: Callable[..., Tensor]
    candidates: list[Candidate]
    time_major: tuple[str, ...]
    sizes: Callable[[dict], tuple]
    report: dict = field(default_factory=dict)
    forced: str | None = None
    known: tuple[str, ...] = ()
    _chosen: dict[tuple, Candidate] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._signature = inspect.signature(self.reference)
        want = forced_name(self.name, self.forced)
        here = [c.name for c in self.candidates]
        known = sorted(set(self.known) | set(here))
        if want is not None and want not in known:
            raise ConfigError(
                f"{env_var(self.name)} (or prepare_model(kernels={{'{self.name}': ...}})) = {want!r}: unknown kernel; "
                f"choose one of {known} or 'auto'"
            )
        if want is not None and want not in here:
            raise ConfigError(
                f"{env_var(self.name)} (or prepare_model(kernels={{'{self.name}': ...}})) = {want!r}: not available on this "
                f"device or install (available: {here}); install it (docs/kernels.md) or set 'auto'"
            )

    def __call__(self, *args, **kwargs) -> Tensor:
        bound = self._signature.bind(*args, **kwargs)
        first = bound.arguments[self.time_major[0]]
        key = (
            first.device.type,
            str(first.dtype).removeprefix("torch."),
            _pow2(first.shape[0]),
            _pow2(first.shape[1]),
            *self.sizes(bound.arguments),
        )
        cand = self._chosen.get(key)
        if cand is None:
            cand = self._choose(key, bound, args, kwargs)
            self._chosen[key] = cand
        return cand.fn(*args, **kwargs)

    # ------------------------------------------------------------------ choosing
    def _check(self, cand: Candidate, small: dict, want: Callable[[], Tensor]) -> float:
        """Relative float64 error of ``cand`` on ``small`` (a slice of the call's inputs) against
        ``want()``, the reference on the same slice (computed at its first use, then kept)."""
        got = cand.fn(**small).to(torch.float64)
        ref = want()
        if got.shape != ref.shape:
            raise ValueError(f"shape {tuple(got.shape)} != reference {tuple(ref.shape)}")
        return float((got - ref).norm() / ref.norm().clamp_min(1e-30))

    def _check_slice(self, bound: inspect.BoundArguments) -> tuple[dict, Callable[[], Tensor]]:
        """The check's slice of the call's inputs and a function giving the float64 reference on it once."""
        small = dict(bound.arguments)
        for k in self.time_major:
            if isinstance(small.get(k), Tensor):
                small[k] = small[k][:CHECK_BATCH, :CHECK_TOKENS]
        # computed at the first check that needs it and kept (an exception is not kept: each check raises it)
        want = functools.cache(lambda: self.reference(**{k: _to64(v) for k, v in small.items()}).to(torch.float64))
        return small, want

    def _time(self, cand: Candidate, args, kwargs, device: torch.device, warm_up: bool = True) -> list[float]:
        """Milliseconds of :data:`N_TIMED` calls (after one warm-up call that compiles Triton kernels)."""
        if warm_up:
            cand.fn(*args, **kwargs)
        times = []
        for _ in range(N_TIMED):
            _sync(device)
            t0 = time.perf_counter()
            cand.fn(*args, **kwargs)
            _sync(device)
            times.append(1e3 * (time.perf_counter() - t0))
        return times

    def _choose(self, key: tuple, bound: inspect.BoundArguments, args, kwargs) -> Candidate:
        first = bound.arguments[self.time_major[0]]
        device, dtype = first.device, first.dtype
        shape = "x".join(str(v) for v in key[2:])
        here = [c for c in self.candidates if device.type in c.devices]
        want = forced_name(self.name, self.forced)
        if want is not None and want not in [c.name for c in here]:
            raise ConfigError(
                f"{env_var(self.name)} = {want!r}: not available on {device.type} "
                f"(available: {[c.name for c in here]}); install it or set 'auto'"
            )
        tol = REL_TOL.get(dtype, 3e-2)
        passed: list[Candidate] = []
        errors: dict[str, float] = {}
        small, reference = self._check_slice(bound)
        # timed candidates first; the fallbacks only if none of those passes (forced: that one alone)
        order = [c for c in here if c.timed] + [c for c in here if not c.timed]
        for c in order:
            if want is not None and c.name != want:
                continue
            if want is None and not c.timed and any(p.timed for p in passed):
                continue
            try:
                errors[c.name] = err = self._check(c, small, reference)
                ok = err <= tol
                why = f"relative error {err:.2e} > {tol:.0e}"
            except Exception as exc:  # a kernel that cannot run this input is not a choice
                ok, why = False, f"{type(exc).__name__}: {exc}"
            if ok:
                passed.append(c)
            elif want is not None:
                raise RuntimeError(f"{env_var(self.name)}={want}: kernel fails its check against the reference: {why}")
            else:
                logger.warning("kernel %s/%s rejected for %s %s: %s", self.name, c.name, dtype, shape, why)
        timed = [c for c in passed if c.timed]
        ms: dict[str, float] = {}
        if want is not None:
            chosen, reason = passed[0], f"forced by {env_var(self.name)} or prepare_model(kernels=...)"
        elif not timed:
            if not passed:
                raise RuntimeError(f"kernel op {self.name}: no candidate passes its check on {device.type} {dtype}")
            chosen, reason = passed[0], f"only correct candidate on {device.type} (not measured)"
        elif len(timed) == 1:
            chosen, reason = timed[0], f"only fast candidate available on {device.type} (not measured)"
        else:
            chosen, reason, ms = self._measure(key, timed, args, kwargs, device)
        entry = {
            "kernel": chosen.name,
            "origin": chosen.origin,
            "reason": reason,
            "check_rel_err": {k: float(f"{v:.3g}") for k, v in errors.items()},
        }
        if ms:
            entry["ms"] = {k: round(v, 4) for k, v in ms.items()}
        self.report.setdefault(self.name, {})[f"{key[1]} {shape}"] = entry
        logger.info(
            "kernel %s for %s %s on %s: %s (%s)%s",
            self.name,
            key[1],
            shape,
            device.type,
            chosen.name,
            reason,
            f"; ms {entry['ms']}" if ms else "",
        )
        return chosen

    def _measure(self, key, timed, args, kwargs, device) -> tuple[Candidate, str, dict[str, float]]:
        by_name = {c.name: c for c in timed}
        # the candidates are part of the key: a new or newly installed one is measured
        disk_key = f"{self.name} | {key} | among {','.join(sorted(by_name))} | {kernel_cache.identity(device)}"
        path = kernel_cache.cache_path()
        cached = _PROCESS_CACHE.get(disk_key)
        if cached is None and path is not None:
            cached = kernel_cache.read_entries(path).get(disk_key)
        if isinstance(cached, str) and cached in by_name:
            return by_name[cached], "measured earlier (cache) for this GPU, versions and shape class", {}
        runs: dict[str, list[float]] = {}
        for c in timed:
            try:
                runs[c.name] = self._time(c, args, kwargs, device)
            except Exception as exc:  # passed the small check, cannot run this size: not a choice
                logger.warning("kernel %s/%s rejected at %s: %s: %s", self.name, c.name, key, type(exc).__name__, exc)
        if not runs:
            raise RuntimeError(f"kernel op {self.name}: every candidate that passed its check failed at {key}")
        for r in range(CLOSE_ROUNDS):  # a close call is timed again, in alternating order
            ms = {n: statistics.median(v) for n, v in runs.items()}
            fastest = min(ms.values())
            close = sorted((n for n in ms if ms[n] <= fastest * (1 + CLOSE_MARGIN)), reverse=r % 2 == 0)
            if len(close) < 2:
                break
            for n in close:
                runs[n] += self._time(by_name[n], args, kwargs, device, warm_up=False)
        ms = {n: statistics.median(v) for n, v in runs.items()}
        best = min((c for c in timed if c.name in ms), key=lambda c: ms[c.name])
        _PROCESS_CACHE[disk_key] = best.name
        if path is not None:
            kernel_cache.write_entry(path, disk_key, best.name)
        others = ", ".join(
            f"{n} {v:.3f} ms" + (f" (median of {len(runs[n])} calls)" if len(runs[n]) > N_TIMED else "")
            for n, v in sorted(ms.items(), key=lambda kv: kv[1])
        )
        return best, f"fastest when measured on the first call ({others})", ms
