"""``tokens: stream``: one extraction pass writes the last-token store and the token metrics.

:func:`extract_with_streamed_token_metrics` is what the extraction stage calls when token
states are streamed rather than stored: the store gets no token states
(``n_token_prompts=0``), and a :class:`reprflow.sinks.TokenMetricsSink` computes the token
metrics of the ``n_token_prompts`` evenly spaced prompts (:func:`reprflow.extract.token_prompt_ids`)
on the device during the same forward passes, then writes the same files as
:func:`reprflow.pipeline.token_metrics.compute_token_metrics` (provenance ``tokens: "stream"``).
A resumed or complete store is not recomputed; the token prompts it holds are forwarded
for the metrics alone, so the metrics files are always complete.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from reprflow.errors import ConfigError
from reprflow.extract import ExtractionSummary, extract_activations, token_prompt_ids
from reprflow.pipeline.token_metrics import MAX_TOKENS_IN_MEMORY, N_BINS, min_prompt_tokens, position_bins
from reprflow.sinks import TokenMetricsSink

__all__ = ["extract_with_streamed_token_metrics"]


def extract_with_streamed_token_metrics(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[Mapping[str, Any]],
    store_path: str | os.PathLike,
    metrics_dir: str | os.PathLike,
    *,
    n_token_prompts: int,
    attrs: Mapping[str, Any],
    views: Sequence[str] = ("hf", "residual"),
    debiased_cka: bool = True,
    n_bins: int = N_BINS,
    max_tokens_in_memory: int = MAX_TOKENS_IN_MEMORY,
    precision: str = "float64",
    **extract_kwargs: Any,
) -> tuple[ExtractionSummary, dict[str, Path]]:
    """Extract the last-token store and stream the token metrics in the same pass.

    Parameters
    ----------
    store_path : path-like
        The store (``.../activations/{model}/{init}/{task}_n{length}.zarr``); it holds
        ``last`` and an empty ``tokens`` array.
    metrics_dir : path-like
        The cell's token-metrics directory (the files of ``compute_token_metrics``).
    n_token_prompts : int
        Prompts whose token metrics are computed (evenly spaced over the whole prompt file;
        with ``sample_range``, prompts outside the shard are forwarded for the metrics alone,
        so give the sink to one shard job only).
    attrs : mapping
        Store attrs (as for :func:`reprflow.extract.extract_activations`).
    views, debiased_cka, n_bins, max_tokens_in_memory, precision
        As for :func:`reprflow.pipeline.token_metrics.compute_token_metrics`.
    **extract_kwargs
        The other keywords of :func:`reprflow.extract.extract_activations` (``batch_size``,
        ``device``, ``compute_dtype``, ``store_dtype``, ``sample_range``, ``overlap`` (also
        the metrics' background thread), ...).

    Returns
    -------
    (ExtractionSummary, dict of str to Path)
        The extraction's summary and the metric files written.
    """
    ids = token_prompt_ids(len(prompts), n_token_prompts)
    min_tokens = min_prompt_tokens(debiased_cka)  # checked before any forward pass, not after the extraction
    short = [(i, int(prompts[i]["n_tokens"])) for i in ids if int(prompts[i].get("n_tokens", min_tokens)) < min_tokens]
    if short:
        i, n = short[0]
        raise ConfigError(
            f"token prompt {i} has {n} tokens ({len(short)} of {len(ids)} token prompts are that short): the streamed "
            f"metrics need >= {min_tokens} (inter-token cosine >= 2, debiased CKA >= 4); lengthen those prompts"
            + ("" if not debiased_cka else ", or turn debiased CKA off (--no-debiased-cka)")
        )
    if ids and all("n_tokens" in prompts[i] for i in ids):  # as the store path: no empty bin for short prompts
        n_bins = position_bins(n_bins, min(int(prompts[i]["n_tokens"]) for i in ids))
    sink = TokenMetricsSink(
        ids,
        views=views,
        debiased_cka=debiased_cka,
        n_bins=n_bins,
        max_tokens_in_memory=max_tokens_in_memory,
        precision=precision,
        overlap=extract_kwargs.get("overlap", True),
    )
    summary = extract_activations(
        model, tokenizer, prompts, store_path, n_token_prompts=0, attrs=attrs, sinks=[sink], **extract_kwargs
    )
    return summary, sink.write(metrics_dir, source=store_path, attrs=attrs)
