"""Extraction stage: one (model, init, task, length) cell -> one activation store.

Loads the prompt set and the model (``from_pretrained`` for pretrained weights, config +
init scheme otherwise), checks the context window, picks the device and compute dtype,
and hands over to :func:`reprflow.extract.extract_activations`, which writes the store
resumably and atomically.

Two science keys shape what is written:

* ``extraction.tokens``: ``store`` puts the ``n_token_prompts`` prompts' full token states
  in the store (the token_metrics rule reads them); ``stream`` stores none and, in the job
  given a ``metrics_dir`` (the unsharded job, or shard 0's), computes the token-metric
  files during the same forward passes
  (:func:`reprflow.pipeline.token_stream.extract_with_streamed_token_metrics`).
* the init's ``scope``: a ``fig3`` cell forwards only the ``n_token_prompts`` evenly spaced
  token prompts (:func:`reprflow.extract.token_prompt_ids`, the same prompts as a full
  cell's token prompts), so its store holds ``n_token_prompts`` samples, recorded in the
  attr ``prompt_indices`` (indices into the prompt file).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from reprflow.devices import release_gpu, resolve_device, waiting_for_gpu, will_claim_gpu
from reprflow.errors import ConfigError
from reprflow.extract import extract_activations, token_prompt_ids
from reprflow.kernels import kernel_cache
from reprflow.models.init_schemes import InitSpec
from reprflow.models.registry import load_model, model_max_context, model_provenance
from reprflow.pipeline.token_stream import extract_with_streamed_token_metrics
from reprflow.prompts import load_tokenizer, read_prompt_set
from reprflow.prompts.files import sha256_file
from reprflow.store import open_store, shard_range

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def compute_dtype_for(name: str, device: torch.device) -> torch.dtype:
    """bfloat16 only on CUDA (CPU bf16 matmuls are slow and inexact); never float16."""
    if name == "bfloat16" and device.type != "cuda":
        logger.info("compute_dtype bfloat16 requested on %s; computing in float32", device)
        return torch.float32
    if name not in _DTYPES:
        raise ConfigError(f"extraction.compute_dtype is {name!r}; expected one of {sorted(_DTYPES)}")
    return _DTYPES[name]


def batch_size_for(settings: Mapping[str, Any], length: int, family: str | None = None) -> int:
    """Prompts per forward pass for a cell of ``length`` tokens of a model of ``family``:
    ``max(1, batch_tokens // length)`` when ``execution.extraction.batch_tokens`` is set (every
    length then forwards about the same number of tokens at once), else ``batch_size``.
    ``batch_tokens`` may be a mapping from family (``model_type``) to tokens, with ``default``
    for the others (a family it does not name, without ``default``, uses ``batch_size``). An
    execution setting: stored values do not depend on it."""
    batch_tokens = settings.get("batch_tokens")
    if isinstance(batch_tokens, Mapping):
        batch_tokens = batch_tokens.get(family, batch_tokens.get("default"))
    return max(1, int(batch_tokens) // length) if batch_tokens else int(settings["batch_size"])


def model_key(origin: str, key: str, name: str) -> str:
    """Config path of ``key`` in the model's entry: ``config.models[2].hf_id`` -> ``config.models[2].max_context``."""
    found = re.match(r"(config\.models\[\d+\])\.", origin)
    return f"{found[1]}.{key}" if found else f"`{key}` of the models entry {name!r}"


def check_context(
    prompts: Sequence[Mapping[str, Any]],
    *,
    limit: int | None,
    model: Mapping[str, Any],
    length: int,
    key: str,
    prompt_path: str | Path,
) -> None:
    """Refuse prompts longer than the model's context window, naming the config fix.

    The workflow skips a (model, length) cell only when the model's entry sets
    ``max_context``; a model without it (or with a value above its real window) would
    otherwise fail here, after a GPU job was scheduled.
    """
    if limit is None or not prompts:
        return
    longest = max(int(p.get("n_tokens", 0)) for p in prompts)
    if longest <= limit:
        return
    if model.get("max_context") is None:
        fix = (
            f"set `max_context: {limit}` in that entry ({key}) so the workflow skips longer lengths for this "
            f"model, or drop {length} from `lengths`"
        )
    else:
        fix = (
            f"{key} is {model['max_context']}, above the model's own window: set it to {limit} so the "
            "workflow skips longer lengths for this model"
        )
    raise ConfigError(
        f"{prompt_path}: prompts of up to {longest} tokens exceed {model['name']}'s context window of {limit} "
        f"tokens (from {model['hf_id']}'s config); {fix}"
    )


def run_extraction(
    prompt_path: str | Path,
    out_path: str | Path,
    *,
    model: dict,
    init: dict,
    task: str,
    length: int,
    seed: int,
    settings: dict,
    config_digest: str,
    origin: str = "model",
    shard: tuple[int, int] | None = None,
    metrics_dir: str | Path | None = None,
    metrics: Mapping[str, Any] | None = None,
    gpu_priority: float = 0.0,
) -> Path:
    """Extract one cell's activations into ``out_path`` (a no-op if it is already complete).

    Parameters
    ----------
    prompt_path : path
        The prompt set (data/prompts/{tokenizer}/{task}_n{length}.jsonl).
    out_path : path
        The store (results/activations/{model}/{init}/{task}_n{length}.zarr).
    model, init : dict
        One ``config.models`` entry and one ``config.inits`` entry (validated).
    settings : dict
        The ``config.extraction`` section (with ``config.execution.extraction``).
        ``settings["tokens"]`` is ``store`` (default) or ``stream`` (module docstring).
    origin : str
        Where the model id came from (e.g. ``config.models[2].hf_id``), for error messages.
    shard : (index, count), optional
        Write only shard ``index`` of ``count`` (a contiguous sample range,
        :func:`reprflow.store.shard_range`) to ``out_path``; one job per shard.
    metrics_dir : path, optional
        With ``tokens: stream``: where this job writes the cell's token-metric files
        (``results/metrics/.../token_metrics``). Give it to one job per cell; the other
        shards of a streamed cell store no token states and compute no metrics.
    metrics : mapping, optional
        With ``metrics_dir``: ``views``, ``debiased_cka`` and ``precision`` (``config.metrics``) and
        ``max_tokens_in_memory`` (``config.execution.metrics``).
    gpu_priority : float
        This job's place among the jobs waiting for a GPU, higher first (the workflow gives its
        Snakemake priority, :func:`reprflow.workflow.targets.extraction_priority`).

    Notes
    -----
    When it claims a GPU (``device: auto`` with several GPUs, or GPU jobs outnumbering them:
    :mod:`reprflow.devices`), the job queues for one first, then reads its prompts, loads the
    tokenizer and reads a pretrained checkpoint into host memory, and only then waits for its GPU:
    that start-up overlaps the GPU's current job. It releases the GPU as soon as its forward
    passes and writes are done. ``timing.startup.gpu_wait`` records the wait.
    """
    out_path = Path(out_path)
    key = model_key(origin, "max_context", model["name"])
    if model.get("max_context") is not None and length > model["max_context"]:
        raise ConfigError(
            f"{out_path}: length {length} exceeds {model['name']}'s max_context {model['max_context']} ({key}); "
            f"the workflow never schedules such a cell, so it was requested by name: drop it from the targets, "
            f"or raise {key} if the model handles {length} tokens"
        )
    startup = {"process": _seconds_since_process_start()}  # interpreter, imports, the job's set-up
    if (cache := kernel_cache.cache_path()) is not None:
        logger.info("kernel choices and autotuning cached in %s", cache)
    claims = will_claim_gpu(settings["device"])
    clock = time.perf_counter()
    # a place among the jobs waiting for a GPU from before the start-up, which then overlaps
    # the GPU's current job (given up if the start-up fails)
    with waiting_for_gpu(gpu_priority, enabled=claims):
        prompts = read_prompt_set(prompt_path)
        startup["prompts"], clock = time.perf_counter() - clock, time.perf_counter()
        tokens = settings.get("tokens", "store")
        if tokens not in ("store", "stream"):
            raise ConfigError(f"extraction.tokens is {tokens!r}; expected 'store' or 'stream'")
        if metrics_dir is not None and (tokens != "stream" or metrics is None):
            raise ConfigError(
                f"{out_path}: token metrics are streamed to {metrics_dir} only with extraction.tokens: "
                f"stream (is {tokens!r}) and the metrics settings (views, debiased_cka, max_tokens_in_memory)"
            )
        n_token = int(settings["n_token_prompts"])
        prompt_indices = None
        if init.get("scope", "all") == "fig3":  # Fig. 3 needs only the token prompts' metrics
            prompt_indices = token_prompt_ids(len(prompts), n_token)
            prompts = [prompts[i] for i in prompt_indices]
            logger.info("init %s has scope fig3: forwarding only its %d token prompts", init["name"], len(prompts))
        tokenizer = load_tokenizer(model["tokenizer"])
        startup["tokenizer"], clock = time.perf_counter() - clock, time.perf_counter()
        spec = InitSpec(scheme=init["scheme"], params=dict(init.get("params") or {}))
        load = dict(
            init=spec,
            seed=seed,
            revision=model.get("revision"),
            origin=origin,
            tokenizer_size=len(tokenizer),
            family=model["family"],
        )
        net, startup["model"] = None, 0.0
        if claims and not spec.is_random:  # read the checkpoint while another job has the GPU
            dtype = compute_dtype_for(settings["compute_dtype"], torch.device("cuda"))
            logger.info("reading %s (%s) into host memory in %s", model["name"], model["hf_id"], dtype)
            net = load_model(model["hf_id"], dtype=dtype, device="cpu", **load)
            startup["model"], clock = time.perf_counter() - clock, time.perf_counter()
        device = resolve_device(settings["device"], priority=gpu_priority)
    startup["gpu_wait"], clock = time.perf_counter() - clock, time.perf_counter()
    dtype = compute_dtype_for(settings["compute_dtype"], device)
    if net is None:
        logger.info(
            "loading %s (%s) with init %s on %s in %s", model["name"], model["hf_id"], init["name"], device, dtype
        )
        net = load_model(model["hf_id"], dtype=dtype, device=device, **load)
    else:
        net = net.to(device)
    startup["model"] += time.perf_counter() - clock  # build or load, init, move to the device
    limit = model_max_context(net)
    check_context(prompts, limit=limit, model=model, length=length, key=key, prompt_path=prompt_path)
    attrs = {
        "model": model["name"],
        "model_id": model["hf_id"],
        "revision": model.get("revision"),
        "model_source": model_provenance(net),  # config source and resolved hub commit
        "family": model["family"],
        "init": {"name": init["name"], "scheme": spec.scheme, "params": spec.params, "seed": seed},
        "dtype": str(dtype).replace("torch.", ""),
        "task": task,
        "length": length,
        "tokenizer": model["tokenizer"],
        "prompt_file": str(prompt_path),
        "prompt_sha256": sha256_file(prompt_path),
        "config_sha256": config_digest,
        "tokens": tokens,
    }
    if prompt_indices is not None:
        attrs["prompt_indices"] = prompt_indices
    batch_size = batch_size_for(settings, length, model["family"])
    logger.info("%d prompts per forward pass", batch_size)
    run = dict(
        batch_size=batch_size,
        store_dtype=settings["store_dtype"],
        device=device,
        compute_dtype=dtype,
        attrs=attrs,
        max_context=limit,
        sample_range=None if shard is None else shard_range(len(prompts), *shard),
        startup={k: v for k, v in startup.items() if v is not None},
    )
    if metrics_dir is not None:
        extract_with_streamed_token_metrics(
            net,
            tokenizer,
            prompts,
            out_path,
            metrics_dir,
            n_token_prompts=n_token,
            views=tuple(metrics["views"]),
            debiased_cka=metrics["debiased_cka"],
            max_tokens_in_memory=metrics["max_tokens_in_memory"],
            precision=metrics.get("precision", "float64"),
            **run,
        )
    else:
        extract_activations(
            net, tokenizer, prompts, out_path, n_token_prompts=n_token if tokens == "store" else 0, **run
        )
    del net
    release_gpu()  # the next job may start on it while this one checks its store and exits
    open_store(out_path)  # verify what was written reads back as complete
    return out_path


def _seconds_since_process_start() -> float | None:
    """Seconds since this process started (Linux ``/proc``; None elsewhere): in a workflow job,
    the interpreter, the imports and Snakemake's set-up before the stage runs."""
    try:
        stat = Path("/proc/self/stat").read_text()
        started = int(stat.rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        return float(Path("/proc/uptime").read_text().split()[0]) - started
    except (OSError, ValueError, IndexError):
        return None
