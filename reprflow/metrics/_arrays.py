"""Input checks and array conversion shared by the metric modules (private).

Every metric accepts a numpy array or a torch tensor, computes in float64 with torch
(on the CPU, or on a CUDA device when asked) and returns numpy float64. This module
is the single place where that conversion and the shape checks happen.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
import warnings
from typing import Any

import numpy as np
import torch

from reprflow.errors import InvalidParameterError

ArrayLike = np.ndarray | torch.Tensor
"""numpy array or torch tensor, any real floating dtype."""

CHUNK_BYTES = 64 * 2**20
"""Budget (bytes) for one float64 token chunk: the one-shot metrics cast and process a
prompt this many bytes of float64 at a time (:func:`token_chunks`), so their temporaries
do not grow with n_tokens."""


def resolve_device(x: ArrayLike, device: str | torch.device | None) -> torch.device:
    """The device a metric computes on: ``device`` if given, else where ``x`` lives.

    ``device`` goes through the package's one resolver (:func:`reprflow.devices.resolve_device`:
    ``auto``, ``cpu``, ``cuda``, ``cuda:N``); numpy input without ``device`` computes on the CPU.
    """
    if device is not None:
        from reprflow.devices import resolve_device as resolve

        return resolve(device, key="metrics device", error=InvalidParameterError)
    if isinstance(x, torch.Tensor):
        return x.device
    return torch.device("cpu")


def as_tensor(
    x: Any,
    *,
    name: str,
    ndim: int,
    device: str | torch.device | None = None,
    cast: bool = True,
) -> torch.Tensor:
    """Check ``x`` and return it as a torch tensor on the compute device.

    Parameters
    ----------
    x : ndarray or Tensor
        Real floating (or integer) array with ``ndim`` axes.
    name : str
        Argument name used in error messages.
    ndim : int
        Required number of axes.
    device : str or torch.device, optional
        Compute device; default: where ``x`` lives (CPU for numpy).
    cast : bool, default True
        Cast to float64. With ``cast=False`` the dtype is kept (the data is moved to the
        device in its storage dtype first, e.g. float16, and cast later, chunk by chunk).

    Returns
    -------
    Tensor
        float64 (or the input dtype with ``cast=False``), detached, on the compute device.
        May share memory with ``x``: callers never modify it in place.

    Raises
    ------
    ValueError
        Wrong number of axes, an empty axis, complex or non-numeric dtype, or a
        non-finite value.
    """
    target = resolve_device(x, device)
    if isinstance(x, torch.Tensor):
        t = x.detach()
    elif isinstance(x, np.ndarray):
        if x.dtype.kind not in "fiub":
            raise ValueError(f"{name}: expected a real numeric array, got dtype {x.dtype}")
        t = from_numpy(np.ascontiguousarray(x))
    else:
        raise ValueError(
            f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}; convert it with np.asarray first"
        )
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name}: expected a real numeric array, got dtype {t.dtype}")
    if t.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} axes, got shape {tuple(t.shape)}")
    if any(s == 0 for s in t.shape):
        raise ValueError(f"{name}: empty axis in shape {tuple(t.shape)}")
    t = t.to(target)
    if cast:
        t = t.to(torch.float64)
    if t.is_floating_point() and not all_finite(t):
        raise ValueError(f"{name}: contains NaN or inf; clean the input before computing metrics")
    return t


def from_numpy(x: np.ndarray) -> torch.Tensor:
    """``x`` as a tensor sharing its memory, read-only ``x`` (``np.load(mmap_mode="r")``) included.

    torch warns that a tensor over a non-writable array must not be written; the metrics
    never write their input (see :func:`as_tensor`), so the warning is silenced rather than
    the array copied (a (66, 4096, 2560) float32 prompt is 2.8 GB).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
        return torch.from_numpy(x)


def all_finite(t: torch.Tensor) -> bool:
    """True iff every element of ``t`` is finite.

    ``aminmax`` propagates NaN and shows +-inf, is one reduction in the input's own dtype and
    allocates nothing. (A float64 sum, used before, first copies a float32 tensor to float64
    on the CPU: 2x the input, 5.5 GB for one (66, 4096, 2560) float32 prompt, and 20x slower.)
    """
    low, high = torch.aminmax(t)
    return bool(torch.isfinite(low) & torch.isfinite(high))


def token_chunks(h: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    """Consecutive token chunks of one prompt, each cast to float64 on its own.

    Parameters
    ----------
    h : Tensor of shape (n_states, n_tokens, hidden), any real dtype

    Yields
    ------
    start : int
        Position of the chunk's first token.
    chunk : Tensor of shape (n_states, n_chunk, hidden), float64
        ``h[:, start:start + n_chunk]``, with n_chunk as large as fits in
        :data:`CHUNK_BYTES` (at least 1). A view when ``h`` is float64 (never modify it).

    Notes
    -----
    The one-shot metrics (cosines, Sm, St) loop over these, so their float64 temporaries
    take a few times one chunk instead of a few times the whole prompt (6x a float32
    (66, 4096, 2560) prompt is 16 GB).
    """
    k, n, d = h.shape
    step = max(1, CHUNK_BYTES // (8 * k * d))
    for start in range(0, n, step):
        yield start, h[:, start : start + step].to(torch.float64)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """float64 numpy copy of a result tensor (moved to the host)."""
    return t.detach().to("cpu", torch.float64).numpy()


def check_states(h: torch.Tensor, *, name: str, min_states: int = 1, min_tokens: int = 1) -> None:
    """Raise ValueError unless ``h`` of shape (n_states, n_tokens, hidden) is large enough."""
    k, n = h.shape[0], h.shape[1]
    if k < min_states:
        raise ValueError(f"{name}: needs n_states >= {min_states}, got shape {tuple(h.shape)}")
    if n < min_tokens:
        raise ValueError(f"{name}: needs n_tokens >= {min_tokens}, got shape {tuple(h.shape)}")


def state_selector(indices: Sequence[int]) -> slice | list[int]:
    """A slice when ``indices`` are consecutive (a view, no copy), else the index list."""
    idx = [int(i) for i in indices]
    if idx == list(range(idx[0], idx[0] + len(idx))):
        return slice(idx[0], idx[0] + len(idx))
    return idx
