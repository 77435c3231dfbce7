"""Stage probes: one activation store -> per-layer probe accuracies (CSV + JSON summary).

Reads ``last`` [n_states, n_samples, hidden] and ``labels`` [n_samples] of a complete
store, fits the probes of :func:`reprflow.probes.fit_layer_probes` ONCE on all
K_all = L + 2 captured states, and reports each layer view (``attrs["views"][view]``,
an index list into the state axis) by selecting its rows. ``last`` is read a group of
states at a time (see ``max_batch_bytes`` of ``fit_layer_probes``), never whole.

Files written (each atomically: temporary name beside the target, then rename):

=======================  ====================================================================
``out_csv``              view, state_index (0..K_view-1), state_name, seed, val_accuracy,
                         train_accuracy: one row per (view, state, seed)
``out_csv`` as ``.json`` {view: {state_names, mean, std, last_accuracy, peak_layer, peak_state,
                         peak_accuracy, gap, n_train, n_val, n_val_per_seed, n_classes},
                         "protocol": {..., split, n_groups},
                         "provenance": {store, prompt_sha256, reprflow_version, ...}}
=======================  ====================================================================

``mean``/``std`` are over seeds (std is the population std, ddof = 0); ``peak_layer`` is
an index within the view.

Split: MDQA samples are grouped by question and gold passage (the ``group`` field of the prompt
file the store was extracted from, ``attrs["prompt_file"]``, checked against
``attrs["prompt_sha256"]`` and the store's labels; see
:func:`reprflow.prompts.mdqa.gold_passage_groups`), so no question and no gold passage has
prompts on both sides
(:func:`reprflow.probes.grouped_stratified_split`); KVPR samples are each their own group
(:func:`reprflow.probes.stratified_split`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from reprflow.devices import release_gpu
from reprflow.errors import ConfigError, PromptError, ReprflowError, StoreError
from reprflow.probes import DEFAULT_MAX_BATCH_BYTES, ProbeResult, fit_layer_probes
from reprflow.prompts import read_prompt_groups
from reprflow.prompts.files import atomic_write_bytes
from reprflow.store import open_activations, store_provenance

logger = logging.getLogger(__name__)

CSV_COLUMNS = ["view", "state_index", "state_name", "seed", "val_accuracy", "train_accuracy"]


def _view_rows(result: ProbeResult, view: str, indices: list[int], names: list[str]) -> list[dict[str, Any]]:
    sub = result.select(indices)
    return [
        {
            "view": view,
            "state_index": j,
            "state_name": names[k],
            "seed": seed,
            "val_accuracy": float(sub.val_accuracy[s, j]),
            "train_accuracy": float(sub.train_accuracy[s, j]),
        }
        for j, k in enumerate(indices)
        for s, seed in enumerate(result.seeds)
    ]


def _view_summary(result: ProbeResult, indices: list[int], names: list[str]) -> dict[str, Any]:
    sub = result.select(indices)
    return {
        "state_names": [names[k] for k in indices],
        "states": list(indices),
        "mean": sub.mean.tolist(),
        "std": sub.std.tolist(),
        "last_accuracy": sub.last_accuracy,
        "peak_layer": sub.peak_layer,
        "peak_state": names[indices[sub.peak_layer]],
        "peak_accuracy": sub.peak_accuracy,
        "gap": sub.gap,
        "n_train": sub.n_train,
        "n_val": sub.n_val,
        "n_val_per_seed": list(sub.n_val_per_seed),
        "n_classes": sub.n_classes,
    }


def check_labels(store_path, attrs: dict, labels: np.ndarray) -> None:
    """Refuse labels no probe can learn from: prompts stored without a label, or a single class.

    ``reprflow extract`` stores label -1 for a prompt without one; a probe would learn -1 as
    one more class. Both faults are the prompt file's, so the message names it.

    Raises
    ------
    PromptError
        Some prompts have label -1 (the count and the first sample index), or one class only.
    """
    source = attrs.get("prompt_file", "its prompt file")
    fix = f'give every record of {source} an int "label" >= 0 and rerun the extraction'
    unlabelled = np.flatnonzero(labels < 0)
    if unlabelled.size:
        raise PromptError(
            f"{store_path}: {unlabelled.size} of {labels.size} prompts have no label (stored as -1; the first "
            f"is prompt {int(unlabelled[0])} of the store); a probe needs the class of every prompt: {fix}"
        )
    classes = np.unique(labels)
    if classes.size < 2:
        raise PromptError(
            f"{store_path}: all {labels.size} prompts have label {int(classes[0])}; a probe needs two classes or "
            f"more: {fix}, labelling the prompts by what the probe should tell apart"
        )


def sample_groups(
    store_path, attrs: dict, labels: np.ndarray, *, prompt_path: str | os.PathLike | None = None
) -> np.ndarray | None:
    """Group of each sample for the probe split: MDQA the question/gold-passage groups, KVPR None (each its own).

    MDQA groups come from the ``group`` field of the prompt file (``prompt_path``, default
    ``attrs["prompt_file"]``), which must be the file the store was extracted from (same
    sha256 as ``attrs["prompt_sha256"]``, same labels in the same order).

    Returns
    -------
    ndarray of shape (n_samples,), int64, or None

    Raises
    ------
    StoreError
        The prompt file is missing or does not match the store.
    PromptError
        The prompt file is malformed, or differs from its manifest or from the store's sha256.
    """
    if attrs.get("task") != "mdqa":
        return None
    path = prompt_path if prompt_path is not None else attrs.get("prompt_file")
    if not path or not Path(path).is_file():
        raise StoreError(
            f"{store_path}: MDQA probes split by question, read from the store's prompt file {path!r}, which is "
            "missing; rebuild it with the prompts rule (same config and seed) or pass its path as prompt_path"
        )
    groups, file_labels = read_prompt_groups(path, sha256=attrs.get("prompt_sha256"))
    if file_labels.shape != labels.shape or not np.array_equal(file_labels, labels):
        raise StoreError(
            f"{store_path}: its {labels.shape[0]} labels differ from the {file_labels.shape[0]} labels of its prompt "
            f"file {path}; the store was not extracted from this file: delete the store and rerun"
        )
    return groups


def run_probe_stage(
    store_path: str | os.PathLike | Sequence[str | os.PathLike],
    out_csv: str | os.PathLike,
    *,
    views: Sequence[str] = ("hf", "residual"),
    epochs: int = 150,
    lr: float = 0.05,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    val_fraction: float = 0.2,
    standardize: bool = True,
    n_train: int = 20000,
    device: str | torch.device | None = None,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    matmul_precision: str = "auto",
    prompt_path: str | os.PathLike | None = None,
) -> ProbeResult:
    """Fit per-layer probes on one store's last-token states and write CSV + JSON.

    Parameters
    ----------
    store_path : path-like, or sequence of path-likes
        A complete activation store (``reprflow.store.open_store``), or the shard stores
        of one prompt set (``reprflow.store.open_sharded``).
    out_csv : path-like
        The CSV to write; the summary goes to the same path with suffix ``.json``.
    views : sequence of str
        Layer views to report, keys of ``attrs["views"]``.
    epochs, lr, seeds, val_fraction, standardize, n_train, device, max_batch_bytes, matmul_precision
        Passed to :func:`reprflow.probes.fit_layer_probes`. The summary's ``protocol``
        records the precision the products actually ran in (``"tf32"`` or ``"float32"``).
    prompt_path : path-like, optional
        MDQA: the prompt file holding each sample's split group (``group``); default the
        store's ``attrs["prompt_file"]`` (see :func:`sample_groups`).

    Returns
    -------
    ProbeResult
        Over all K_all states (``val_accuracy`` of shape (n_seeds, n_states)).

    Raises
    ------
    StoreError
        If the store is missing or incomplete, its views/state names are inconsistent,
        or its ``last`` cannot be probed (non-finite values, ...).
    PromptError
        Its labels cannot be probed: prompts without a label, or one class (:func:`check_labels`).
    ConfigError
        If a requested view is not in the store, or a probe parameter is out of range
        (``reprflow.probes.InvalidParameterError``).
    """
    t0 = time.perf_counter()
    out_csv = Path(out_csv)
    if not out_csv.name or out_csv.suffix == ".json" or out_csv.is_dir():
        raise ConfigError(
            f"probes: the output {str(out_csv)!r} must be a CSV file path (e.g. probes.csv); its summary goes "
            "beside it under the same name with .json"
        )
    out_json = out_csv.with_suffix(".json")
    store = open_activations(store_path)
    attrs = store.attrs
    names = list(attrs["state_names"])
    store_views = attrs["views"]
    last = store["last"]  # [n_states, n_samples, hidden]
    labels = np.asarray(store["labels"][:])  # [n_samples]
    if not views or len(set(views)) != len(views):
        raise ConfigError(f"probes: views must be a non-empty list of distinct names; got {list(views)!r}")
    for view in views:
        if view not in store_views:
            raise ConfigError(
                f"{store_path}: layer view {view!r} not in the store (it has {sorted(store_views)}); "
                "fix metrics.views in the config (or --views of `reprflow probe`)"
            )
        bad = [k for k in store_views[view] if not 0 <= int(k) < len(names)]
        if bad:
            raise StoreError(f"{store_path}: view {view!r} has state indices {bad} outside 0..{len(names) - 1}")
    if last.shape[0] != len(names):
        raise StoreError(f"{store_path}: 'last' has {last.shape[0]} states but state_names has {len(names)}")

    check_labels(store_path, attrs, labels)
    groups = sample_groups(store_path, attrs, labels, prompt_path=prompt_path)
    logger.info("probes: %s, last %s (%s), %d views", store_path, tuple(last.shape), last.dtype, len(views))
    try:
        result = fit_layer_probes(
            last,
            labels,
            groups=groups,
            epochs=epochs,
            lr=lr,
            seeds=seeds,
            val_fraction=val_fraction,
            standardize=standardize,
            device=device,
            n_train=n_train,
            max_batch_bytes=max_batch_bytes,
            matmul_precision=matmul_precision,
        )
    except ValueError as exc:
        if isinstance(exc, ReprflowError):  # a bad parameter (InvalidParameterError): the config's fault
            raise
        raise StoreError(f"{store_path}: {exc}; the store's last/labels are unusable, delete it and rerun") from exc
    release_gpu()  # a GPU claimed for the fit (device auto, several GPUs): the next job may start on it now
    for what, arr in (("val_accuracy", result.val_accuracy), ("train_accuracy", result.train_accuracy)):
        if not np.isfinite(arr).all():
            raise StoreError(f"{store_path}: probe {what} is not finite; refusing to write {out_csv}")

    if result.n_train < n_train:  # a small store (the demo) or a large val_fraction: say so, not silently
        logger.warning(
            "%s: the probes train on %d samples per seed, fewer than probes.n_train = %d: the store holds %d "
            "samples and validation takes %s per seed (val_fraction %.2f); the paper trains on 20,000 of 25,000",
            store_path,
            result.n_train,
            n_train,
            labels.shape[0],
            "/".join(str(int(v)) for v in sorted(set(result.n_val_per_seed))),
            val_fraction,
        )
    rows, summary = [], {}
    for view in views:
        indices = [int(k) for k in store_views[view]]
        rows += _view_rows(result, view, indices, names)
        summary[view] = _view_summary(result, indices, names)
    summary["protocol"] = {
        "epochs": epochs,
        "lr": lr,
        "seeds": list(result.seeds),
        "val_fraction": val_fraction,
        "standardize": standardize,
        "n_train_max": n_train,
        "optimizer": "Adam (full batch)",
        "compute_dtype": "float32",
        "matmul_precision": result.matmul_precision,
        "device": result.device,
        "split": "stratified by label"
        if groups is None
        else "grouped by MDQA question and gold passage, stratified by label",
        "n_groups": int(labels.shape[0] if groups is None else np.unique(groups).size),
    }
    summary["provenance"] = {
        **store_provenance(store_path, attrs),
        "views": {v: [int(k) for k in store_views[v]] for v in views},
        "n_samples": int(labels.shape[0]),
    }

    out_csv.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=CSV_COLUMNS)
    atomic_write_bytes(frame.to_csv(index=False).encode(), out_csv)  # the summary last: it says the CSV is whole
    atomic_write_bytes((json.dumps(summary, indent=2, allow_nan=False) + "\n").encode(), out_json)
    logger.info("probes: wrote %s and %s in %.1f s", out_csv, out_json, time.perf_counter() - t0)
    return result
