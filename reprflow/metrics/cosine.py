"""Token-level cosine metrics: layerwise cosine (Fig. 1, 5) and inter-token cosine (Eq. 2).

All functions take the token states of ONE prompt, ``H`` of shape
(n_states, n_tokens, hidden), as a numpy array or torch tensor, compute in float64
(torch, on the CPU or the given device) and return numpy float64. They cast and process
the prompt one token chunk at a time (:func:`reprflow.metrics._arrays.token_chunks`), so
their float64 temporaries stay a few times ``CHUNK_BYTES`` whatever n_tokens.

The accumulators at the end compute the same quantities from chunks of tokens, so a
consumer never needs more than one chunk of a prompt in float64 at a time.

Notes
-----
A token state with zero norm has no direction; every function here raises
``ValueError`` naming the state and token index instead of returning NaN. Activation
stores are zero padded past each prompt's length, so this also catches a caller that
forgot to slice a prompt to its length.
"""

from __future__ import annotations

import numpy as np
import torch

from reprflow.metrics._arrays import ArrayLike, as_tensor, check_states, to_numpy, token_chunks

__all__ = [
    "InterTokenCosineAccumulator",
    "LayerwiseCosineAccumulator",
    "binned_layerwise_cosine",
    "inter_token_cosine",
    "layerwise_cosine",
]


def _unit_vectors(h: torch.Tensor, *, name: str, token_offset: int = 0) -> torch.Tensor:
    """Rows of ``h`` (n_states, n_tokens, hidden) scaled to unit norm; float64.

    Raises ValueError naming the first zero-norm token (state index, token index).
    """
    norms = torch.linalg.vector_norm(h, dim=-1, keepdim=True)  # [K, n, 1]
    zero = norms[..., 0] == 0
    if bool(zero.any()):
        state, token = (int(i) for i in torch.nonzero(zero)[0])
        raise ValueError(
            f"{name}: token {token + token_offset} of state {state} has zero norm, so its "
            "cosine is undefined; if the array is zero padded, slice each prompt to its length"
        )
    if not bool(torch.isfinite(norms).all()):
        raise ValueError(f"{name}: a token norm overflows float64; rescale the input")
    return h / norms


def _pairwise_layer_cosine(u: torch.Tensor) -> torch.Tensor:
    """cos(h_t^l, h_t^{l+1}) from unit vectors ``u`` (n_states, n_tokens, hidden) -> (K-1, n)."""
    return (u[:-1] * u[1:]).sum(dim=-1)


def layerwise_cosine(H: ArrayLike, *, device: str | torch.device | None = None) -> np.ndarray:
    """Cosine between consecutive states of each token (the map of Fig. 1 and Fig. 5).

    Parameters
    ----------
    H : ndarray or Tensor of shape (n_states, n_tokens, hidden)
        Token states of one prompt, K = n_states >= 2.
    device : str or torch.device, optional
        Compute device; default: where ``H`` lives (CPU for numpy).

    Returns
    -------
    ndarray of shape (n_states - 1, n_tokens), float64
        ``out[l, t] = cos(h_t^l, h_t^{l+1})``.

    Raises
    ------
    ValueError
        Fewer than 2 states, a zero-norm token, or non-finite input.
    """
    h = as_tensor(H, name="H", ndim=3, device=device, cast=False)
    check_states(h, name="layerwise_cosine", min_states=2)
    k, n, _ = h.shape
    out = torch.empty(k - 1, n, dtype=torch.float64, device=h.device)
    for start, chunk in token_chunks(h):
        u = _unit_vectors(chunk, name="layerwise_cosine", token_offset=start)
        out[:, start : start + chunk.shape[1]] = _pairwise_layer_cosine(u)
    return to_numpy(out)


def _bin_index(positions: torch.Tensor, n_tokens: int, n_bins: int) -> torch.Tensor:
    """Relative-position bin of each token position: floor(t * n_bins / n_tokens)."""
    return torch.div(positions * n_bins, n_tokens, rounding_mode="floor")


def _binned_sums(values: torch.Tensor, *, start: int, n_tokens: int, n_bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-bin sums of ``values`` (rows, n_chunk) at positions start.. and per-bin counts."""
    positions = torch.arange(start, start + values.shape[1], device=values.device)
    idx = _bin_index(positions, n_tokens, n_bins)
    sums = torch.zeros(values.shape[0], n_bins, dtype=torch.float64, device=values.device)
    sums.index_add_(1, idx, values)
    counts = torch.bincount(idx, minlength=n_bins).to(torch.float64)
    return sums, counts


def binned_layerwise_cosine(H: ArrayLike, *, n_bins: int = 64, device: str | torch.device | None = None) -> np.ndarray:
    """Layerwise cosine averaged within relative-position bins (Fig. 1 heatmap of one prompt).

    Token t of a prompt of n tokens falls in bin ``floor(t * n_bins / n)``, so every
    prompt spreads over the same ``n_bins`` columns whatever its length.

    Parameters
    ----------
    H : ndarray or Tensor of shape (n_states, n_tokens, hidden)
        Token states of one prompt, n_states >= 2.
    n_bins : int, default 64
        Number of relative-position bins.
    device : str or torch.device, optional
        Compute device; default: where ``H`` lives.

    Returns
    -------
    ndarray of shape (n_states - 1, n_bins), float64
        Mean of ``layerwise_cosine(H)`` over the tokens of each bin; NaN for a bin that
        holds no token (only possible when n_tokens < n_bins).
    """
    if n_bins < 1:
        raise ValueError(f"binned_layerwise_cosine: n_bins must be >= 1, got {n_bins}")
    h = as_tensor(H, name="H", ndim=3, device=device, cast=False)
    check_states(h, name="binned_layerwise_cosine", min_states=2)
    sums = counts = 0
    for start, chunk in token_chunks(h):
        cos = _pairwise_layer_cosine(_unit_vectors(chunk, name="binned_layerwise_cosine", token_offset=start))
        part, n_part = _binned_sums(cos, start=start, n_tokens=h.shape[1], n_bins=n_bins)
        sums, counts = sums + part, counts + n_part
    return to_numpy(sums / counts)  # 0/0 -> NaN for an empty bin, as documented


def inter_token_cosine(H: ArrayLike, *, device: str | torch.device | None = None) -> np.ndarray:
    """Mean cosine similarity between distinct tokens, per state (paper Eq. 2, Fig. 2).

    Parameters
    ----------
    H : ndarray or Tensor of shape (n_states, n_tokens, hidden)
        Token states of one prompt, n_tokens >= 2.
    device : str or torch.device, optional
        Compute device; default: where ``H`` lives.

    Returns
    -------
    ndarray of shape (n_states,), float64
        ``out[l] = 2 / (n (n - 1)) * sum_{i<j} cos(h_i^l, h_j^l)``.

    Notes
    -----
    Computed exactly in O(n d) rather than O(n^2 d): with unit vectors
    ``u_i = h_i / |h_i|``, ``|sum_i u_i|^2 = n + 2 sum_{i<j} u_i . u_j``, so the value is
    ``(|sum_i u_i|^2 - n) / (n (n - 1))``.
    """
    h = as_tensor(H, name="H", ndim=3, device=device, cast=False)
    check_states(h, name="inter_token_cosine", min_tokens=2)
    sum_unit = sum(
        _unit_vectors(chunk, name="inter_token_cosine", token_offset=start).sum(dim=1)
        for start, chunk in token_chunks(h)
    )
    return to_numpy(_inter_token_from_sum(sum_unit, h.shape[1]))


def _inter_token_from_sum(sum_unit: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """Eq. 2 from ``sum_unit`` = sum_i u_i of shape (n_states, hidden)."""
    n = n_tokens
    return ((sum_unit * sum_unit).sum(dim=-1) - n) / (n * (n - 1))


class InterTokenCosineAccumulator:
    """Stream :func:`inter_token_cosine` over chunks of the tokens of one prompt.

    Keeps sum_i u_i per state (float64, n_states x hidden) and the token count, which is
    all Eq. 2 needs (see :func:`inter_token_cosine` Notes).

    Attributes
    ----------
    sum_unit_ : Tensor of shape (n_states, hidden), float64
        Running sum of unit token vectors; set by the first :meth:`update`.
    n_tokens_ : int
        Tokens seen so far.

    Examples
    --------
    >>> acc = InterTokenCosineAccumulator()
    >>> for start in range(0, n, 512):
    ...     acc.update(H[:, start:start + 512])
    >>> acc.result()  # == inter_token_cosine(H)
    """

    def __init__(self) -> None:
        self.sum_unit_: torch.Tensor | None = None
        self.n_tokens_ = 0

    def update(self, chunk: ArrayLike, *, device: str | torch.device | None = None) -> "InterTokenCosineAccumulator":
        """Add a chunk of shape (n_states, n_chunk, hidden); returns self."""
        h = as_tensor(chunk, name="chunk", ndim=3, device=device)
        u = _unit_vectors(h, name="InterTokenCosineAccumulator", token_offset=self.n_tokens_)
        part = u.sum(dim=1)
        if self.sum_unit_ is None:
            self.sum_unit_ = part
        else:
            if part.shape != self.sum_unit_.shape:
                raise ValueError(
                    f"InterTokenCosineAccumulator: chunk has (n_states, hidden) = "
                    f"{tuple(part.shape)}, earlier chunks had {tuple(self.sum_unit_.shape)}"
                )
            self.sum_unit_ = self.sum_unit_ + part.to(self.sum_unit_.device)
        self.n_tokens_ += h.shape[1]
        return self

    def result(self) -> np.ndarray:
        """Inter-token cosine per state, shape (n_states,), float64."""
        if self.sum_unit_ is None or self.n_tokens_ < 2:
            raise ValueError(f"InterTokenCosineAccumulator: needs >= 2 tokens, got {self.n_tokens_}")
        return to_numpy(_inter_token_from_sum(self.sum_unit_, self.n_tokens_))


class LayerwiseCosineAccumulator:
    """Stream :func:`layerwise_cosine` over chunks of one prompt of known length.

    Keeps, per adjacent pair of states, the sum of cosines over all tokens and over the
    tokens of each relative-position bin (as in :func:`binned_layerwise_cosine`).

    Parameters
    ----------
    n_tokens : int
        Length of the prompt (needed up front to place tokens in relative bins).
    n_bins : int, default 64
        Number of relative-position bins.

    Attributes
    ----------
    sum_ : Tensor of shape (n_states - 1,), float64
        Sum of cosines over the tokens seen.
    bin_sums_ : Tensor of shape (n_states - 1, n_bins), float64
    bin_counts_ : Tensor of shape (n_bins,), float64
    n_seen_ : int
        Tokens seen so far; chunks must arrive in order, starting at position 0.
    """

    def __init__(self, n_tokens: int, *, n_bins: int = 64) -> None:
        if n_tokens < 1 or n_bins < 1:
            raise ValueError(
                f"LayerwiseCosineAccumulator: n_tokens and n_bins must be >= 1, got {n_tokens} and {n_bins}"
            )
        self.n_tokens = n_tokens
        self.n_bins = n_bins
        self.sum_: torch.Tensor | None = None
        self.bin_sums_: torch.Tensor | None = None
        self.bin_counts_: torch.Tensor | None = None
        self.n_seen_ = 0

    def update(self, chunk: ArrayLike, *, device: str | torch.device | None = None) -> "LayerwiseCosineAccumulator":
        """Add the next chunk, shape (n_states, n_chunk, hidden), in token order; returns self."""
        h = as_tensor(chunk, name="chunk", ndim=3, device=device)
        check_states(h, name="LayerwiseCosineAccumulator", min_states=2)
        if self.n_seen_ + h.shape[1] > self.n_tokens:
            raise ValueError(
                f"LayerwiseCosineAccumulator: got {self.n_seen_ + h.shape[1]} tokens for a "
                f"prompt of n_tokens={self.n_tokens}"
            )
        u = _unit_vectors(h, name="LayerwiseCosineAccumulator", token_offset=self.n_seen_)
        cos = _pairwise_layer_cosine(u)
        sums, counts = _binned_sums(cos, start=self.n_seen_, n_tokens=self.n_tokens, n_bins=self.n_bins)
        if self.sum_ is None:
            self.sum_, self.bin_sums_, self.bin_counts_ = cos.sum(dim=1), sums, counts
        else:
            if cos.shape[0] != self.sum_.shape[0]:
                raise ValueError(
                    f"LayerwiseCosineAccumulator: chunk has n_states={cos.shape[0] + 1}, "
                    f"earlier chunks had {self.sum_.shape[0] + 1}"
                )
            dev = self.sum_.device
            self.sum_ = self.sum_ + cos.sum(dim=1).to(dev)
            self.bin_sums_ = self.bin_sums_ + sums.to(dev)
            self.bin_counts_ = self.bin_counts_ + counts.to(dev)
        self.n_seen_ += h.shape[1]
        return self

    def _check_done(self) -> None:
        if self.n_seen_ != self.n_tokens:
            raise ValueError(
                f"LayerwiseCosineAccumulator: saw {self.n_seen_} of n_tokens={self.n_tokens} "
                "tokens; feed the whole prompt before asking for the result"
            )

    def mean(self) -> np.ndarray:
        """Mean over tokens of the layerwise cosine, shape (n_states - 1,), float64."""
        self._check_done()
        return to_numpy(self.sum_ / self.n_tokens)

    def binned(self) -> np.ndarray:
        """Per-bin mean, shape (n_states - 1, n_bins), float64; NaN for an empty bin."""
        self._check_done()
        return to_numpy(self.bin_sums_ / self.bin_counts_)
