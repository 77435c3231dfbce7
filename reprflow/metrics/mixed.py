"""Every token metric of one prompt in one pass, in mixed precision (``metrics.precision: mixed``).

The float64 path (:func:`reprflow.pipeline.token_metrics.prompt_metrics` with
``precision="float64"``) is the reference; this module computes the same quantities
several times faster on a GPU, for the streamed path where they run next to the
forward passes on the same device:

* **One pass over the union of the views' states**, chunk by chunk of tokens: each chunk
  is cast to float32 once, and the cosines, inter-token sums, Sm, St, the state RMS and
  the centred states for CKA all come from that cast (the float64 path casts per view
  and per metric).
* **Elementwise work in float32, every reduction in float64**: a token's norm, a
  cosine, a second difference or a deviation is computed in float32 from the stored
  (bf16 / fp16 / fp32) values; every sum over tokens, dims or states accumulates in
  float64 (``sum(dtype=float64)``). Second differences and St deviations are formed
  from differences of states (one rounding relative to the small result, so a large
  common offset, e.g. |x| ~ 6e5 in a random Mamba, costs no accuracy).
* **CKA Grams on tensor cores**: states are centred with a float64 mean (split into two
  float32 terms), then each centred value ``x`` is split as ``hi = bf16(x)``,
  ``lo = bf16(x - hi)``, and the Gram is ``hi hi^T + hi lo^T + lo hi^T`` from bf16
  matrix products that accumulate and return float32 (the "bf16x3" scheme: ~16
  significant bits per input instead of TF32's 11, with no process-wide TF32 switch,
  which would also change the forward passes running in the other thread). The K x K
  Gram inner products, the norms and the ratios are float64, as in
  :mod:`reprflow.metrics.cka`. Where bf16 products with a float32 result are not
  available (the CPU), the Gram of the float32 centred states is taken instead (more
  accurate; the CPU has no tensor cores to gain from).
* **No host synchronisation inside the prompt**: results stay on the device until one
  copy to the host at the end; degenerate input (a zero-norm token, non-finite values)
  is detected from device-side flags at that point.

Tolerances against the float64 path (docs/metrics.md, tests/metrics/test_mixed.py):
absolute 1e-4 on CKA (biased and debiased) and on every cosine, relative 1e-5 on Sm,
St and the state RMS, on random, oversmoothed (inter-token cosine > 0.999, common offset
1e3 x the spread) and huge-magnitude (|x| ~ 6e5) states.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ContextManager

import numpy as np
import torch

from reprflow.metrics.cka import DEFAULT_BLOCK_BYTES, _debias

__all__ = ["GRAM_KERNELS", "gram_kernel", "prompt_metrics_mixed"]

F32, F64, BF16 = torch.float32, torch.float64, torch.bfloat16
GRAM_KERNELS = ("bf16x3", "float32")
"""How the mixed path forms Gram blocks: bf16 hi/lo products with a float32 result
(CUDA tensor cores), or float32 products of the centred states (elsewhere; on CUDA these
use TF32 if the process turned it on, which costs accuracy: the benchmark reports the kernel)."""

_KERNEL_CACHE: dict[str, str] = {}

Timer = Callable[[str], ContextManager[Any]]


def _no_timer(_name: str) -> ContextManager[Any]:
    return contextlib.nullcontext()


def gram_kernel(device: torch.device) -> str:
    """``"bf16x3"`` if ``device`` multiplies bf16 matrices into a float32 result, else ``"float32"``."""
    key = str(device)
    if key not in _KERNEL_CACHE:
        kernel = "float32"
        if device.type == "cuda":
            try:  # the layout of the real calls: row slices of a (K, n, d) batch, one transposed
                a = torch.full((2, 6, 8), 1.0 + 2.0**-7, dtype=BF16, device=device)
                out = _bmm_f32(a[:, 1:3], a[:, 2:])
                exact = 8 * (1.0 + 2.0**-7) ** 2  # bf16 products are exact; a bf16 result would round this
                if out.dtype == F32 and out.shape == (2, 2, 4) and abs(float(out[0, 0, 0]) - exact) < 1e-6:
                    kernel = "bf16x3"
            except (RuntimeError, TypeError, NotImplementedError):
                pass
        _KERNEL_CACHE[key] = kernel
    return _KERNEL_CACHE[key]


def _bmm_f32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b^T for bf16 batches, float32 accumulation and result.

    On CUDA one bf16 tensor-core product; elsewhere the same arithmetic from float32
    copies (a product of two bf16 values is exact in float32), e.g. to test it on a CPU.
    """
    if a.device.type == "cuda":
        return torch.bmm(a, b.mT, out_dtype=F32)
    return torch.bmm(a.to(F32), b.to(F32).mT)


def _gram_products(
    hi: torch.Tensor, lo: torch.Tensor | None, *, block_bytes: int, timer: Timer
) -> tuple[torch.Tensor, torch.Tensor]:
    """<Gk, Gl> (K, K) and centred squared norms (K, n), float64, from split centred states.

    ``hi`` (K, n, d): bf16 high parts with ``lo`` their bf16 low parts (kernel "bf16x3"),
    or float32 centred states with ``lo`` None (kernel "float32"). Row blocks use the
    Gram's symmetry exactly as :func:`reprflow.metrics.cka._centred_products`.
    """
    k, n, _ = hi.shape
    dev = hi.device
    products = torch.zeros(k, k, dtype=F64, device=dev)
    sq_norms = torch.empty(k, n, dtype=F64, device=dev)
    rows = int(max(1, min(n, block_bytes // (8 * k * n))))
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        m = r1 - r0
        with timer("cka_grams"):
            if lo is None:
                block = torch.bmm(hi[:, r0:r1], hi[:, r0:].mT)
            else:
                block = _bmm_f32(hi[:, r0:r1], hi[:, r0:])
                block += _bmm_f32(hi[:, r0:r1], lo[:, r0:])
                block += _bmm_f32(lo[:, r0:r1], hi[:, r0:])
        with timer("cka_inner_products"):
            sq_norms[:, r0:r1] = torch.diagonal(block[:, :, :m], dim1=1, dim2=2)
            flat = block.reshape(k, -1).to(F64)
            square = block[:, :, :m].reshape(k, -1).to(F64)
            products += 2 * (flat @ flat.T) - square @ square.T
    return (products + products.T) / 2, sq_norms


def prompt_metrics_mixed(
    h: torch.Tensor,
    views: Mapping[str, Sequence[int]],
    *,
    debiased_cka: bool,
    n_bins: int,
    chunk: int,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    kernel: str | None = None,
    timer: Timer = _no_timer,
) -> dict[str, dict[str, Any]]:
    """Token metrics of one prompt for several views of its states, mixed precision.

    Parameters
    ----------
    h : Tensor of shape (n_union, n_tokens, hidden)
        The union of the views' states (any float dtype), on the compute device.
    views : mapping of str to sequence of int
        View name -> positions of its states in ``h`` (>= 3 each).
    debiased_cka : bool
        Also the debiased CKA matrix (needs n_tokens >= 4).
    n_bins : int
        Relative-position bins of the layerwise cosine.
    chunk : int
        Token positions cast to float32 at a time.
    block_bytes : int
        Budget of the float64 Gram row blocks (as in :func:`reprflow.metrics.cka.cka_matrices`).
    kernel : {"bf16x3", "float32"}, optional
        Gram kernel; default :func:`gram_kernel` of the device.
    timer : callable, optional
        ``timer(name)`` returns a context manager around each part ("cast", "cosines",
        "inter_token", "sm_st", "centre_split", "cka_grams", "cka_inner_products",
        "to_host"); the benchmark's breakdown passes a synchronising one.

    Returns
    -------
    dict of str to dict
        Per view: ``inter_token`` [K], ``layerwise_mean`` [K-1], ``layerwise_binned``
        [K-1, n_bins] (NaN for an empty bin), ``cka`` and ``cka_debiased`` [K, K] (None if
        not asked), ``sm``, ``st``, ``sm_rel``, ``st_rel``, ``state_rms`` (floats); numpy
        float64.

    Raises
    ------
    ValueError
        A zero-norm token, a non-finite value, or a state whose CKA is undefined.
    """
    ku, n, d = h.shape
    dev = h.device
    kernel = kernel or gram_kernel(dev)
    if kernel not in GRAM_KERNELS:
        raise ValueError(f"mixed precision: Gram kernel must be one of {GRAM_KERNELS}, got {kernel!r}")
    views = {v: [int(i) for i in idx] for v, idx in views.items()}
    short = {v: idx for v, idx in views.items() if len(idx) < 3 or not all(0 <= i < ku for i in idx)}
    if short:
        raise ValueError(f"mixed precision: view(s) {short} need >= 3 states, each in [0, {ku})")
    # adjacent pairs / triples of the views: every consecutive one of the union (slices, no
    # copy), then the few others (hf and residual differ in one state), gathered
    cons_pairs = [(i, i + 1) for i in range(ku - 1)]
    cons_triples = [(i, i + 1, i + 2) for i in range(ku - 2)]
    view_pairs = {(idx[i], idx[i + 1]) for idx in views.values() for i in range(len(idx) - 1)}
    view_triples = {tuple(idx[i : i + 3]) for idx in views.values() for i in range(len(idx) - 2)}
    extra_pairs = sorted(view_pairs - set(cons_pairs))
    extra_triples = sorted(view_triples - set(cons_triples))
    pairs, triples = cons_pairs + extra_pairs, cons_triples + extra_triples
    ref = ku // 2  # St: deviations from one state (std is shift-invariant; removes a common offset)

    with timer("centre_split"):
        # token mean in two float32 passes (no float64 copy of the prompt): a first mean, then
        # the mean of the residuals about it, whose float32 error is relative to the small residuals
        mean1 = h.sum(dim=1, dtype=F32) / n  # [Ku, d]
        resid = torch.zeros(ku, d, dtype=F64, device=dev)
        for start in range(0, n, chunk):
            resid += torch.sub(h[:, start : start + chunk], mean1[:, None]).sum(dim=1).to(F64)  # promotes to float32
        mean = mean1.to(F64) + resid / n
        mean_hi = mean.to(F32)
        mean_lo = (mean - mean_hi.to(F64)).to(F32)
        if kernel == "bf16x3":
            hi = torch.empty(ku, n, d, dtype=BF16, device=dev)
            lo = torch.empty(ku, n, d, dtype=BF16, device=dev)
        else:
            hi, lo = torch.empty(ku, n, d, dtype=F32, device=dev), None

    sum_unit = torch.zeros(ku, d, dtype=F64, device=dev)
    pair_sum = torch.zeros(len(pairs), dtype=F64, device=dev)
    bin_sums = torch.zeros(len(pairs), n_bins, dtype=F64, device=dev)
    triple_sum = torch.zeros(len(triples), dtype=F64, device=dev)
    st_sum = {v: torch.zeros((), dtype=F64, device=dev) for v in views}
    rms_sum = torch.zeros(ku, dtype=F64, device=dev)
    zero_norm = torch.zeros((), dtype=torch.bool, device=dev)
    not_finite = torch.zeros((), dtype=torch.bool, device=dev)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        with timer("cast"):
            x = h[:, start:stop].to(F32)  # [Ku, c, d], the one cast of this chunk
        with timer("cosines"):
            norms = torch.linalg.vector_norm(x, dim=-1)  # [Ku, c]
            zero_norm |= (norms == 0).any()
            not_finite |= ~torch.isfinite(norms).all()  # a NaN or inf anywhere in a token reaches its norm
            rms_sum += norms.sum(dim=1, dtype=F64)
            u = x / norms.unsqueeze(-1)
            cos = torch.linalg.vecdot(u[:-1], u[1:])  # [Ku-1, c]
            if extra_pairs:
                ea, eb = zip(*extra_pairs)
                cos = torch.cat([cos, torch.linalg.vecdot(u[list(ea)], u[list(eb)])])
            pair_sum += cos.sum(dim=1, dtype=F64)
            bins = torch.div(torch.arange(start, stop, device=dev) * n_bins, n, rounding_mode="floor")
            bin_sums.index_add_(1, bins, cos.to(F64))
            del cos
        with timer("inter_token"):
            sum_unit += u.sum(dim=1).to(F64)  # float32 within the chunk, float64 across chunks
            del u
        with timer("sm_st"):
            # |h_b - (h_a + h_c)/2| = |(h_c - h_b) - (h_b - h_a)| / 2, from first differences
            first = x[1:] - x[:-1]
            second = first[1:] - first[:-1]  # [Ku-2, c, d]
            del first
            # |.| summed over hidden dims in float32 (no float64 copy), over tokens in float64
            l1 = [torch.linalg.vector_norm(second, ord=1, dim=-1).sum(dim=1, dtype=F64)]
            del second
            for a, b_, c in extra_triples:
                l1.append(torch.linalg.vector_norm((x[c] - x[b_]) - (x[b_] - x[a]), ord=1, dim=-1).sum(dtype=F64)[None])
            triple_sum += torch.cat(l1) / 2
            # St per view: the population std over its states of y = h - h_ref (std is shift-invariant;
            # one state as the shift removes a common offset). One Welford pass over the union's
            # states (float32), then each view's sums by removing the states it lacks (float64, [c, d])
            y = x - x[ref]
            var_u, mean_u = torch.var_mean(y, dim=0, correction=0)
            s1 = ku * mean_u.to(F64)
            s2 = ku * (var_u.to(F64) + mean_u.to(F64).square())
            del var_u, mean_u
            for v, idx in views.items():
                lacks = [i for i in range(ku) if i not in set(idx)]
                s1v, s2v = s1, s2
                if lacks:
                    ym = y[lacks].to(F64)
                    s1v, s2v = s1 - ym.sum(dim=0), s2 - ym.square().sum(dim=0)
                k = len(idx)
                st_sum[v] += (s2v / k - (s1v / k).square()).clamp(min=0).sqrt().sum()
            del y, s1, s2
        with timer("centre_split"):
            xc = torch.sub(x, mean_hi[:, None])  # x may be a view of the caller's float32 states
            del x
            xc.sub_(mean_lo[:, None])
            hi[:, start:stop] = xc
            if lo is not None:
                lo[:, start:stop] = xc.sub_(hi[:, start:stop])  # the part bf16 did not keep
            del xc

    products, sq_norms = _gram_products(hi, lo, block_bytes=block_bytes, timer=timer)
    del hi, lo
    with timer("cka_inner_products"):
        biased = _normalise_or_nan(products)
        debiased = _normalise_or_nan(_debias(products, sq_norms)) if debiased_cka else None

    with timer("to_host"):
        # one copy to the host for the whole prompt
        packed = (
            torch.cat(
                [
                    sum_unit.flatten(),
                    pair_sum,
                    bin_sums.flatten(),
                    triple_sum,
                    torch.stack(list(st_sum.values())),
                    rms_sum,
                    biased.flatten(),
                    (debiased if debiased is not None else biased[:0]).flatten(),
                    zero_norm.to(F64).reshape(1),
                    (~not_finite).to(F64).reshape(1),
                ]
            )
            .cpu()
            .numpy()
        )
    return _unpack(packed, views, pairs, triples, ku, d, n, n_bins, debiased_cka, h)


def _normalise_or_nan(products: torch.Tensor) -> torch.Tensor:
    """Like :func:`reprflow.metrics.cka._normalise` without a host sync: a bad state gives NaN (checked later)."""
    diag = products.diagonal().clamp(min=0)
    out = products / torch.sqrt(torch.outer(diag, diag))
    out = (out + out.T) / 2
    out.fill_diagonal_(1.0)
    return torch.where(
        (products.diagonal() > 0)[:, None] & (products.diagonal() > 0)[None, :], out, torch.full_like(out, float("nan"))
    )


def _unpack(packed: np.ndarray, views, pairs, triples, ku, d, n, n_bins, debiased_cka, h) -> dict[str, dict[str, Any]]:
    sizes = [
        ku * d,
        len(pairs),
        len(pairs) * n_bins,
        len(triples),
        len(views),
        ku,
        ku * ku,
        ku * ku if debiased_cka else 0,
        1,
        1,
    ]
    parts = np.split(packed, np.cumsum(sizes)[:-1])
    sum_unit, pair_sum, bin_sums, triple_sum, st_sums, rms_sum, biased, debiased, zero_norm, finite = parts
    if not finite[0]:
        raise ValueError(
            "token states contain NaN or inf (or a token norm overflows float32); clean the input "
            "before computing metrics"
        )
    if zero_norm[0]:
        norms = torch.linalg.vector_norm(h.to(F32), dim=-1)
        state, token = (int(i) for i in torch.nonzero(norms == 0)[0])
        raise ValueError(
            f"token {token} of state {state} has zero norm, so its cosine is undefined; if the "
            "array is zero padded, slice each prompt to its length"
        )
    sum_unit = sum_unit.reshape(ku, d)
    inter = ((sum_unit * sum_unit).sum(axis=1) - n) / (n * (n - 1))
    counts = np.bincount(np.arange(n) * n_bins // n, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        binned_all = bin_sums.reshape(len(pairs), n_bins) / counts
    biased = biased.reshape(ku, ku)
    debiased = debiased.reshape(ku, ku) if debiased_cka else None
    pair_at = {p: i for i, p in enumerate(pairs)}
    triple_at = {t: i for i, t in enumerate(triples)}
    out = {}
    for j, (v, idx) in enumerate(views.items()):
        k = len(idx)
        cells = n * d
        p = [pair_at[(idx[i], idx[i + 1])] for i in range(k - 1)]
        t = [triple_at[tuple(idx[i : i + 3])] for i in range(k - 2)]
        sm = float(triple_sum[t].sum()) / ((k - 2) * cells)
        st = float(st_sums[j]) / cells
        rms = float(rms_sum[idx].sum()) / d**0.5 / (k * n)
        sub = np.ix_(idx, idx)
        cka = biased[sub]
        cka_d = None if debiased is None else debiased[sub]
        for name, m in (("CKA", cka), ("debiased CKA", cka_d)):
            if m is not None and not np.isfinite(m).all():
                bad = sorted({int(i) for i in np.nonzero(~np.isfinite(m))[0]})
                raise ValueError(
                    f"{name}: state(s) {bad} have self-HSIC <= 0 (all tokens share one representation, "
                    "or too few tokens for the debiased estimator); CKA is undefined for them"
                )
        if rms <= 0:
            raise ValueError("every state is zero (mean state RMS 0); the scale-free variants are undefined")
        out[v] = {
            "inter_token": inter[idx],
            "layerwise_mean": pair_sum[p] / n,
            "layerwise_binned": binned_all[p],
            "cka": cka,
            "cka_debiased": cka_d,
            "sm": sm,
            "st": st,
            "sm_rel": sm / rms,
            "st_rel": st / rms,
            "state_rms": rms,
        }
    return out
