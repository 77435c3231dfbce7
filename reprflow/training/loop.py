"""The training loop: seeded, resumable after a kill, logged, saved with ``save_pretrained``.

Conventions
-----------
- The token stream is cut into non-overlapping windows of ``context + 1`` tokens; epoch ``e``
  visits them in the order ``numpy.random.default_rng([data_seed, e]).permutation``. Sample
  ``i`` (step ``i // batch_size``) is therefore a pure function of ``(data_seed, i)``: the
  data position is the step counter, and every family with the same corpus, tokenizer,
  ``context``, ``batch_size`` and ``data_seed`` sees the same token stream in the same order.
- Loss: mean next-token cross-entropy in nats over the ``context`` predictions of each window,
  over the full vocabulary, computed chunk by chunk without a full logits tensor
  (:mod:`reprflow.training.head_loss`). On the CPU everything runs in float32; on CUDA the
  output projection runs in bfloat16 and its softmax in float32 (:func:`_loss`).
- Learning rate: linear warmup over ``warmup_steps``, then cosine decay to
  ``lr * min_lr_ratio`` at the last step. AdamW; weight decay on matrices only (not on
  biases, norms or the SSM's ``A_log``/``D``/``dt_bias``).
- GPT-Neo computes attention scores ``q . k`` without transformers' usual ``1/sqrt(head_dim)``.
  With ``gpt_neo_query_scale`` (default) its ``q_proj`` weights are initialised times
  ``s = 1/sqrt(head_dim)`` and trained with learning rate ``s * lr`` and weight decay
  ``weight_decay / s``: under AdamW (whose step does not depend on the gradient's scale) the
  weights are then ``s`` times those of a model with scaled attention, i.e. the same function,
  up to Adam's eps and gradient clipping (:func:`_query_scaled_groups`). The saved model is a
  plain GPT-Neo; nothing changes at inference.
- A checkpoint (model, optimizer, scheduler, RNG, step, metric rows, recipe digest) is
  written atomically every ``checkpoint_every`` steps; a restarted run resumes from it when
  its recipe digest matches, and the final weights equal those of an uninterrupted run.
- On CUDA the forward runs under bf16 autocast with float32 master weights. Models run their
  own transformers code (Mamba2: mamba_ssm's Triton kernels when that package imports),
  except Mamba-1, whose path :func:`reprflow.training.kernels.prepare_training` picks:
  mamba_ssm's compiled kernels through transformers on CUDA when they import, else the
  project's training forward (same weights and operations, a scan whose backward is linear in
  the context). The path is logged and recorded in the summary (``train_kernels``).
- :func:`train_step` is the one optimizer step; the loop and benchmarks/train_gpu.py call it.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from tqdm import tqdm

import reprflow
from reprflow.atomic import atomic_write, atomic_write_bytes, atomic_write_dir
from reprflow.devices import resolve_device, torch_threads
from reprflow.errors import ConfigError
from reprflow.models.init_schemes import build_from_config
from reprflow.prompts.tokenizers import load_tokenizer, tokenizer_file
from reprflow.training.baseline import unigram_cross_entropy
from reprflow.training.corpus import load_documents, split_documents, tokenize_documents
from reprflow.training.head_loss import linear_cross_entropy
from reprflow.training.kernels import describe_kernels, prepare_training
from reprflow.training.recipe import TrainSpec
from reprflow.training.sizing import count_params, family_config, match_families, padded_vocab, train_flops_per_token
from reprflow.transfer import to_device

logger = logging.getLogger(__name__)

__all__ = [
    "METRIC_COLUMNS",
    "PROVENANCE_FILE",
    "Streams",
    "build_config",
    "load_streams",
    "initial_model",
    "train_model",
    "train_step",
]

PROVENANCE_FILE = "reprflow_train.json"
H200_BF16_FLOPS = 782e12  # bf16 matmul rate measured on the H200 (benchmarks/kernels.py): the MFU's peak
METRIC_COLUMNS = ("step", "tokens", "train_loss", "val_loss", "lr", "tokens_per_s", "elapsed_s")


class Streams:
    """Train and validation token streams of one corpus and tokenizer (int32, 1-D)."""

    def __init__(self, train: np.ndarray, val: np.ndarray, vocab_size: int, tokenizer: str, corpus: str):
        self.train, self.val, self.vocab_size, self.tokenizer, self.corpus = train, val, vocab_size, tokenizer, corpus

    def unigram(self) -> float:
        return unigram_cross_entropy(self.train, self.val, self.vocab_size)


#: Tokenized corpora, reused by every model that reads the same (corpus, tokenizer, split);
#: copy this folder to a machine that lacks the corpus's package (e.g. dict-gcide) to train there.
TOKEN_CACHE = Path(__file__).resolve().parents[2] / "data" / "corpus" / "tokens"


def load_streams(spec: TrainSpec, tokenizer: str, *, cache_dir: str | os.PathLike | None = TOKEN_CACHE) -> Streams:
    """Tokenize ``spec.corpus`` with the shipped ``tokenizer`` and split it (see corpus.py).

    The streams are cached as ``{cache_dir}/{corpus}_{tokenizer}_val{val_fraction}.npz``
    (written atomically) together with the sha256 of the ``tokenizer.json`` that made them. A
    cached file is used only if that digest matches the tokenizer loaded now (a tokenizer
    rebuilt under the same name re-tokenizes the corpus); it is then used as is, even where the
    corpus is not installed. A cache from another tokenizer on a machine without the corpus is
    one :class:`ConfigError` naming both.
    """
    tok = load_tokenizer(tokenizer)
    vocab = padded_vocab(len(tok))
    digest = hashlib.sha256(tokenizer_file(tokenizer).read_bytes()).hexdigest()
    cache = Path(cache_dir) / f"{spec.corpus}_{tokenizer}_val{spec.val_fraction}.npz" if cache_dir else None
    stale = None
    if cache is not None and cache.is_file():
        with np.load(cache) as data:
            cached = str(data["tokenizer_sha256"]) if "tokenizer_sha256" in data.files else None
            if cached == digest:
                return Streams(data["train"], data["val"], vocab, tokenizer, spec.corpus)
            stale = cached or "no digest (an older cache)"
        logger.info(
            "%s: made by another tokenizer (%s; %s is %s): tokenizing again", cache, stale, tokenizer, digest[:12]
        )
    try:
        docs = load_documents(spec.corpus)
    except ConfigError as err:
        if stale is None:
            raise
        raise ConfigError(
            f"{cache}: its token ids come from another tokenizer ({stale}, not {tokenizer} "
            f"{digest[:12]}), and the corpus is not here to tokenize again: {err}"
        ) from err
    train_docs, val_docs = split_documents(docs, spec.val_fraction)
    train = tokenize_documents(train_docs, tok)
    val = tokenize_documents(val_docs, tok)
    if cache is not None:

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, train=train, val=val, tokenizer_sha256=np.array(digest))

        atomic_write(cache, write)
    return Streams(train, val, vocab, tokenizer, spec.corpus)


def build_config(family: str, spec: TrainSpec, *, vocab_size: int, positions: int | None = None):
    """The architecture of a trained model: :func:`~reprflow.training.sizing.family_config` at
    the recipe's width; Transformers get ``depth`` layers, SSMs the matched block count and
    state size (:func:`~reprflow.training.sizing.match_families`).
    ``positions`` (>= ``spec.context``) sizes the Transformers' position table, so a model can
    read prompts longer than it was trained on."""
    shape = dict(width=spec.width, depth=spec.depth, vocab_size=vocab_size, context=max(spec.context, positions or 0))
    if family in ("mamba", "mamba2"):
        return match_families([family], **shape)[family].config
    config = family_config(family, **shape)
    if family == "gpt_neo":  # the local window follows the trained context, not the position table
        config.window_size = max(1, min(256, spec.context // 4))
    return config


def untrained_config(family: str, spec: TrainSpec, tokenizer: str, *, positions: int | None = None):
    """The architecture ``train_model`` builds for a recipe, without its corpus: :func:`build_config`
    at the tokenizer's padded vocabulary (as :func:`load_streams` pads it). For a ``train:`` entry
    not trained yet: its random-init arm, its size."""
    vocab = padded_vocab(len(load_tokenizer(tokenizer)))
    return build_config(family, spec, vocab_size=vocab, positions=positions)


def _windows(stream: np.ndarray, context: int) -> np.ndarray:
    n = len(stream) // (context + 1)
    if n < 1:
        raise ConfigError(
            f"train.context {context}: the token stream ({len(stream)} tokens) is shorter than one window"
        )
    return stream[: n * (context + 1)].reshape(n, context + 1)


@functools.lru_cache(maxsize=2)
def _epoch_order(n: int, data_seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([data_seed, epoch]).permutation(n)


def _batch(windows: np.ndarray, step: int, batch_size: int, data_seed: int) -> np.ndarray:
    """Rows ``step * batch_size ...`` of the sample sequence (module docstring)."""
    n = len(windows)
    rows = []
    for i in range(step * batch_size, (step + 1) * batch_size):
        epoch, pos = divmod(i, n)
        rows.append(windows[_epoch_order(n, data_seed, epoch)[pos]])
    return np.stack(rows)


def _lr_at(step: int, spec: TrainSpec, n_steps: int) -> float:
    if step < spec.warmup_steps:
        return spec.lr * (step + 1) / spec.warmup_steps
    progress = (step - spec.warmup_steps) / max(1, n_steps - spec.warmup_steps)
    floor = spec.lr * spec.min_lr_ratio
    return floor + 0.5 * (spec.lr - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


def _query_scale(model: torch.nn.Module, spec: TrainSpec) -> float | None:
    """``1/sqrt(head_dim)`` for a GPT-Neo trained with ``gpt_neo_query_scale``, else None."""
    config = model.config
    if config.model_type != "gpt_neo" or not spec.gpt_neo_query_scale:
        return None
    return 1.0 / math.sqrt(config.hidden_size // config.num_heads)


def _query_scaled_groups(model: torch.nn.Module, spec: TrainSpec) -> set[str]:
    """Names of the parameters trained in the scaled-attention parameterization (module
    docstring): GPT-Neo's ``q_proj`` weights, or none."""
    if _query_scale(model, spec) is None:
        return set()
    return {n for n, _ in model.named_parameters() if n.endswith("attn.attention.q_proj.weight")}


def initial_model(config, spec: TrainSpec, device: torch.device | str, *, dtype: torch.dtype = torch.float32):
    """The model a run starts from: ``config`` with its family's own init seeded by
    ``spec.seed`` (:func:`~reprflow.models.init_schemes.build_from_config`), and GPT-Neo's
    ``q_proj`` weights times ``1/sqrt(head_dim)`` under ``gpt_neo_query_scale`` (module
    docstring; :func:`_optimizer` gives them the matching learning rate)."""
    model = build_from_config(config, seed=spec.seed, dtype=dtype, device=device)
    scale, queries = _query_scale(model, spec), _query_scaled_groups(model, spec)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in queries:
                p.mul_(scale)
    return model


def _optimizer(model: torch.nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    """AdamW; each group's ``lr_scale`` multiplies the scheduled learning rate."""
    if spec.optimizer != "adamw":
        raise ConfigError(f"train.optimizer {spec.optimizer!r}: only 'adamw' is implemented")
    scaled = _query_scaled_groups(model, spec)
    decay, no_decay, query = [], [], []
    for name, p in model.named_parameters():
        (query if name in scaled else decay if p.ndim >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": spec.weight_decay, "lr_scale": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
    ]
    if query:
        s = _query_scale(model, spec)
        groups.append({"params": query, "weight_decay": spec.weight_decay / s, "lr_scale": s})
    # fused: one kernel over all tensors; on the CPU ~20x faster than the per-op foreach path
    # for the 3.2M-row embedding of the micro models (docs/training.md, Measurements)
    return torch.optim.AdamW(groups, lr=spec.lr, betas=spec.betas, fused=True)


def _loss(
    model,
    x: torch.Tensor,
    device: torch.device,
    *,
    fused_head: bool = True,
    head_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) of windows ``x`` of shape (batch, context + 1).

    The body runs under bf16 autocast on CUDA, in float32 on the CPU. The output projection
    and loss go through :func:`~reprflow.training.head_loss.linear_cross_entropy` (chunked; no
    full logits tensor), its matmuls in ``head_dtype``: by default bfloat16 on CUDA and
    float32 on the CPU, where a CPU without bf16 matrix units (AVX2) emulates bf16 products
    and the head then runs ~11x slower than in float32 (docs/training.md, "Where a micro
    model's training step goes"); softmax and loss are float32 everywhere.
    ``fused_head=False`` is the naive form, ``F.cross_entropy(model(x).logits.float(), y)``
    (benchmarks/train_gpu.py compares the two).
    """
    cuda = device.type == "cuda"
    targets = x[:, 1:].reshape(-1)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda):
        if not fused_head:
            logits = model(input_ids=x[:, :-1], use_cache=False).logits
            return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets)
        hidden = model.base_model(input_ids=x[:, :-1], use_cache=False).last_hidden_state
    head = model.get_output_embeddings()
    if getattr(head, "bias", None) is not None:
        raise ValueError(f"{type(model).__name__}: the output projection has a bias; linear_cross_entropy takes none")
    if head_dtype is None:
        head_dtype = torch.bfloat16 if cuda else torch.float32
    return linear_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), head.weight, targets, compute_dtype=head_dtype)


def train_step(
    model,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    device: torch.device,
    *,
    lr: float,
    grad_clip: float | None,
    fused_head: bool = True,
) -> torch.Tensor:
    """One training step on windows ``x`` (batch, context + 1), token ids on ``device``:
    set the learning rate (``lr`` times each group's ``lr_scale``), loss (:func:`_loss`), backward, gradient
    clipping (if ``grad_clip``), AdamW step. Returns the loss, detached, not synchronised
    (``float()`` it to wait for the step)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    loss = _loss(model, x, device, fused_head=fused_head)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.detach()


@torch.no_grad()
def _val_loss(model, val_windows: np.ndarray, device: torch.device, batch_size: int) -> float:
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(val_windows), batch_size):
        x = torch.as_tensor(val_windows[start : start + batch_size], dtype=torch.long, device=device)
        n = x[:, 1:].numel()
        total += float(_loss(model, x, device)) * n
        count += n
    model.train()
    return total / count


def _save_checkpoint(path: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(buf.getvalue(), path)


def _save_model_dir(model, out_dir: Path, provenance: dict) -> None:
    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")

    atomic_write_dir(out_dir, write)


def _write_metrics(path: Path, rows: list[dict]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)


def train_model(
    family: str,
    spec: TrainSpec,
    *,
    streams: Streams,
    out_dir: str | os.PathLike,
    metrics_path: str | os.PathLike,
    summary_path: str | os.PathLike,
    checkpoint_path: str | os.PathLike,
    positions: int | None = None,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """Train one model and save it; resume from ``checkpoint_path`` if a matching one exists.

    Parameters
    ----------
    family : str
        ``gpt_neo``, ``gpt_neox``, ``mamba`` or ``mamba2``.
    spec : TrainSpec
        The recipe.
    streams : Streams
        Token streams from :func:`load_streams`.
    out_dir : path
        The model folder (``save_pretrained`` + ``reprflow_train.json``), written atomically.
    metrics_path : path
        CSV with :data:`METRIC_COLUMNS`: one row at step 0 and every ``eval_every`` steps and
        at the last step; ``train_loss`` is the mean over the steps since the previous row.
    summary_path : path
        JSON: parameter counts, final validation loss, unigram baseline, throughput.
    checkpoint_path : path
        Resumable state; removed once the model is saved.
    positions : int, optional
        Position-table size for Transformers (the model entry's ``max_context``).
    on_step : callable, optional
        Called with the step number after each optimizer step (tests use it to simulate a kill).

    Returns
    -------
    dict
        The summary.
    """
    device = resolve_device(spec.device, key="train.device")  # auto: a free GPU of several, else the CPU
    # the CPU thread count is process-wide: restored afterwards (an in-process caller keeps its own)
    with torch_threads(spec.threads if device.type == "cpu" else None, key="train.threads"):
        config = build_config(family, spec, vocab_size=streams.vocab_size, positions=positions)
        n_params, n_non_embedding = count_params(config)
        model = initial_model(config, spec, device)
        kernel_path = prepare_training(model, family, device)  # Mamba-1: the fastest scan with a backward
        kernels = describe_kernels(model, family, kernel_path)
        logger.info("training %s on %s: %s", family, device, kernels)
        model.train()
        optimizer = _optimizer(model, spec)
        n_steps = spec.steps()
        train_windows = _windows(streams.train, spec.context)
        val_windows = _windows(streams.val, spec.context)[: max(1, spec.eval_tokens // spec.context)]
        unigram = streams.unigram()
        digest = spec.digest()

        checkpoint_path = Path(checkpoint_path)
        step, rows, elapsed = 0, [], 0.0
        if checkpoint_path.is_file():
            state = torch.load(checkpoint_path, map_location=device, weights_only=False)
            if state.get("digest") == digest and state.get("family") == family:
                model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                torch.set_rng_state(state["rng"])
                step, rows, elapsed = state["step"], state["rows"], state["elapsed"]
                logger.info("resuming %s from step %d of %d (%s)", family, step, n_steps, checkpoint_path)
            else:
                logger.info("ignoring %s: written for another recipe", checkpoint_path)
        if step == 0 and not rows:
            rows.append(
                dict(
                    step=0,
                    tokens=0,
                    train_loss="",
                    val_loss=_val_loss(model, val_windows, device, spec.batch_size),
                    lr=0.0,
                    tokens_per_s="",
                    elapsed_s=0.0,
                )
            )

        tokens_per_step = spec.batch_size * spec.context
        window_losses: list[float] = []
        window_start = time.perf_counter()
        window_step0 = step
        bar = tqdm(
            total=n_steps,
            initial=step,
            unit="step",
            desc=f"train {family}",
            file=sys.stderr,
            disable=not progress,
            mininterval=2.0,
            dynamic_ncols=False,
        )
        pending = None  # the last step's loss, read (a device sync) only after the next step is queued
        while step < n_steps:
            lr = _lr_at(step, spec, n_steps)
            x = to_device(torch.from_numpy(_batch(train_windows, step, spec.batch_size, spec.data_seed)).long(), device)
            loss = train_step(model, optimizer, x, device, lr=lr, grad_clip=spec.grad_clip)
            step += 1
            if pending is not None:  # waits for the step before this one, which keeps the GPU fed
                window_losses.append(float(pending))
            pending = loss
            evaluate = step % spec.eval_every == 0 or step == n_steps
            if evaluate:  # the row's mean needs this step's loss too
                window_losses.append(float(pending))
                pending = None
            now = time.perf_counter()
            rate = (step - window_step0) * tokens_per_step / max(now - window_start, 1e-9)
            bar.update(1)
            if window_losses:
                bar.set_postfix(loss=f"{window_losses[-1]:.3f}", tok_s=f"{rate:.0f}", refresh=False)
            if evaluate:
                elapsed += now - window_start
                rows.append(
                    dict(
                        step=step,
                        tokens=step * tokens_per_step,
                        train_loss=float(np.mean(window_losses)),
                        val_loss=_val_loss(model, val_windows, device, spec.batch_size),
                        lr=lr,
                        tokens_per_s=rate,
                        elapsed_s=elapsed,
                    )
                )
                window_losses, window_start, window_step0 = [], time.perf_counter(), step
            if step % spec.checkpoint_every == 0 and step < n_steps:
                _save_checkpoint(
                    checkpoint_path,
                    dict(
                        digest=digest,
                        family=family,
                        step=step,
                        rows=rows,
                        model=model.state_dict(),
                        optimizer=optimizer.state_dict(),
                        rng=torch.get_rng_state(),
                        elapsed=elapsed + (time.perf_counter() - window_start),
                    ),
                )
            if on_step is not None:
                on_step(step)
        bar.close()

        flops = train_flops_per_token(config, spec.context) * n_steps * tokens_per_step
        summary = {
            "family": family,
            "n_params": n_params,
            "n_non_embedding": n_non_embedding,
            "config": {k: v for k, v in config.to_diff_dict().items() if k != "transformers_version"},
            "recipe": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(spec).items()},
            "recipe_digest": digest,
            "steps": n_steps,
            "tokens": n_steps * tokens_per_step,
            "corpus": streams.corpus,
            "tokenizer": streams.tokenizer,
            "train_stream_tokens": int(len(streams.train)),
            "val_stream_tokens": int(len(streams.val)),
            "val_tokens_evaluated": int(val_windows[:, 1:].size),
            "initial_val_loss": rows[0]["val_loss"],
            "final_val_loss": rows[-1]["val_loss"],
            "unigram_val_loss": unigram,
            "train_seconds": rows[-1]["elapsed_s"],
            "tokens_per_s": (n_steps * tokens_per_step / rows[-1]["elapsed_s"]) if rows[-1]["elapsed_s"] else None,
            "train_flops_estimate": flops,  # train_flops_per_token x tokens (sizing.py states the formula)
            "mfu_vs_h200_bf16": (
                flops / rows[-1]["elapsed_s"] / H200_BF16_FLOPS
                if rows[-1]["elapsed_s"] and device.type == "cuda"
                else None
            ),
            "train_kernels": kernels,
            "device": str(device),
            "threads": torch.get_num_threads() if device.type == "cpu" else None,
            "reprflow_version": reprflow.__version__,
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
        }
        _save_model_dir(model, Path(out_dir), summary)
        _write_metrics(Path(metrics_path), rows)
        atomic_write_bytes((json.dumps(summary, indent=2, sort_keys=True) + "\n").encode(), summary_path)
        checkpoint_path.unlink(missing_ok=True)
        logger.info(
            "trained %s: %d params, val loss %.3f (unigram %.3f, initial %.3f) in %.1f s",
            family,
            n_params,
            summary["final_val_loss"],
            unigram,
            summary["initial_val_loss"],
            summary["train_seconds"],
        )
        return summary
