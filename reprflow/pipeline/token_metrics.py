"""Stage token_metrics: one activation store -> cosine, inter-token cosine, CKA, Sm, St files.

Reads the ``tokens`` array of a complete store one prompt at a time (never the whole
store), slices each prompt to its ``lengths[i]`` real positions, selects the states of
each layer view (``attrs["views"][view]``, indices into the n_states axis), computes
the metrics of :mod:`reprflow.metrics` and averages them over prompts. The per-prompt step
(:func:`prompt_metrics`) and the writing (:func:`write_token_metrics`) are shared with the
streamed path (:class:`reprflow.sinks.TokenMetricsSink`, ``tokens: stream``), which gets each
prompt's states from the forward pass instead of a store.

Files written to ``out_dir`` (each atomically: temporary name, then rename):

========================================  ==========================================================
``inter_token_cosine.csv``                view, state_index, state_name, mean, std, n_prompts
``layerwise_cosine.csv``                  view, pair_index, from_state, to_state, mean, std, n_prompts
``layerwise_cosine_{view}.npy``           [n_states - 1, n_bins]: cosine per relative-position bin
``cka_{view}.npy``                        [n_states, n_states]: biased linear CKA
``cka_debiased_{view}.npy``               [n_states, n_states]: debiased CKA (if ``debiased_cka``)
``smoothness_stability.json``             {view: {"Sm", "St", "Sm_std", "St_std", "Sm_rel",
                                          "St_rel", "Sm_rel_std", "St_rel_std", "state_rms",
                                          "n_prompts"}, "provenance": {...}}
========================================  ==========================================================

Notes
-----
* Averages are unweighted over prompts (each prompt counts once whatever its length);
  ``std`` is the population std (ddof = 0) across prompts of the per-prompt values.
  For layerwise cosine the per-prompt value is the mean over that prompt's tokens.
* ``Sm``/``St`` are the paper's absolute Eq. 3/4; ``Sm_rel``/``St_rel`` their scale-free
  variants (each prompt's value divided by its mean state RMS ``s``, then averaged over
  prompts; :mod:`reprflow.metrics.smoothness_stability`); ``state_rms`` is the mean of ``s``.
* The heatmap puts token t of a prompt of n tokens in bin ``floor(t * n_bins / n)``,
  averages within bins per prompt, then over the prompts that have a token in the bin.
  Token prompts shorter than ``n_bins`` (custom tasks) lower it to the shortest prompt's
  length (:func:`position_bins`); the provenance records the count used.
* CSV files carry the provenance as constant columns ``store``, ``prompt_sha256``,
  ``reprflow_version``; the JSON file under the key ``"provenance"``.
* Memory: one prompt is held in its storage dtype (65 x 4096 x 2560 float16 = 1.4 GB);
  float64 temporaries are bounded by ``max_tokens_in_memory`` (cosines, Sm, St) and by
  the CKA block budget (:data:`reprflow.metrics.cka.DEFAULT_BLOCK_BYTES`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from reprflow.atomic import atomic_write
from reprflow.devices import resolve_device
from reprflow.errors import ConfigError, ReprflowError, StoreError
from reprflow.metrics import (
    InterTokenCosineAccumulator,
    LayerwiseCosineAccumulator,
    SmoothnessStabilityAccumulator,
    cka_matrices,
    cka_matrix,
)
from reprflow.metrics._arrays import state_selector
from reprflow.metrics.mixed import prompt_metrics_mixed
from reprflow.store import open_activations, store_provenance

logger = logging.getLogger(__name__)

N_BINS = 64
"""Relative-position bins of the layerwise-cosine heatmap (Fig. 1)."""


def min_prompt_tokens(debiased_cka: bool) -> int:
    """Tokens a token prompt needs for its metrics: 2 for the inter-token cosine, 4 with the
    debiased CKA (its U-centred Gram)."""
    return 4 if debiased_cka else 2


def position_bins(n_bins: int, shortest: int) -> int:
    """The heatmap's bin count for token prompts whose shortest has ``shortest`` tokens:
    ``n_bins``, or ``shortest`` when fewer (short custom prompts), so no bin is empty. The
    paper's prompts (>= 285 tokens) always get ``n_bins``."""
    return max(1, min(int(n_bins), int(shortest)))


MAX_TOKENS_IN_MEMORY = 1024
"""Default token positions per float64 chunk for the cosine, Sm and St accumulators."""
PRECISIONS = ("float64", "mixed")
"""``metrics.precision``: float64 everywhere (the reference), or :mod:`reprflow.metrics.mixed`
(float32 elementwise, bf16x3 tensor-core Grams, float64 reductions; docs/metrics.md)."""


def _no_timer(_name: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def check_precision(precision: str, *, key: str = "metrics.precision") -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ConfigError naming ``key``."""
    if precision not in PRECISIONS:
        raise ConfigError(
            f"{key} is {precision!r}; expected one of {list(PRECISIONS)} (float64 is the reference, "
            "mixed the fast streamed path)"
        )
    return precision


@dataclass
class PromptMetrics:
    """Per-prompt results of one view (float64), from :func:`prompt_metrics`."""

    inter_token: np.ndarray  # [K]
    layerwise_mean: np.ndarray  # [K-1]
    layerwise_binned: np.ndarray  # [K-1, n_bins], NaN for an empty bin
    cka: np.ndarray  # [K, K]
    cka_debiased: np.ndarray | None  # [K, K]
    sm: float
    st: float
    sm_rel: float
    st_rel: float
    state_rms: float


@dataclass
class ViewResults:
    """Per-prompt results of one view, collected over prompts."""

    prompts: list[PromptMetrics] = field(default_factory=list)

    def stack(self, get: Callable[[PromptMetrics], Any]) -> np.ndarray:
        return np.stack([np.asarray(get(p), dtype=np.float64) for p in self.prompts])


def _check_store(
    group: Any, path: Path, views: Sequence[str], *, min_tokens: int
) -> tuple[dict[str, list[int]], list[str], np.ndarray]:
    """Validate what this stage needs; returns view indices, state names and lengths."""
    attrs = group.attrs
    state_names = list(attrs["state_names"])
    stored_views = dict(attrs["views"])
    tokens = group["tokens"]
    k_all, n_prompts, max_len, _ = tokens.shape
    if not views:
        raise ConfigError(f"{path}: no layer view requested; pass views=('hf', 'residual')")
    unknown = [v for v in views if v not in stored_views]
    if unknown:
        raise StoreError(f"{path}: view(s) {unknown} not in the store attrs 'views' (has {sorted(stored_views)})")
    view_indices = {}
    for v in views:
        idx = [int(i) for i in stored_views[v]]
        if len(idx) < 3 or any(not 0 <= i < k_all for i in idx):
            raise StoreError(f"{path}: view {v!r} lists states {idx}; need >= 3 indices in [0, {k_all})")
        view_indices[v] = idx
    if n_prompts == 0:
        raise StoreError(
            f"{path}: 'tokens' holds no prompt: it was extracted with no token prompts, or with the token "
            "metrics streamed (computed during the extraction, written then; the store keeps no token states). "
            "To compute them from a store, extract with n_token_prompts >= 1 (`reprflow extract --token-prompts`)"
        )
    lengths = np.asarray(group["lengths"][:], dtype=np.int64)
    bad = [i for i, n in enumerate(lengths) if not min_tokens <= n <= max_len]
    if bad:
        i = bad[0]
        raise StoreError(
            f"{path}: lengths[{i}] = {lengths[i]}, expected {min_tokens} <= length <= "
            f"max_len {max_len} (debiased CKA needs >= 4 tokens, inter-token cosine >= 2)"
        )
    return view_indices, state_names, lengths


def _stream_metrics(h: torch.Tensor, *, n_bins: int, chunk: int, timer=_no_timer) -> dict[str, Any]:
    """Cosines, Sm and St of one prompt of one view; ``h`` (n_states, n_tokens, hidden)."""
    n = h.shape[1]
    inter = InterTokenCosineAccumulator()
    layer = LayerwiseCosineAccumulator(n, n_bins=n_bins)
    flow = SmoothnessStabilityAccumulator()
    for start in range(0, n, chunk):
        with timer("cast"):
            part = h[:, start : start + chunk].to(torch.float64)  # cast once for all three
        with timer("inter_token"):
            inter.update(part)
        with timer("cosines"):
            layer.update(part)
        with timer("sm_st"):
            flow.update(part)
    return {
        "inter_token": inter.result(),
        "layerwise_mean": layer.mean(),
        "layerwise_binned": layer.binned(),
        "sm": flow.smoothness(),
        "st": flow.stability(),
        "sm_rel": flow.smoothness_scale_free(),
        "st_rel": flow.stability_scale_free(),
        "state_rms": flow.mean_state_rms(),
    }


def _union_cka(h: torch.Tensor, *, debiased_cka: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """CKA over the union of the views' states, once; a view's matrix is a sub-matrix.

    CKA[k, l] depends only on states k and l, so slicing the union matrix gives exactly
    the matrix of a view (the hf and residual views share all but one state).
    """
    if debiased_cka:
        both = cka_matrices(h)
        return both.biased, both.debiased
    return cka_matrix(h), None


def _check_finite(where: Any, what: str, value: Any, *, error: type[ReprflowError] = StoreError) -> None:
    arr = np.asarray(value, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise error(
            f"{where}: {what} is not finite ({int((~np.isfinite(arr)).sum())} bad values); "
            "the token states are degenerate or corrupt"
        )


def _save_npy(target: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file handle: np.save would append ".npy" to a name
            np.save(fh, array)

    atomic_write(target, write)


def prompt_metrics(
    prompt: torch.Tensor,
    view_indices: dict[str, list[int]],
    *,
    debiased_cka: bool,
    n_bins: int = N_BINS,
    chunk: int = MAX_TOKENS_IN_MEMORY,
    where: str,
    error: type[ReprflowError] = StoreError,
    precision: str = "float64",
    timer: Callable[[str], contextlib.AbstractContextManager] = _no_timer,
) -> dict[str, PromptMetrics]:
    """Every token metric of one prompt, per view, computed where ``prompt`` lives.

    Parameters
    ----------
    prompt : Tensor of shape (n_states_all, n_tokens, hidden)
        All captured states of one prompt, its real tokens only, any float dtype, on the
        compute device (the store path reads it from ``tokens``; the streamed path gets it
        from the forward pass, :class:`reprflow.sinks.TokenMetricsSink`).
    view_indices : dict of str to list of int
        View name -> indices into the state axis (the store attr ``views``).
    where : str
        Names the prompt in errors (e.g. ``"<store>: token prompt 3"``).
    error : ReprflowError subclass
        Raised for a degenerate prompt (zero-norm token, non-finite value).
    precision : {"float64", "mixed"}, default "float64"
        float64: every step in float64 (the reference). mixed:
        :func:`reprflow.metrics.mixed.prompt_metrics_mixed` (one float32 pass over the
        union of the views' states, bf16x3 tensor-core Grams on CUDA, float64 reductions;
        within the tolerances of docs/metrics.md).
    timer : callable, optional
        ``timer(part)`` -> context manager around each part (the benchmark's breakdown).

    Returns
    -------
    dict of str to PromptMetrics
        Per view: inter-token cosine [K], layerwise cosine mean [K-1] and binned
        [K-1, n_bins], CKA [K, K] (biased, and debiased if asked), Sm and St; float64.
    """
    union = sorted({i for idx in view_indices.values() for i in idx})
    position = {state: j for j, state in enumerate(union)}
    check_precision(precision)
    if precision == "mixed":
        try:
            per_view = prompt_metrics_mixed(
                prompt[state_selector(union)],
                {v: [position[k] for k in idx] for v, idx in view_indices.items()},
                debiased_cka=debiased_cka,
                n_bins=n_bins,
                chunk=chunk,
                timer=timer,
            )
        except ValueError as exc:
            raise error(f"{where}, states {union} (precision mixed): {exc}") from exc
    else:
        try:
            with timer("cka"):
                cka_all, cka_all_debiased = _union_cka(prompt[state_selector(union)], debiased_cka=debiased_cka)
        except ValueError as exc:
            raise error(f"{where}, CKA over states {union}: {exc}") from exc
        per_view = {}
        for v, idx in view_indices.items():
            h = prompt[state_selector(idx)]  # [K, n, hidden], storage dtype
            try:
                per_view[v] = _stream_metrics(h, n_bins=n_bins, chunk=chunk, timer=timer)
            except ValueError as exc:
                raise error(f"{where}, view {v!r} (states {idx}): {exc}") from exc
            sub = np.ix_(*[[position[k] for k in idx]] * 2)
            per_view[v]["cka"] = cka_all[sub]
            per_view[v]["cka_debiased"] = None if cka_all_debiased is None else cka_all_debiased[sub]
    out = {}
    for v, idx in view_indices.items():
        metrics = PromptMetrics(**per_view[v])
        for name in ("inter_token", "layerwise_mean", "cka", "cka_debiased", "sm", "st", "sm_rel", "st_rel"):
            value = getattr(metrics, name)
            if value is not None:
                _check_finite(where, f"{name}, view {v!r}", value, error=error)
        out[v] = metrics
    return out


def compute_token_metrics(
    store_path: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    views: Sequence[str] = ("hf", "residual"),
    debiased_cka: bool = True,
    device: str | torch.device | None = None,
    max_tokens_in_memory: int = MAX_TOKENS_IN_MEMORY,
    n_bins: int = N_BINS,
    precision: str = "float64",
    progress: bool = True,
) -> dict[str, Path]:
    """Compute the token-level metrics of one activation store and write them to ``out_dir``.

    Parameters
    ----------
    store_path : path-like or list of path-like
        A complete store (``results/activations/{model}/{init}/{task}_n{length}.zarr``), or
        the shards of one prompt set, read as one (``reprflow.store.open_sharded``); its
        ``tokens`` array is [n_states, n_prompts, n_tokens, hidden].
    out_dir : path-like
        Output directory (created if missing); file list in the module docstring.
    views : sequence of str, default ("hf", "residual")
        Layer views, keys of the store attr ``views``.
    debiased_cka : bool, default True
        Also write ``cka_debiased_{view}.npy`` (same pass as the biased matrix).
    device : str or torch.device, optional
        Compute device (e.g. "cuda"); default CPU. A prompt is moved there once.
    max_tokens_in_memory : int, default 1024
        Token positions converted to float64 at a time for cosines, Sm and St.
    n_bins : int, default 64
        Relative-position bins of the heatmap; at most the shortest prompt length
        (otherwise a bin is empty in every prompt and the stage raises).
    precision : {"float64", "mixed"}, default "float64"
        ``metrics.precision``, as for :func:`prompt_metrics`.
    progress : bool, default True
        A progress bar over the prompts (stderr).

    Returns
    -------
    dict of str to Path
        Written file name -> path.

    Raises
    ------
    StoreError
        Store missing, incomplete or inconsistent; unknown view; a prompt shorter than
        the metrics need; a zero-norm token or non-finite value in a prompt.
    """
    path = Path(store_path) if isinstance(store_path, (str, os.PathLike)) else Path(list(store_path)[0])
    out = Path(out_dir)
    if max_tokens_in_memory < 1 or n_bins < 1:
        raise ConfigError(
            f"compute_token_metrics: max_tokens_in_memory and n_bins must be >= 1, got "
            f"{max_tokens_in_memory} and {n_bins}"
        )
    check_precision(precision)
    group = open_activations(store_path)
    view_indices, state_names, lengths = _check_store(group, path, views, min_tokens=min_prompt_tokens(debiased_cka))
    attrs = group.attrs
    tokens = group["tokens"]
    n_bins = position_bins(n_bins, int(lengths.min())) if len(lengths) else n_bins
    dev = resolve_device(device) if device is not None else torch.device("cpu")
    results = {v: ViewResults() for v in views}

    t0, n_done = time.perf_counter(), 0
    for i in tqdm(range(len(lengths)), desc=f"token metrics {path.name}", unit="prompt", disable=not progress):
        n = int(lengths[i])
        prompt = torch.from_numpy(np.ascontiguousarray(tokens[:, i, :n, :])).to(dev)
        per_view = prompt_metrics(
            prompt,
            view_indices,
            debiased_cka=debiased_cka,
            n_bins=n_bins,
            chunk=max_tokens_in_memory,
            where=f"{path}: token prompt {i}",
            error=StoreError,
            precision=precision,
        )
        for v in views:
            results[v].prompts.append(per_view[v])
        n_done += n
    elapsed = time.perf_counter() - t0
    logger.info(
        "%s: %d prompts, %d tokens, %d views in %.1f s (%.0f tokens/s)",
        path,
        len(lengths),
        n_done,
        len(views),
        elapsed,
        n_done / max(elapsed, 1e-9),
    )

    provenance = {
        **store_provenance(store_path, attrs),
        "views": {v: view_indices[v] for v in views},
        "n_prompts": len(lengths),
        "n_bins": n_bins,
        "precision": precision,
    }
    return write_token_metrics(out, results, view_indices, state_names, provenance, path, debiased_cka=debiased_cka)


def write_token_metrics(
    out: Path,
    results: dict[str, ViewResults],
    view_indices: dict[str, list[int]],
    state_names: list[str],
    provenance: dict[str, Any],
    path: Path,
    *,
    debiased_cka: bool,
) -> dict[str, Path]:
    """Aggregate per-prompt results over prompts, check finiteness, then write atomically.

    Shared by the store path (:func:`compute_token_metrics`) and the streamed path
    (:meth:`reprflow.sinks.TokenMetricsSink.write`). ``results[view].prompts`` holds one
    :class:`PromptMetrics` per prompt; ``path`` names the source in errors; ``provenance``
    must hold ``store``, ``prompt_sha256`` and ``reprflow_version``. Files as in the
    module docstring.
    """
    prov_cols = {
        "store": provenance["store"],
        "prompt_sha256": provenance["prompt_sha256"],
        "reprflow_version": provenance["reprflow_version"],
    }
    inter_rows, layer_rows, arrays, scalars = [], [], {}, {}
    for v, res in results.items():
        names = [state_names[i] for i in view_indices[v]]
        n_prompts = len(res.prompts)
        inter = res.stack(lambda p: p.inter_token)  # [P, K]
        for k, name in enumerate(names):
            inter_rows.append(
                {
                    "view": v,
                    "state_index": k,
                    "state_name": name,
                    "mean": inter[:, k].mean(),
                    "std": inter[:, k].std(),
                    "n_prompts": n_prompts,
                    **prov_cols,
                }
            )
        layer = res.stack(lambda p: p.layerwise_mean)  # [P, K-1]
        for k in range(len(names) - 1):
            layer_rows.append(
                {
                    "view": v,
                    "pair_index": k,
                    "from_state": names[k],
                    "to_state": names[k + 1],
                    "mean": layer[:, k].mean(),
                    "std": layer[:, k].std(),
                    "n_prompts": n_prompts,
                    **prov_cols,
                }
            )
        binned = res.stack(lambda p: p.layerwise_binned)  # [P, K-1, n_bins]
        empty = np.isnan(binned).all(axis=0)
        if empty.any():
            raise ReprflowError(
                f"{path}: view {v!r}: {int(empty[0].sum())} of {binned.shape[2]} position bins "
                f"hold no token in any prompt (shortest prompt has fewer tokens than "
                f"n_bins={binned.shape[2]}); pass a smaller n_bins"
            )
        arrays[f"layerwise_cosine_{v}.npy"] = np.nanmean(binned, axis=0)
        arrays[f"cka_{v}.npy"] = res.stack(lambda p: p.cka).mean(axis=0)
        if debiased_cka:
            arrays[f"cka_debiased_{v}.npy"] = res.stack(lambda p: p.cka_debiased).mean(axis=0)
        sm, st = res.stack(lambda p: p.sm), res.stack(lambda p: p.st)
        sm_rel, st_rel = res.stack(lambda p: p.sm_rel), res.stack(lambda p: p.st_rel)
        scalars[v] = {
            "Sm": float(sm.mean()),
            "St": float(st.mean()),
            "Sm_std": float(sm.std()),
            "St_std": float(st.std()),
            "Sm_rel": float(sm_rel.mean()),
            "St_rel": float(st_rel.mean()),
            "Sm_rel_std": float(sm_rel.std()),
            "St_rel_std": float(st_rel.std()),
            "state_rms": float(res.stack(lambda p: p.state_rms).mean()),
            "n_prompts": n_prompts,
        }

    inter_df, layer_df = pd.DataFrame(inter_rows), pd.DataFrame(layer_rows)
    for what, value in [
        ("inter_token_cosine.csv", inter_df[["mean", "std"]].to_numpy()),
        ("layerwise_cosine.csv", layer_df[["mean", "std"]].to_numpy()),
        *arrays.items(),
        *((f"smoothness_stability.json ({v})", list(s.values())) for v, s in scalars.items()),
    ]:
        _check_finite(path, f"aggregated {what}", value)

    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, frame in (("inter_token_cosine.csv", inter_df), ("layerwise_cosine.csv", layer_df)):
        written[name] = out / name
        atomic_write(out / name, lambda tmp, f=frame: f.to_csv(tmp, index=False))
    for name, array in arrays.items():
        written[name] = out / name
        _save_npy(out / name, array)
    payload = {**scalars, "provenance": provenance}
    name = "smoothness_stability.json"
    written[name] = out / name
    atomic_write(out / name, lambda tmp: tmp.write_text(json.dumps(payload, indent=2) + "\n"))
    logger.info("%s: wrote %d metric files to %s", path, len(written), out)
    return written
