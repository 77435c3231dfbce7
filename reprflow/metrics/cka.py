"""Linear centred kernel alignment (CKA) between layers (Fig. 4, Fig. 6).

Building blocks follow Kornblith et al. 2019 ("Similarity of Neural Network
Representations Revisited") and their google-research ``representation_similarity``
notebook: :func:`gram_linear`, :func:`center_gram`, :func:`hsic`, :func:`cka_from_grams`,
:func:`feature_space_linear_cka`. :func:`linear_cka` compares two matrices,
:func:`cka_matrix` all pairs of states of one prompt, and :func:`minibatch_cka`
(Nguyen et al. 2021) accumulates over minibatches of tokens.

All functions accept numpy arrays or torch tensors, compute in float64 with torch (on
the CPU, or on a CUDA device when ``device`` is given; float64 there too: H100-class
GPUs run FP64 matrix products on tensor cores) and return numpy float64 / float.

Notes
-----
**Biased CKA** (Kornblith et al. 2019, Eq. 4) on token matrices X (n x d1), Y (n x d2)
with centred features Xc, Yc::

    CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) = <Gx, Gy> / (||Gx|| ||Gy||)

with Gx = Xc Xc^T the centred Gram. **Debiased CKA** replaces each <.,.> by the
unbiased HSIC estimator of Song et al. 2012 (Eq. 5), computed as the Székely & Rizzo
(2014) U-centred inner product as in Kornblith's notebook. With linear kernels and
centred features it has the closed form (q_i = |xc_i|^2, r_i = |yc_i|^2)::

    n(n-3) HSIC_u = ||Yc^T Xc||_F^2 - n/(n-2) q.r + (sum q)(sum r) / ((n-1)(n-2))

(the U-statistic is invariant to centring the features). Constant factors cancel in
CKA. The debiased value may be negative and needs n_tokens >= 4.

**One pass for a whole K x K matrix.** Every entry needs only <Gk, Gl> and q_k, so
:func:`cka_matrix` forms each centred Gram once (in row blocks that bound memory),
flattens the K blocks to (K, rows * n) and takes one product B @ B.T per block
(using the Gram's symmetry, each block covers only the columns right of its rows).
The feature-space form ||Xk^T Xl||_F^2 costs K^2 n d^2 / 2 instead of
(K n^2 d + K^2 n^2) / 2; ``form="auto"`` takes the cheaper one (for K = 65, n = 2048,
d = 2560 the Gram form is ~80x cheaper). Biased and debiased matrices come from the
same pass (:func:`cka_matrices`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple

import numpy as np
import torch

from reprflow.metrics._arrays import ArrayLike, as_tensor, to_numpy

__all__ = [
    "CKAMatrices",
    "MinibatchCKAAccumulator",
    "center_gram",
    "cka_from_grams",
    "cka_matrices",
    "cka_matrix",
    "feature_space_linear_cka",
    "gram_linear",
    "hsic",
    "linear_cka",
    "minibatch_cka",
]

Form = Literal["auto", "example", "feature"]

DEFAULT_BLOCK_BYTES = 512 * 2**20
"""Working-memory budget (bytes) for the float64 Gram row blocks of :func:`cka_matrix`."""

_SYMMETRY_RTOL = 1e-10
"""center_gram accepts a Gram whose asymmetry max|G - G^T| is at most this times max|G|
(matrix products in floating point are not always bit-symmetric)."""


# --------------------------------------------------------------------------- Gram blocks


def gram_linear(X: ArrayLike, *, device: str | torch.device | None = None) -> np.ndarray:
    """Linear-kernel Gram matrix.

    Parameters
    ----------
    X : ndarray or Tensor of shape (n_tokens, hidden)
    device : str or torch.device, optional
        Compute device; default: where ``X`` lives.

    Returns
    -------
    ndarray of shape (n_tokens, n_tokens), float64
        ``X @ X.T``.
    """
    x = as_tensor(X, name="X", ndim=2, device=device)
    return to_numpy(x @ x.T)


def _center_gram(g: torch.Tensor, *, unbiased: bool) -> torch.Tensor:
    n = g.shape[0]
    if unbiased:
        # U-centring (Székely & Rizzo 2014, Sec. 4.1): chosen by Kornblith over Song et
        # al.'s formula for numerical stability; both give the same HSIC up to a constant.
        g = g.clone()
        g.fill_diagonal_(0.0)
        means = g.sum(dim=0) / (n - 2)
        means = means - means.sum() / (2 * (n - 1))
        g = g - means[:, None] - means[None, :]
        g.fill_diagonal_(0.0)
        return g
    means = g.mean(dim=0)
    means = means - means.mean() / 2
    return g - means[:, None] - means[None, :]  # == H G H with H = I - 11^T / n


def _check_gram(g: torch.Tensor, *, name: str, unbiased: bool) -> None:
    if g.shape[0] != g.shape[1]:
        raise ValueError(f"{name}: a Gram matrix must be square, got shape {tuple(g.shape)}")
    scale = float(g.abs().max())
    asym = float((g - g.T).abs().max())
    if asym > _SYMMETRY_RTOL * scale:
        raise ValueError(
            f"{name}: Gram matrix is not symmetric (max|G - G^T| = {asym:.3g}, max|G| = {scale:.3g}); pass X @ X.T"
        )
    if unbiased and g.shape[0] < 4:
        raise ValueError(f"{name}: the unbiased estimator needs n_tokens >= 4, got {g.shape[0]}")


def center_gram(gram: ArrayLike, *, unbiased: bool = False, device: str | torch.device | None = None) -> np.ndarray:
    """Centre a symmetric Gram matrix (biased: H G H; unbiased: U-centring).

    Parameters
    ----------
    gram : ndarray or Tensor of shape (n_tokens, n_tokens)
        Symmetric Gram matrix.
    unbiased : bool, default False
        U-centre (Székely & Rizzo 2014): zero diagonal, row/column means taken over
        off-diagonal entries with the n - 2 and 2(n - 1) corrections. Needs n >= 4.
    device : str or torch.device, optional
        Compute device; default: where ``gram`` lives.

    Returns
    -------
    ndarray of shape (n_tokens, n_tokens), float64
    """
    g = as_tensor(gram, name="gram", ndim=2, device=device)
    _check_gram(g, name="center_gram", unbiased=unbiased)
    return to_numpy(_center_gram(g, unbiased=unbiased))


def _grams(gram_x: ArrayLike, gram_y: ArrayLike, *, debiased: bool, device, name: str):
    gx = as_tensor(gram_x, name="gram_x", ndim=2, device=device)
    gy = as_tensor(gram_y, name="gram_y", ndim=2, device=gx.device)
    if gx.shape != gy.shape:
        raise ValueError(f"{name}: Gram shapes differ: {tuple(gx.shape)} vs {tuple(gy.shape)}")
    _check_gram(gx, name=name, unbiased=debiased)
    _check_gram(gy, name=name, unbiased=debiased)
    return _center_gram(gx, unbiased=debiased), _center_gram(gy, unbiased=debiased)


def hsic(
    gram_x: ArrayLike,
    gram_y: ArrayLike,
    *,
    debiased: bool = False,
    device: str | torch.device | None = None,
) -> float:
    """Hilbert-Schmidt independence criterion estimate from two Gram matrices.

    Parameters
    ----------
    gram_x, gram_y : ndarray or Tensor of shape (n_tokens, n_tokens)
    debiased : bool, default False
        False: biased estimator ``tr(Gx H Gy H) / (n - 1)^2`` (Gretton et al. 2005).
        True: unbiased estimator of Song et al. 2012, computed as the U-centred inner
        product ``<U(Gx), U(Gy)> / (n (n - 3))``; may be negative; needs n >= 4.
    device : str or torch.device, optional

    Returns
    -------
    float
    """
    cx, cy = _grams(gram_x, gram_y, debiased=debiased, device=device, name="hsic")
    n = cx.shape[0]
    scale = n * (n - 3) if debiased else (n - 1) ** 2
    return float((cx * cy).sum()) / scale


def cka_from_grams(
    gram_x: ArrayLike,
    gram_y: ArrayLike,
    *,
    debiased: bool = False,
    device: str | torch.device | None = None,
) -> float:
    """CKA from two Gram matrices (example space; any kernel).

    Parameters
    ----------
    gram_x, gram_y : ndarray or Tensor of shape (n_tokens, n_tokens)
    debiased : bool, default False
        Use the unbiased HSIC estimator (U-centring); may be negative; needs n >= 4.
    device : str or torch.device, optional

    Returns
    -------
    float
        ``<C(Gx), C(Gy)> / (||C(Gx)|| ||C(Gy)||)`` with C the (U-)centring.

    Raises
    ------
    ValueError
        A centred Gram is zero (constant representation), so CKA is undefined.
    """
    cx, cy = _grams(gram_x, gram_y, debiased=debiased, device=device, name="cka_from_grams")
    nx, ny = float((cx * cx).sum()), float((cy * cy).sum())
    if nx <= 0 or ny <= 0:
        raise ValueError(
            "cka_from_grams: a centred Gram is zero (all tokens share one representation); CKA is undefined"
        )
    return float((cx * cy).sum()) / float(np.sqrt(nx * ny))


# ------------------------------------------------------------- one pass over many states


def _n_tokens(xs: Sequence[torch.Tensor]) -> int:
    n = xs[0].shape[0]
    bad = [i for i, x in enumerate(xs) if x.shape[0] != n]
    if bad:
        raise ValueError(
            f"CKA: every matrix needs the same n_tokens; matrix 0 has {n}, matrix {bad[0]} has {xs[bad[0]].shape[0]}"
        )
    return n


def _choose_form(xs: Sequence[torch.Tensor], form: Form) -> Literal["example", "feature"]:
    """Cheaper of the two exact forms by multiply-add count (or the one asked for)."""
    if form in ("example", "feature"):
        return form
    if form != "auto":
        raise ValueError(f"CKA: form must be 'auto', 'example' or 'feature', got {form!r}")
    n, k = xs[0].shape[0], len(xs)
    dims = [x.shape[1] for x in xs]
    example = (n * n * sum(dims) + k * k * n * n) / 2  # half: Gram symmetry
    total = sum(dims)
    feature = n * (total * total + sum(d * d for d in dims)) / 2
    return "example" if example <= feature else "feature"


def _cached_centred(xs: Sequence[torch.Tensor], means: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """All centred states as one float64 (K, n, d) tensor, on a CUDA device with room for it.

    With several Gram row blocks, each block needs every centred state; keeping them
    (K n d 8 bytes, 2.7 GB for K = 65, n = 2048, d = 2560) avoids recomputing them per
    block and lets one batched product form the block. Only on CUDA and only if they
    take at most half the free device memory; on the CPU recomputing is cheap next to
    the Gram products, and memory is scarcer. None when not cached.
    """
    dev = xs[0].device
    n, d = xs[0].shape
    if dev.type != "cuda" or any(x.shape[1] != d for x in xs):
        return None
    free, _total = torch.cuda.mem_get_info(dev)
    if 8 * len(xs) * n * d > free // 2:
        return None
    out = torch.empty(len(xs), n, d, dtype=torch.float64, device=dev)
    for i, (x, mu) in enumerate(zip(xs, means)):
        torch.sub(x.to(torch.float64), mu, out=out[i])
    return out


def _centred_products(xs: Sequence[torch.Tensor], *, form: Form, block_bytes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """<Gk, Gl> for all pairs of centred Grams, and the centred squared token norms.

    Parameters
    ----------
    xs : sequence of K tensors of shape (n_tokens, hidden_k), any float dtype, one device
        Cast to float64 one matrix at a time.
    form : {"auto", "example", "feature"}
    block_bytes : int
        Budget for float64 temporaries (Gram row blocks / cross-covariance groups).

    Returns
    -------
    products : Tensor of shape (K, K), float64, symmetric
        ``||Xk_c^T Xl_c||_F^2``.
    sq_norms : Tensor of shape (K, n_tokens), float64
        ``|xc_{k,i}|^2``.
    """
    n = _n_tokens(xs)
    k_states = len(xs)
    dev = xs[0].device
    f64 = torch.float64
    means = [torch.sum(x, dim=0, dtype=f64) / n for x in xs]

    def centred(i: int, start: int = 0) -> torch.Tensor:
        # never in place: xs[i] may share the caller's memory
        return xs[i][start:].to(f64) - means[i]

    products = torch.zeros(k_states, k_states, dtype=f64, device=dev)
    sq_norms = torch.empty(k_states, n, dtype=f64, device=dev)
    if _choose_form(xs, form) == "example":
        # Gram symmetry: for row block [r0, r1) take only columns r0..n-1, held as two
        # contiguous parts: the diagonal square D = [r0, r1) x [r0, r1), which counts once,
        # and the part R right of it, which counts twice (it stands for its transpose below
        # the diagonal): <D, D> + 2 <R, R>. Together they fill at most block_bytes.
        rows = int(max(1, min(n, block_bytes // (8 * k_states * n))))
        cached = _cached_centred(xs, means) if rows < n else None
        storage = torch.empty(k_states * rows * n, dtype=f64, device=dev)
        for r0 in range(0, n, rows):
            r1 = min(n, r0 + rows)
            m, rest = r1 - r0, n - r1
            diag = storage[: k_states * m * m].view(k_states, m, m)
            right = storage[k_states * m * m : k_states * m * (m + rest)].view(k_states, m, rest)
            if cached is not None:  # all states at once
                torch.bmm(cached[:, r0:r1], cached[:, r0:r1].transpose(1, 2), out=diag)
                torch.bmm(cached[:, r0:r1], cached[:, r1:].transpose(1, 2), out=right)
            else:
                for i in range(k_states):
                    xc = centred(i, r0)  # rows r0.. of the centred state
                    torch.matmul(xc[:m], xc[:m].T, out=diag[i])
                    torch.matmul(xc[:m], xc[m:].T, out=right[i])
            sq_norms[:, r0:r1] = torch.diagonal(diag, dim1=1, dim2=2)
            flat_d, flat_r = diag.reshape(k_states, -1), right.reshape(k_states, -1)
            products += flat_d @ flat_d.T + 2 * (flat_r @ flat_r.T)
    else:
        xcs = [centred(i) for i in range(k_states)]
        for i, xc in enumerate(xcs):
            sq_norms[i] = (xc * xc).sum(dim=1)
        for i in range(k_states):
            j = i
            while j < k_states:  # group layers j.. so that Xi^T [Xj | Xj+1 | ...] fits
                group = [j]
                width = xcs[j].shape[1]
                while (
                    group[-1] + 1 < k_states
                    and 8 * xcs[i].shape[1] * (width + xcs[group[-1] + 1].shape[1]) <= block_bytes
                ):
                    group.append(group[-1] + 1)
                    width += xcs[group[-1]].shape[1]
                z = torch.cat([xcs[g] for g in group], dim=1)
                col_sq = ((xcs[i].T @ z) ** 2).sum(dim=0)
                for g, part in zip(group, torch.split(col_sq, [xcs[g].shape[1] for g in group])):
                    products[i, g] = products[g, i] = part.sum()
                j = group[-1] + 1
    return (products + products.T) / 2, sq_norms


def _debias(products: torch.Tensor, sq_norms: torch.Tensor) -> torch.Tensor:
    """n(n-3) HSIC_u for all pairs from :func:`_centred_products` output (module Notes)."""
    n = sq_norms.shape[1]
    if n < 4:
        raise ValueError(f"debiased CKA: the unbiased HSIC needs n_tokens >= 4, got {n}")
    totals = sq_norms.sum(dim=1)
    return products - n / (n - 2) * (sq_norms @ sq_norms.T) + torch.outer(totals, totals) / ((n - 1) * (n - 2))


def _normalise(products: torch.Tensor, *, what: str) -> torch.Tensor:
    """products[k, l] / sqrt(products[k, k] products[l, l]); raise on a degenerate state."""
    if not bool(torch.isfinite(products).all()):
        raise ValueError(f"{what}: HSIC overflows float64 (input values too large); rescale it")
    diag = products.diagonal()
    bad = torch.nonzero(diag <= 0).flatten().tolist()
    if bad:
        raise ValueError(
            f"{what}: state(s) {bad} have self-HSIC <= 0 (all tokens share one representation, "
            "or too few tokens for the debiased estimator); CKA is undefined for them"
        )
    out = products / torch.sqrt(torch.outer(diag, diag))
    out = (out + out.T) / 2  # exactly symmetric (matrix products round asymmetrically)
    out.fill_diagonal_(1.0)  # exactly 1 by definition (it is 1 up to rounding anyway)
    return out


def _pair(X: ArrayLike, Y: ArrayLike, device) -> list[torch.Tensor]:
    x = as_tensor(X, name="X", ndim=2, device=device)
    y = as_tensor(Y, name="Y", ndim=2, device=x.device)
    return [x, y]


def linear_cka(
    X: ArrayLike,
    Y: ArrayLike,
    *,
    debiased: bool = False,
    device: str | torch.device | None = None,
    form: Form = "auto",
) -> float:
    """Linear CKA between two token matrices (Kornblith et al. 2019).

    Parameters
    ----------
    X : ndarray or Tensor of shape (n_tokens, hidden_x)
    Y : ndarray or Tensor of shape (n_tokens, hidden_y)
    debiased : bool, default False
        Use the unbiased HSIC estimator (Song et al. 2012 / Nguyen et al. 2021); the
        value may be negative; needs n_tokens >= 4.
    device : str or torch.device, optional
        Compute device; default: where ``X`` lives (CPU for numpy).
    form : {"auto", "example", "feature"}, default "auto"
        Gram (n x n) or cross-covariance (d x d) computation; "auto" takes the cheaper.
        Both are exact.

    Returns
    -------
    float
        In [0, 1] when biased.

    Raises
    ------
    ValueError
        Different n_tokens, n_tokens < 4 when debiased, a constant representation,
        or non-finite input.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(100, 10)); Y = X + rng.normal(size=(100, 10))
    >>> 0 < linear_cka(X, Y) < 1
    True
    """
    xs = _pair(X, Y, device)
    products, sq_norms = _centred_products(xs, form=form, block_bytes=DEFAULT_BLOCK_BYTES)
    if debiased:
        products = _debias(products, sq_norms)
    return float(_normalise(products, what="linear_cka")[0, 1])


def feature_space_linear_cka(
    X: ArrayLike,
    Y: ArrayLike,
    *,
    debiased: bool = False,
    device: str | torch.device | None = None,
) -> float:
    """Linear CKA in feature space: ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)``.

    Same value as :func:`linear_cka` and :func:`cka_from_grams` on linear Grams, at
    O(n d1 d2) cost (cheaper than the Gram form when n_tokens > hidden). Parameters as
    in :func:`linear_cka`.
    """
    return linear_cka(X, Y, debiased=debiased, device=device, form="feature")


class CKAMatrices(NamedTuple):
    """Biased and debiased K x K linear CKA matrices from one pass (float64 ndarrays)."""

    biased: np.ndarray
    debiased: np.ndarray


def _states(H: ArrayLike, device) -> list[torch.Tensor]:
    # keep the storage dtype (e.g. float16) and cast one state at a time
    h = as_tensor(H, name="H", ndim=3, device=device, cast=False)
    return list(h.unbind(0))


def cka_matrices(
    H: ArrayLike,
    *,
    device: str | torch.device | None = None,
    form: Form = "auto",
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> CKAMatrices:
    """Biased and debiased linear CKA between every pair of states, from one pass.

    Parameters
    ----------
    H : ndarray or Tensor of shape (n_states, n_tokens, hidden)
        Token states of one prompt, n_tokens >= 4. Kept in its dtype (e.g. float16) and
        cast to float64 one state at a time.
    device : str or torch.device, optional
        Compute device ("cuda" for a GPU); default: where ``H`` lives (CPU for numpy).
    form : {"auto", "example", "feature"}, default "auto"
        See module Notes.
    block_bytes : int, default 512 MiB
        Budget for float64 Gram row blocks (n_states x rows x n_tokens x 8 bytes). Peak
        memory is about H (storage dtype) + one float64 state + this budget (measured:
        (66, 1024, 2560) float32 adds 0.65 GiB).

    Returns
    -------
    CKAMatrices
        ``biased`` and ``debiased``, each ndarray of shape (n_states, n_states), float64,
        symmetric with unit diagonal.
    """
    xs = _states(H, device)
    products, sq_norms = _centred_products(xs, form=form, block_bytes=block_bytes)
    return CKAMatrices(
        biased=to_numpy(_normalise(products, what="cka_matrix")),
        debiased=to_numpy(_normalise(_debias(products, sq_norms), what="cka_matrix (debiased)")),
    )


def cka_matrix(
    H: ArrayLike,
    *,
    debiased: bool = False,
    device: str | torch.device | None = None,
    form: Form = "auto",
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> np.ndarray:
    """Linear CKA between every pair of states of one prompt (Fig. 4, Fig. 6).

    Parameters
    ----------
    H : ndarray or Tensor of shape (n_states, n_tokens, hidden)
        Token states of one prompt.
    debiased : bool, default False
        Use the unbiased HSIC estimator; needs n_tokens >= 4; entries may be negative.
    device, form, block_bytes
        See :func:`cka_matrices`.

    Returns
    -------
    ndarray of shape (n_states, n_states), float64
        Symmetric, unit diagonal; ``out[k, l] == linear_cka(H[k], H[l], debiased=...)``.

    Notes
    -----
    One centred Gram per state and one matrix product per row block, not a loop over
    pairs (module Notes). Pass ``device="cuda"`` to run on a GPU.
    """
    xs = _states(H, device)
    products, sq_norms = _centred_products(xs, form=form, block_bytes=block_bytes)
    if debiased:
        return to_numpy(_normalise(_debias(products, sq_norms), what="cka_matrix (debiased)"))
    return to_numpy(_normalise(products, what="cka_matrix"))


# ------------------------------------------------------------------------- minibatches


class MinibatchCKAAccumulator:
    """Minibatch linear CKA between all pairs of states (Nguyen et al. 2021, Sec. 3.1).

    For minibatches b of tokens, accumulates the unbiased HSIC estimate (Song et al.
    2012) of every pair of states; the result is

        CKA[k, l] = mean_b HSIC_u(k, l) / sqrt(mean_b HSIC_u(k, k) mean_b HSIC_u(l, l)).

    Each minibatch estimate is unbiased, so the result is a consistent estimator of
    the population CKA whatever the batch size (>= 4), and needs only one minibatch in
    memory. It is not bit-equal to full-data debiased CKA except with a single batch.
    Draw minibatches at random (e.g. a seeded permutation of token positions) so that
    they are exchangeable.

    Attributes
    ----------
    hsic_sum_ : Tensor of shape (n_states, n_states), float64
        Sum over minibatches of HSIC_u.
    n_batches_ : int
    """

    def __init__(self, *, block_bytes: int = DEFAULT_BLOCK_BYTES) -> None:
        self.block_bytes = block_bytes
        self.hsic_sum_: torch.Tensor | None = None
        self.n_batches_ = 0

    def update(self, batch: ArrayLike, *, device: str | torch.device | None = None) -> "MinibatchCKAAccumulator":
        """Add a minibatch of shape (n_states, n_batch_tokens >= 4, hidden); returns self."""
        xs = _states(batch, device)
        products, sq_norms = _centred_products(xs, form="auto", block_bytes=self.block_bytes)
        m = sq_norms.shape[1]
        part = _debias(products, sq_norms) / (m * (m - 3))
        if self.hsic_sum_ is None:
            self.hsic_sum_ = part
        else:
            if part.shape != self.hsic_sum_.shape:
                raise ValueError(
                    f"MinibatchCKAAccumulator: batch has n_states={part.shape[0]}, "
                    f"earlier batches had {self.hsic_sum_.shape[0]}"
                )
            self.hsic_sum_ = self.hsic_sum_ + part.to(self.hsic_sum_.device)
        self.n_batches_ += 1
        return self

    def result(self) -> np.ndarray:
        """CKA matrix, shape (n_states, n_states), float64."""
        if self.hsic_sum_ is None:
            raise ValueError("MinibatchCKAAccumulator: no minibatch seen yet")
        return to_numpy(_normalise(self.hsic_sum_ / self.n_batches_, what="minibatch_cka"))


def minibatch_cka(
    batches: Iterable[ArrayLike],
    *,
    device: str | torch.device | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> np.ndarray:
    """Minibatch linear CKA (Nguyen et al. 2021) over an iterable of token minibatches.

    Parameters
    ----------
    batches : iterable of ndarray or Tensor of shape (n_states, n_batch_tokens, hidden)
        Minibatches of tokens (n_batch_tokens >= 4, may vary), e.g. read lazily from a
        store; same n_states and hidden in every batch.
    device : str or torch.device, optional
        Compute device.
    block_bytes : int
        See :func:`cka_matrices`.

    Returns
    -------
    ndarray of shape (n_states, n_states), float64
        See :class:`MinibatchCKAAccumulator`.

    Examples
    --------
    >>> rng = np.random.default_rng(seed)
    >>> order = rng.permutation(n_tokens)
    >>> minibatch_cka(H[:, order[s:s + 512]] for s in range(0, n_tokens, 512))
    """
    acc = MinibatchCKAAccumulator(block_bytes=block_bytes)
    for batch in batches:
        acc.update(batch, device=device)
    return acc.result()
