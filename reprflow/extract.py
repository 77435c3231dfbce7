"""The extraction engine: prompts -> tokenizer -> model (hooked) -> captured batches -> sinks.

Follow one batch through this file:

1. **Prompts and tokens.** :func:`_check_prompts` checks the records;
   :class:`reprflow.token_ids.TokenIds` turns them into token ids (checked against each
   record's ``n_tokens``) in a background thread, window by window, in the order they
   are forwarded, so the first batch starts after one window's tokenisation.
2. **Plan.** Prompts are cut into *windows* of ``batch_size * window_batches``
   consecutive prompts (the store's unit of writing and resumption); inside a window
   :func:`plan_window_batches` sorts them by length (longest first, so an out-of-memory
   error shows up on the first batch) and cuts batches, which reduces padding while
   every window still writes whole, aligned chunks. Prompts of one task and length are
   near-equal in length, so a window (default 8 batches) is enough. Stored sample order
   stays the prompt-file order.
3. **Forward and capture.** :func:`capture_batches` pads each batch on the right
   (:func:`_pad_right`; right padding is exact for causal models), sends it up from
   pinned memory without blocking (:func:`reprflow.transfer.to_device`) and runs
   :func:`reprflow.capture.forward_states`, whose hooks keep the last *real* token of
   every row and the full states of the chosen token prompts -- on the device. It yields
   one :class:`reprflow.sinks.CapturedStates` per batch.
4. **Sinks.** :func:`reprflow.sinks.feed` hands every batch to every sink; each decides
   what leaves the device: :class:`reprflow.sinks.ZarrStoreSink` (a resumable, atomic
   store; it owns resume and the on-disk dtype), :class:`reprflow.sinks.MemorySink`
   (numpy arrays, :func:`reprflow.collect_states`), :class:`reprflow.sinks.TokenMetricsSink`
   (token metrics on the device, results only).

:func:`extract_activations` is that loop with a store sink (plus any other sinks).
Full token states are kept for ``n_token_prompts`` evenly spaced prompts of the file
(:func:`token_prompt_ids`, a deterministic subset), unpadded to their own length.

Overlap: the main thread only launches work. Token ids are made ahead by the tokenizer
thread; inputs go up without blocking; captured states come down through
:func:`reprflow.transfer.copy_to_host` (pinned buffers, a side CUDA stream); the sinks'
background threads (:class:`reprflow.sinks.BackgroundWriter`) wait for the copies, check,
compress and write, or compute the streamed token metrics on their own CUDA stream
(:mod:`reprflow.side_stream`), while the next batches are computed; an error there is
re-raised in the caller. A fresh store is created by the writer thread at its first write,
once every prompt is tokenised (its fingerprint holds the digest of all token ids), so a
kill before that leaves nothing and a kill after it a resumable partial store. The attr
``timing["stages"]`` (and :attr:`ExtractionSummary.stages`) records where the time went, and
on a GPU ``timing["peak_gpu_bytes"]`` the loop's peak of allocated device memory.
With ``overlap=False`` nothing runs in the background (same values and files).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from reprflow.capture import forward_states, last_token_index, state_names
from reprflow.models.hf_view import verify_hf_view
from reprflow.devices import resolve_device
from reprflow.errors import PromptError, ReprflowError
from reprflow.fastpath import prepare_model
from reprflow.models.layouts import Layout, get_layout, view_indices
from reprflow.sinks import CapturedStates, RunInfo, Sink, ZarrStoreSink, feed
from reprflow.store import StoreSpec, open_store
from reprflow.token_ids import TokenIds
from reprflow.transfer import to_device

logger = logging.getLogger(__name__)

__all__ = [
    "ExtractionSummary",
    "capture_batches",
    "extract_activations",
    "plan_window_batches",
    "run_info",
    "token_prompt_ids",
]


@dataclass(frozen=True)
class ExtractionSummary:
    """What one call of :func:`extract_activations` did.

    Attributes
    ----------
    path : Path
        The final store.
    n_samples : int
        Samples in the store (its shard range).
    n_token_prompts : int
        Prompts with full token states in the store.
    windows_written : int
        Windows computed and written by this call.
    windows_resumed : int
        Windows found already written by a previous (killed) run and skipped.
    tokens : int
        Real (unpadded) tokens forwarded by this call.
    padded_tokens : int
        Tokens forwarded including padding.
    seconds : float
        Wall time of the forward/write loop of this call.
    tokens_per_s : float
        ``tokens / seconds`` (0.0 when nothing was computed).
    store_dtype : str
        On-disk dtype of ``last`` and ``tokens`` (the store attr ``store_dtype``).
    already_complete : bool
        True when the complete store already existed and nothing was written.
    stages : dict
        Where the loop's time went (seconds; the attr ``timing["stages"]``):
        ``tokenise`` (tokenizer thread busy), ``tokenise_wait`` (the launching thread
        waiting for token ids), and per sink its ``profile()`` (store: ``copy_wait``,
        ``write``, ``create``, ``stall``, ``drain``; token metrics: ``compute``, ``stall``,
        ``drain``); ``stall`` is the launching thread blocked on a full writer queue.
    """

    path: Path
    n_samples: int
    n_token_prompts: int
    windows_written: int
    windows_resumed: int
    tokens: int
    padded_tokens: int
    seconds: float
    tokens_per_s: float
    store_dtype: str | None
    already_complete: bool
    stages: dict = field(default_factory=dict)


def token_prompt_ids(n_prompts: int, n_token_prompts: int) -> list[int]:
    """The prompts whose full token states are stored: ``n_token_prompts`` evenly spaced ones.

    ``floor(j * n_prompts / n_token_prompts)`` for ``j = 0 .. n - 1`` (capped at
    ``n_prompts``; prompt 0 always included). Spacing them out, rather than taking the
    first ones, spreads their large writes over the whole run, where the writer thread
    overlaps them with compute, and gives every shard its share.
    """
    n = min(max(int(n_token_prompts), 0), n_prompts)
    return [j * n_prompts // n for j in range(n)]


def plan_window_batches(lengths: np.ndarray, *, batch_size: int) -> list[np.ndarray]:
    """Split one window into length-bucketed batches.

    Parameters
    ----------
    lengths : ndarray of shape (n_window,)
        Token counts of the window's prompts, in file order.
    batch_size : int
        Prompts per batch.

    Returns
    -------
    list of ndarray of int
        Positions into ``lengths``; longest prompts first (stable on ties), each batch at
        most ``batch_size`` long; together a permutation of ``range(n_window)``.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _pad_right(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask, both [batch, max_len] int64, right padded."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def _check_prompts(prompts: Sequence[Mapping[str, Any]], *, prompt_file: str, max_context: int | None) -> None:
    if not prompts:
        raise PromptError(f"{prompt_file}: no prompts to extract")
    for key in ("prompt", "label", "n_tokens"):
        bad = next((i for i, p in enumerate(prompts) if key not in p), None)
        if bad is not None:
            raise PromptError(f"{prompt_file}: record {bad} (id {prompts[bad].get('id')!r}) has no {key!r} field")
    if max_context is not None:
        longest = max(range(len(prompts)), key=lambda i: prompts[i]["n_tokens"])
        n = prompts[longest]["n_tokens"]
        if n > max_context:
            raise ReprflowError(
                f"{prompt_file}: prompt {prompts[longest].get('id', longest)!r} has {n} tokens, beyond the "
                f"model's context limit of {max_context} tokens. In the workflow, set `max_context: "
                f"{max_context}` on this model's entry under `models:` in the config: it then skips the lengths "
                f"above it for this model and caps the prompt sets it reads at {max_context} tokens; from "
                f"`reprflow extract` or a notebook, pass prompts of at most {max_context} tokens"
            )


def _content_sha256(ids: Mapping[int, Sequence[int]]) -> str:
    """sha256 of the model input: (index, length, token ids) of each prompt, by ascending index."""
    digest = hashlib.sha256()
    for i in sorted(ids):
        digest.update(np.asarray([i, len(ids[i])], dtype=np.int64).tobytes())
        digest.update(np.asarray(ids[i], dtype=np.int64).tobytes())
    return digest.hexdigest()


def run_info(model: torch.nn.Module, n_prompts: int, layout: Layout | None = None) -> RunInfo:
    """State names, layer views and width of ``model``, for the sinks (:class:`reprflow.sinks.RunInfo`)."""
    layout = get_layout(model) if layout is None else layout
    n_blocks = len(layout.block_list(model))
    return RunInfo(
        state_names=tuple(state_names(n_blocks)),
        views=view_indices(layout, n_blocks),
        hidden=int(model.get_input_embeddings().embedding_dim),
        n_prompts=n_prompts,
    )


def capture_batches(
    model: torch.nn.Module,
    ids: Mapping[int, Sequence[int]],
    windows: Sequence[tuple[int | None, Sequence[int]]],
    *,
    batch_size: int,
    pad_id: int,
    device: torch.device,
    token_prompts: frozenset[int] = frozenset(),
    layout: Layout | None = None,
    progress: tqdm | None = None,
    verify_hf: bool = True,
) -> Iterator[CapturedStates]:
    """The generator of captured batches: tokens -> padded batch -> hooked forward -> states on the device.

    Parameters
    ----------
    model : torch.nn.Module
        A causal LM already on ``device``, in eval mode.
    ids : mapping of int to sequence of int
        Token ids of every prompt index that appears in ``windows`` (a dict, or a
        :class:`reprflow.token_ids.TokenIds` still filling up: a window waits for its ids).
    windows : sequence of (window or None, prompt indices)
        Groups of prompts, computed in order; each is length-bucketed into batches of
        ``batch_size`` (:func:`plan_window_batches`). The window label travels with its
        batches (None: not a store window).
    pad_id : int
        Right-padding token id (its value never matters: padded positions are never read).
    token_prompts : frozenset of int
        Prompts whose full token states are captured (``CapturedStates.tokens``).
    progress : tqdm, optional
        Advanced by the real tokens of every batch.
    verify_hf : bool
        Before the first batch, check that the captured hf view reproduces
        ``output_hidden_states`` on its first two rows
        (:func:`reprflow.models.hf_view.verify_hf_view`): bitwise on the CPU, within
        ``4e-3 * max|x|`` on CUDA (bf16 kernels may not be bitwise reproducible). A mismatch
        stops the run with an error naming the model type and the state.

    Yields
    ------
    CapturedStates
        One per forward pass, states on ``device``; ``closes_window`` on the last batch of
        each window.
    """
    layout = get_layout(model) if layout is None else layout
    for w, members in windows:
        members = list(members)
        batches = plan_window_batches(np.array([len(ids[i]) for i in members]), batch_size=batch_size)
        for b, batch in enumerate(batches):
            rows = tuple(members[int(j)] for j in batch)
            input_ids, mask = _pad_right([ids[i] for i in rows], pad_id)
            last_token_index(mask)  # checked here, on the host: no device sync per batch
            token_rows = [r for r, i in enumerate(rows) if i in token_prompts]
            if verify_hf:  # once per run, on the first batch
                verify_hf_view(
                    model,
                    to_device(input_ids, device),
                    to_device(mask, device),
                    layout=layout,
                    rtol=4e-3 if device.type == "cuda" else 0.0,
                )
                verify_hf = False
            captured = forward_states(
                model,
                to_device(input_ids, device),
                to_device(mask, device),
                layout=layout,
                token_rows=token_rows or None,
                check_padding=False,
                row_lengths=[len(ids[i]) for i in rows],
            )
            if progress is not None:
                progress.update(int(mask.sum()))
            yield CapturedStates(
                rows=rows,
                lengths=tuple(len(ids[i]) for i in rows),
                window=w,
                closes_window=b == len(batches) - 1,
                states=captured,
                token_prompts=tuple(rows[r] for r in token_rows),
            )


def _store_sink(
    out_path: str | os.PathLike,
    prompts: Sequence[Mapping[str, Any]],
    ids: Mapping[int, Sequence[int]],
    info: RunInfo,
    attrs: Mapping[str, Any],
    *,
    sample_range: tuple[int, int],
    token_ids_global: Sequence[int],
    batch_size: int,
    window_batches: int,
    store_dtype: str,
    compress: bool,
    compute_dtype: torch.dtype,
    device: torch.device,
    overlap: bool,
) -> ZarrStoreSink:
    """The store sink of one extraction: its spec, attrs, labels, lengths and input digest.

    Token counts come from the records' ``n_tokens``: ``ids`` checks each against the
    tokenizer, and the input digest (a callable: it waits for every id) is taken only when
    the store is opened or created, so a store is never created from a record that disagrees.
    """
    start, stop = sample_range
    n_tok = lambda i: int(prompts[i]["n_tokens"])  # noqa: E731
    token_ids = tuple(i for i in token_ids_global if start <= i < stop)
    spec = StoreSpec(
        n_states=len(info.state_names),
        hidden=info.hidden,
        n_samples_total=len(prompts),
        sample_start=start,
        sample_stop=stop,
        batch_size=batch_size,
        window_batches=window_batches,
        token_prompt_ids=token_ids,
        max_len=max((n_tok(i) for i in token_ids_global), default=0),  # same for every shard
        store_dtype=store_dtype,
        compress=compress,
    )
    dtype_name = str(compute_dtype).removeprefix("torch.")
    if attrs.get("dtype", dtype_name) != dtype_name:
        raise ReprflowError(
            f"{out_path}: attrs['dtype'] is {attrs['dtype']!r} but compute_dtype is {dtype_name!r}; "
            "attrs['dtype'] records the compute dtype -- pass the same value or leave it out"
        )
    store_attrs = {
        **attrs,
        "dtype": dtype_name,
        "compute_device": device.type,
        "state_names": list(info.state_names),
        "views": info.views,
    }
    return ZarrStoreSink(
        out_path,
        spec,
        attrs=store_attrs,
        labels=np.array([int(prompts[i]["label"]) for i in range(start, stop)], dtype=np.int64),
        n_tokens=np.array([n_tok(i) for i in range(start, stop)], dtype=np.int64),
        lengths=np.array([n_tok(i) for i in token_ids], dtype=np.int64),
        content_sha256=lambda: _content_sha256({i: ids[i] for i in (*range(start, stop), *token_ids)}),
        overlap=overlap,
    )


def extract_activations(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[Mapping[str, Any]],
    out_path: str | os.PathLike,
    *,
    batch_size: int,
    n_token_prompts: int,
    attrs: Mapping[str, Any],
    store_dtype: str = "auto",
    device: str | torch.device = "cpu",
    compute_dtype: torch.dtype = torch.float32,
    progress: bool = True,
    max_context: int | None = None,
    sample_range: tuple[int, int] | None = None,
    window_batches: int = 8,
    compress: bool = False,
    overlap: bool = True,
    sinks: Sequence[Sink] = (),
    startup: Mapping[str, float] | None = None,
) -> ExtractionSummary:
    """Run ``prompts`` through ``model`` and write the captured states to a store.

    Parameters
    ----------
    model : torch.nn.Module
        A Hugging Face causal LM whose ``config.model_type`` has a layout. It is moved to
        ``device`` and ``compute_dtype`` in place and put in eval mode.
    tokenizer : PreTrainedTokenizerFast
        The tokenizer the prompt file was built with (``reprflow.prompts.load_tokenizer``);
        its ``pad_token_id`` pads on the right.
    prompts : sequence of dict
        Records of the prompt file (``reprflow.prompts.read_prompt_set``): ``prompt``,
        ``label``, ``n_tokens`` (checked against the tokenizer), ``id``.
    out_path : path-like
        Final store path (``results/activations/{model}/{init}/{task}_n{length}.zarr``,
        or a ``shard_path`` of it).
    batch_size : int
        Prompts per forward pass.
    n_token_prompts : int
        Full token states are stored for ``n_token_prompts`` evenly spaced prompts of the
        file (:func:`token_prompt_ids`) (capped at the number of prompts).
    attrs : mapping
        Group attrs from the caller: ``model``, ``model_id``, ``revision``, ``family``,
        ``init``, ``task``, ``length``, ``tokenizer``, ``prompt_file``, ``prompt_sha256``
        (see docs/CONTRACTS.md), plus any extra JSON-able keys. Added here: ``dtype``
        (the compute dtype; if given it must match ``compute_dtype``), ``compute_device``,
        ``state_names`` and ``views``; the store adds ``store_dtype`` and the rest.
    store_dtype : {"auto", "float16", "float32"}
        On-disk dtype; see :mod:`reprflow.store` (float16 is overflow-checked).
    device : str or torch.device
        Where the forward passes run (``"auto"``: :func:`reprflow.devices.resolve_device`).
    compute_dtype : torch.dtype
        dtype of the forward passes (bf16 on GPU, float32 on CPU).
    progress : bool
        Show a tqdm bar (tokens/s).
    max_context : int, optional
        Model's context limit; a prompt longer than it raises :class:`ReprflowError`.
    sample_range : (int, int), optional
        Write only samples ``[start, stop)`` (one shard). Default: all prompts.
    window_batches : int
        Batches per window (unit of bucketing, writing and resumption).
    compress : bool
        Blosc zstd-1 + byte shuffle on ``last`` and ``tokens`` (off by default: it saves
        only 6-9% on activations, see :mod:`reprflow.store`).
    overlap : bool
        Write windows in a background thread while the next ones are computed.
    sinks : sequence of Sink
        More consumers of the same forward passes, e.g. a
        :class:`reprflow.sinks.TokenMetricsSink` (prompt indices are prompt-file
        indices). Prompts they need that the store does not compute in this call
        (windows a previous run wrote, or the whole set if the store is complete) are
        forwarded for them alone. Closed (not written) here; the caller writes their results.
    startup : mapping of str to float, optional
        Seconds the caller spent before this call, by step (e.g. the workflow's ``process``,
        ``prompts``, ``tokenizer``, ``model``): stored as ``timing["startup"]``, like the rest
        of ``timing`` outside the writer fingerprint.

    Returns
    -------
    ExtractionSummary

    Raises
    ------
    ReprflowError
        A prompt is longer than ``max_context``.
    PromptError
        Empty prompt list, a record without ``prompt``/``label``/``n_tokens``, or a token
        count that disagrees with ``tokenizer``.
    StoreError
        Non-finite activations, or float16 overflow (see :mod:`reprflow.store`).

    Notes
    -----
    Stored sample order is the prompt-file order; batches are length-bucketed within
    windows only (see the module docstring). The attr ``timing`` holds ``tokens``,
    ``padded_tokens``, ``seconds`` and ``tokens_per_s`` of the run that completed the
    store (a resumed run counts only its own work).
    """
    prompt_file = str(attrs.get("prompt_file", "<prompts>"))
    _check_prompts(prompts, prompt_file=prompt_file, max_context=max_context)
    n_total = len(prompts)
    start, stop = sample_range if sample_range is not None else (0, n_total)
    token_ids_global = token_prompt_ids(n_total, n_token_prompts)
    extra = sorted({i for s in sinks for i in s.token_prompts})  # prompts other sinks need
    if extra and not 0 <= extra[0] <= extra[-1] < n_total:
        raise ReprflowError(
            f"{prompt_file}: a sink asks for prompts {extra[:3]}...{extra[-1]}, but the file has "
            f"{n_total} prompts (indices 0..{n_total - 1})"
        )
    if tokenizer.pad_token_id is None:
        raise ReprflowError("tokenizer has no pad token; load it with reprflow.prompts.load_tokenizer")
    # tokenised in the order a fresh store forwards them: its windows, then what other sinks need
    others = sorted((set(token_ids_global) | set(extra)).difference(range(start, stop)))
    with TokenIds(
        tokenizer,
        prompts,
        [*range(start, stop), *others],
        prompt_file=prompt_file,
        chunk=batch_size * window_batches,
        background=overlap,
    ) as ids:
        layout = get_layout(model)
        info = run_info(model, n_total, layout)
        device = resolve_device(device)
        store = _store_sink(
            out_path,
            prompts,
            ids,
            info,
            attrs,
            sample_range=(start, stop),
            token_ids_global=token_ids_global,
            batch_size=batch_size,
            window_batches=window_batches,
            store_dtype=store_dtype,
            compress=compress,
            compute_dtype=compute_dtype,
            device=device,
            overlap=overlap,
        )
        spec = store.spec
        done_attrs = dict(path=Path(out_path), n_samples=spec.n_samples, n_token_prompts=len(spec.token_prompt_ids))
        complete = store.open()
        pending = [] if complete else store.pending_windows
        windows: list[tuple[int | None, Sequence[int]]] = [(w, range(*spec.window_range(w))) for w in pending]
        computed = {i for _, members in windows for i in members}
        rest = [i for i in extra if i not in computed]  # forwarded for the other sinks only
        windows += [(None, rest[i : i + spec.window]) for i in range(0, len(rest), spec.window)]
        if complete and not windows:
            return ExtractionSummary(
                **done_attrs,
                windows_written=0,
                windows_resumed=spec.n_windows,
                tokens=0,
                padded_tokens=0,
                seconds=0.0,
                tokens_per_s=0.0,
                store_dtype=str(open_store(out_path).attrs["store_dtype"]),
                already_complete=True,
            )
        model.to(device=device, dtype=compute_dtype)
        model.eval()
        fastpath = prepare_model(model)  # kernels chosen for this device; recorded in attrs and the log
        logger.info("fast path for %s: %s", Path(out_path).name, fastpath)

        all_sinks = list(sinks) if complete else [store, *sinks]
        for sink in all_sinks:
            sink.start(info)
        real = sum(int(prompts[i]["n_tokens"]) for _, members in windows for i in members)
        bar = tqdm(
            total=real, unit="tok", unit_scale=True, disable=not progress, desc=Path(out_path).name, dynamic_ncols=True
        )
        padded = [0]

        def count_padding(batches: Iterator[CapturedStates]) -> Iterator[CapturedStates]:
            for batch in batches:
                padded[0] += len(batch.rows) * max(batch.lengths)
                yield batch

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)  # the loop's peak, recorded in timing
        t0 = time.perf_counter()
        try:
            batches = capture_batches(
                model,
                ids,
                windows,
                batch_size=batch_size,
                pad_id=tokenizer.pad_token_id,
                device=device,
                token_prompts=frozenset().union(*(s.token_prompts for s in all_sinks)),
                layout=layout,
                progress=bar,
            )
            feed(count_padding(batches), all_sinks)
        finally:
            bar.close()
        seconds = time.perf_counter() - t0
        stages = {
            "tokenise": ids.busy_s,
            "tokenise_wait": ids.wait_s,
            **{s.name: s.profile() for s in all_sinks if hasattr(s, "profile")},
        }
        padded = padded[0]
        rate = real / seconds if seconds > 0 else 0.0
        resumed = spec.n_windows - len(pending)
        if not complete:
            store.finalize(
                {
                    "timing": {
                        "tokens": real,
                        "padded_tokens": padded,
                        "batch_size": batch_size,  # prompts per forward pass (an execution setting)
                        "seconds": seconds,
                        "tokens_per_s": rate,
                        "stages": stages,
                        **(
                            {"peak_gpu_bytes": int(torch.cuda.max_memory_allocated(device))}
                            if device.type == "cuda"
                            else {}
                        ),
                        **({"startup": dict(startup)} if startup else {}),
                    },
                    "fastpath": fastpath,
                }
            )
        logger.info(
            "%s: %d prompts, %d tokens in %.2f s = %.0f tok/s (padding %.1f%%%s)",
            out_path,
            spec.n_samples,
            real,
            seconds,
            rate,
            100.0 * (padded - real) / max(padded, 1),
            f", {resumed} of {spec.n_windows} windows resumed" if resumed else "",
        )
        logger.info("%s: where the time went (s): %s", Path(out_path).name, stages)
        return ExtractionSummary(
            **done_attrs,
            windows_written=len(pending),
            windows_resumed=resumed,
            tokens=real,
            padded_tokens=padded,
            seconds=seconds,
            tokens_per_s=rate,
            store_dtype=str(open_store(out_path).attrs["store_dtype"]),
            already_complete=complete,
            stages=stages,
        )
