"""Layer-level flow statistics of one prompt: smoothness Sm (Eq. 3) and stability St (Eq. 4).

Both take the token states of one prompt, ``H`` of shape (n_states, n_tokens, hidden),
numpy or torch, compute in float64 and return a Python float. They cast and process the
prompt one token chunk at a time (:func:`reprflow.metrics._arrays.token_chunks`), so their
float64 temporaries stay a few times ``CHUNK_BYTES`` whatever n_tokens.

Notes
-----
The paper's indices are off by one: Eq. 3 sums L - 1 second differences but divides
by L - 2. Here both metrics are defined over the K = n_states states of the chosen
layer view (h^0 .. h^{K-1}):

- Sm averages the K - 2 second differences ``|h^{l+1} - (h^l + h^{l+2}) / 2|``,
  l = 0 .. K - 3, then averages over tokens and hidden dims. K < 3 raises ValueError.
- St is the POPULATION standard deviation (ddof = 0, divide by K) of h^l over the K
  states, averaged over tokens and hidden dims. K < 2 raises ValueError. Eq. 4 as printed
  runs over l = 1 .. L (it leaves out h^0, which Eq. 3 includes); here St uses the same K
  states as Sm, so h^0 counts where the view has it (residual; hf of the TBMs).

Both are sums over (token, dim) cells, so they stream exactly over token chunks
(:class:`SmoothnessStabilityAccumulator`).

Scale-free variants (not in the paper)
--------------------------------------
Sm and St carry the units of the hidden states: a family whose residual stream is 10^3
times larger gets 10^3 times larger values whatever its flow looks like. The scale-free
variants divide by the mean per-coordinate state size

    s = 1/(K n) sum_l sum_t ||h_t^l||_2 / sqrt(d)        (the mean RMS of a state vector)

so ``Sm_rel = Sm / s`` and ``St_rel = St / s`` are dimensionless and unchanged when every
state is multiplied by the same constant c > 0 (Sm, St and s all scale by c). The paper's
absolute definitions stay the primary numbers (Table 1); the variants add a comparison
across families.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from reprflow.metrics._arrays import ArrayLike, as_tensor, check_states, token_chunks

__all__ = [
    "SmoothnessStabilityAccumulator",
    "mean_state_rms",
    "smoothness",
    "smoothness_scale_free",
    "stability",
    "stability_scale_free",
]


def _second_difference_sum(h: torch.Tensor) -> torch.Tensor:
    """Sum over l, tokens, dims of |h^{l+1} - (h^l + h^{l+2}) / 2|; h float64 (K, n, d)."""
    return (h[1:-1] - 0.5 * (h[:-2] + h[2:])).abs().sum()


def _population_std_sum(h: torch.Tensor) -> torch.Tensor:
    """Sum over tokens, dims of the population std over states; h float64 (K, n, d)."""
    return torch.std(h, dim=0, correction=0).sum()


def _state_rms_sum(h: torch.Tensor) -> torch.Tensor:
    """Sum over states and tokens of ||h_t^l||_2 / sqrt(d); h float64 (K, n, d)."""
    return torch.linalg.vector_norm(h, dim=2).sum() / h.shape[2] ** 0.5


def _chunked_sum(h: torch.Tensor, cell_sum: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """Sum of ``cell_sum(chunk)`` over the float64 token chunks of ``h`` (n_states, n_tokens, hidden)."""
    return sum(float(cell_sum(chunk)) for _, chunk in token_chunks(h))


def mean_state_rms(H: ArrayLike, *, device: str | torch.device | None = None) -> float:
    """The scale ``s`` of the scale-free variants: mean over states and tokens of ``||h||/sqrt(d)``.

    ``H`` has shape (n_states, n_tokens, hidden); float64 compute, returns a Python float.
    """
    h = as_tensor(H, name="H", ndim=3, device=device, cast=False)
    check_states(h, name="mean_state_rms", min_states=1)
    k, n, _ = h.shape
    return _chunked_sum(h, _state_rms_sum) / (k * n)


def _scale_free(value: float, scale: float, what: str) -> float:
    if scale <= 0.0:
        raise ValueError(f"{what}: every state is zero (mean state RMS 0); the scale-free variant is undefined")
    return value / scale


def smoothness_scale_free(H: ArrayLike, *, device: str | torch.device | None = None) -> float:
    """Scale-free smoothness ``Sm / s`` (module Notes); H (n_states, n_tokens, hidden), n_states >= 3."""
    return _scale_free(smoothness(H, device=device), mean_state_rms(H, device=device), "smoothness_scale_free")


def stability_scale_free(H: ArrayLike, *, device: str | torch.device | None = None) -> float:
    """Scale-free stability ``St / s`` (module Notes); H (n_states, n_tokens, hidden), n_states >= 2."""
    return _scale_free(stability(H, device=device), mean_state_rms(H, device=device), "stability_scale_free")


def smoothness(H: ArrayLike, *, device: str | torch.device | None = None) -> float:
    """Smoothness Sm of the representation flow (paper Eq. 3; lower is smoother).

    Parameters
    ----------
    H : ndarray or Tensor of shape (n_states, n_tokens, hidden)
        Token states of one prompt, n_states >= 3.
    device : str or torch.device, optional
        Compute device; default: where ``H`` lives (CPU for numpy).

    Returns
    -------
    float
        ``mean_{t, j} [ 1/(K-2) sum_{l=0}^{K-3} |h_{t,j}^{l+1} - (h_{t,j}^l + h_{t,j}^{l+2})/2| ]``.

    Raises
    ------
    ValueError
        n_states < 3 (no second difference exists) or non-finite input.

    Notes
    -----
    Averages K - 2 second differences; see the module Notes for the paper's off-by-one.
    """
    h = as_tensor(H, name="H", ndim=3, device=device, cast=False)
    check_states(h, name="smoothness (Sm needs a second difference)", min_states=3)
    k, n, d = h.shape
    return _chunked_sum(h, _second_difference_sum) / ((k - 2) * n * d)


def stability(H: ArrayLike, *, device: str | torch.device | None = None) -> float:
    """Stability St of the representation flow (paper Eq. 4; lower is more stable).

    Parameters
    ----------
    H : ndarray or Tensor of shape (n_states, n_tokens, hidden)
        Token states of one prompt, n_states >= 2.
    device : str or torch.device, optional
        Compute device; default: where ``H`` lives.

    Returns
    -------
    float
        ``mean_{t, j} std_l(h_{t,j}^l)`` with the population std (ddof = 0) over K states.

    Raises
    ------
    ValueError
        n_states < 2 or non-finite input.
    """
    h = as_tensor(H, name="H", ndim=3, device=device, cast=False)
    check_states(h, name="stability (St needs >= 2 states)", min_states=2)
    _, n, d = h.shape
    return _chunked_sum(h, _population_std_sum) / (n * d)


class SmoothnessStabilityAccumulator:
    """Stream :func:`smoothness` and :func:`stability` over token chunks of one prompt.

    Attributes
    ----------
    sm_sum_, st_sum_ : float
        Running sums over (token, dim) cells (float64).
    n_states_ : int or None
        K, fixed by the first chunk.
    n_cells_ : int
        Tokens x hidden seen so far.
    rms_sum_ : float
        Running sum over (state, token) of ``||h||_2 / sqrt(d)`` (scale-free variants).
    n_vectors_ : int
        States x tokens seen so far.
    """

    def __init__(self) -> None:
        self.sm_sum_ = 0.0
        self.st_sum_ = 0.0
        self.n_states_: int | None = None
        self.n_cells_ = 0
        self.rms_sum_ = 0.0
        self.n_vectors_ = 0

    def update(self, chunk: ArrayLike, *, device: str | torch.device | None = None) -> "SmoothnessStabilityAccumulator":
        """Add a chunk of shape (n_states, n_chunk, hidden); returns self."""
        h = as_tensor(chunk, name="chunk", ndim=3, device=device)
        check_states(h, name="SmoothnessStabilityAccumulator", min_states=2)
        if self.n_states_ is None:
            self.n_states_ = h.shape[0]
        elif h.shape[0] != self.n_states_:
            raise ValueError(
                f"SmoothnessStabilityAccumulator: chunk has n_states={h.shape[0]}, earlier chunks had {self.n_states_}"
            )
        if h.shape[0] >= 3:
            self.sm_sum_ += float(_second_difference_sum(h))
        self.st_sum_ += float(_population_std_sum(h))
        self.rms_sum_ += float(_state_rms_sum(h))
        self.n_cells_ += h.shape[1] * h.shape[2]
        self.n_vectors_ += h.shape[0] * h.shape[1]
        return self

    def _check_seen(self) -> int:
        if self.n_states_ is None:
            raise ValueError("SmoothnessStabilityAccumulator: no chunk seen yet")
        return self.n_states_

    def smoothness(self) -> float:
        """Sm over all chunks seen (see :func:`smoothness`)."""
        k = self._check_seen()
        if k < 3:
            raise ValueError(f"smoothness: Sm needs n_states >= 3, got {k}")
        return self.sm_sum_ / ((k - 2) * self.n_cells_)

    def stability(self) -> float:
        """St over all chunks seen (see :func:`stability`)."""
        self._check_seen()
        return self.st_sum_ / self.n_cells_

    def mean_state_rms(self) -> float:
        """The scale ``s`` over all chunks seen (see :func:`mean_state_rms`)."""
        self._check_seen()
        return self.rms_sum_ / self.n_vectors_

    def smoothness_scale_free(self) -> float:
        """Sm / s over all chunks seen (see :func:`smoothness_scale_free`)."""
        return _scale_free(self.smoothness(), self.mean_state_rms(), "smoothness_scale_free")

    def stability_scale_free(self) -> float:
        """St / s over all chunks seen (see :func:`stability_scale_free`)."""
        return _scale_free(self.stability(), self.mean_state_rms(), "stability_scale_free")
