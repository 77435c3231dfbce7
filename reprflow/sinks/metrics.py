"""The streamed-metrics sink: token metrics computed on the device, per prompt, during extraction.

For every chosen prompt it takes that prompt's token states from the forward pass (on the
model's device, never copied to the host), computes the per-prompt token metrics of
:func:`reprflow.pipeline.token_metrics.prompt_metrics` -- layerwise cosine per token,
inter-token cosine per state, the K x K CKA matrix (biased and debiased), the Sm/St
accumulators, the very functions the store-then-compute path uses -- keeps only those
results, and writes the same files as :func:`reprflow.pipeline.token_metrics.compute_token_metrics`
(:meth:`TokenMetricsSink.write`). Full token states never reach the disk.

The metrics run in the background writer thread (``overlap=True``), so the thread that
launches the forward passes does not wait for their results; on a GPU their kernels go to
a side stream (:func:`reprflow.side_stream.on_side_stream`) that waits for the forward
pass that produced the states, so they can overlap the next forward passes instead of
queueing with them (same kernels, same order: the same values). The queue bound keeps at
most a few prompts' token states alive on the device.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from reprflow.errors import ConfigError, ReprflowError
from reprflow.pipeline.token_metrics import (
    MAX_TOKENS_IN_MEMORY,
    N_BINS,
    PromptMetrics,
    check_precision,
    ViewResults,
    prompt_metrics,
    write_token_metrics,
)
from reprflow.side_stream import on_side_stream, ready
from reprflow.sinks.base import CapturedStates, RunInfo
from reprflow.sinks.thread import BackgroundWriter
from reprflow.store import store_provenance

__all__ = ["TokenMetricsSink"]


class TokenMetricsSink:
    """Per-prompt token metrics of the prompts ``prompt_ids``, computed where the states are.

    Parameters
    ----------
    prompt_ids : iterable of int
        Prompt indices (positions in the prompt list) whose metrics are computed.
    views : sequence of str, default ("hf", "residual")
        Layer views (keys of :attr:`RunInfo.views`).
    debiased_cka : bool, default True
        Also compute the debiased CKA matrix (needs >= 4 tokens per prompt).
    n_bins : int, default 64
        Relative-position bins of the layerwise-cosine heatmap.
    max_tokens_in_memory : int, default 1024
        Token positions cast to float64 at a time (cosines, Sm, St).
    overlap : bool, default True
        Compute in the background writer thread (on a GPU: on a side stream).
    precision : {"float64", "mixed"}, default "float64"
        ``metrics.precision``: float64 (the reference) or the mixed-precision one-pass
        path (:mod:`reprflow.metrics.mixed`; tolerances in docs/metrics.md).
    """

    name = "token_metrics"

    def __init__(
        self,
        prompt_ids: Iterable[int],
        *,
        views: Sequence[str] = ("hf", "residual"),
        debiased_cka: bool = True,
        n_bins: int = N_BINS,
        max_tokens_in_memory: int = MAX_TOKENS_IN_MEMORY,
        overlap: bool = True,
        precision: str = "float64",
    ) -> None:
        self.token_prompts = frozenset(int(i) for i in prompt_ids)
        if not self.token_prompts:
            raise ConfigError("streamed token metrics need at least one prompt (n_token_prompts >= 1)")
        if max_tokens_in_memory < 1 or n_bins < 1:
            raise ConfigError(
                f"TokenMetricsSink: max_tokens_in_memory and n_bins must be >= 1, got "
                f"{max_tokens_in_memory} and {n_bins}"
            )
        self.precision = check_precision(precision)
        self.views = tuple(views)
        self.debiased_cka = debiased_cka
        self.n_bins = n_bins
        self.chunk = max_tokens_in_memory
        self.overlap = overlap
        self.info: RunInfo | None = None
        self.view_indices: dict[str, list[int]] = {}
        self.results: dict[int, dict[str, PromptMetrics]] = {}
        self._thread: BackgroundWriter | None = None

    def start(self, info: RunInfo) -> None:
        unknown = [v for v in self.views if v not in info.views]
        if unknown or not self.views:
            raise ConfigError(
                f"token metrics: view(s) {unknown or list(self.views)} unknown; the model has views "
                f"{sorted(info.views)}"
            )
        outside = sorted(i for i in self.token_prompts if not 0 <= i < info.n_prompts)
        if outside:
            raise ConfigError(f"token metrics: prompt ids {outside[:5]} outside the {info.n_prompts} prompts")
        self.info = info
        self.view_indices = {v: [int(i) for i in info.views[v]] for v in self.views}
        self._thread = BackgroundWriter(self._compute, overlap=self.overlap, name="reprflow-token-metrics")

    def consume(self, batch: CapturedStates) -> None:
        event = None
        for slot, pid in enumerate(batch.token_prompts):
            if pid in self.token_prompts and pid not in self.results:
                if event is None and self.overlap:  # the forward that produced the states, for the side stream
                    event = ready(batch.states.tokens.device)
                # [n_states, n_tokens, hidden] on the device, unpadded; a view, no copy
                self._thread.put((pid, batch.states.tokens[:, slot, : batch.length_of(pid)], event))

    def _compute(self, item: tuple[int, torch.Tensor, torch.cuda.Event | None]) -> None:
        pid, states, event = item
        with torch.inference_mode(), on_side_stream([states], event, name="token-metrics"):
            self.results[pid] = prompt_metrics(
                states,
                self.view_indices,
                debiased_cka=self.debiased_cka,
                n_bins=self.n_bins,
                chunk=self.chunk,
                where=f"streamed token metrics, prompt {pid}",
                error=ReprflowError,
                precision=self.precision,
            )

    def profile(self) -> dict[str, float]:
        """Seconds of this run: computing the metrics (``compute``, in the background thread,
        results read back included), the caller blocked on a full queue (``stall``) and
        waiting for the last prompts at the end (``drain``)."""
        t = self._thread
        return {"compute": t.busy_s if t else 0.0, "stall": t.stall_s if t else 0.0, "drain": t.drain_s if t else 0.0}

    def close(self) -> None:
        if self._thread is not None:
            self._thread.close()
        missing = sorted(self.token_prompts - set(self.results))
        if missing:
            raise ReprflowError(f"streamed token metrics: prompts {missing[:5]} were never captured")

    def abort(self) -> None:
        if self._thread is not None:
            self._thread.cancel()

    def view_results(self) -> dict[str, ViewResults]:
        """Per view, the per-prompt results in ascending prompt order."""
        order = sorted(self.results)
        return {v: ViewResults(prompts=[self.results[p][v] for p in order]) for v in self.views}

    def write(
        self, out_dir: str | os.PathLike, *, source: str | os.PathLike, attrs: Mapping[str, Any]
    ) -> dict[str, Path]:
        """Write the aggregated metrics, the same files as the store-then-compute path.

        Parameters
        ----------
        out_dir : path-like
            Output directory (``results/metrics/.../tokens`` of the cell).
        source : path-like
            What the provenance names as ``store``: the last-token store written in the
            same pass (or any label of the run).
        attrs : mapping
            Run attrs; needs ``prompt_sha256`` (and ``model``, ``init``, ``task``, ``length``).
        """
        if self.info is None:
            raise ReprflowError("TokenMetricsSink.write: no run was fed to this sink")
        provenance = {
            **store_provenance(source, attrs),
            "tokens": "stream",
            "views": self.view_indices,
            "n_prompts": len(self.results),
            "n_bins": self.n_bins,
            "precision": self.precision,
        }
        return write_token_metrics(
            Path(out_dir),
            self.view_results(),
            self.view_indices,
            list(self.info.state_names),
            provenance,
            Path(source),
            debiased_cka=self.debiased_cka,
        )
