"""Extraction throughput of the four paper architectures on one GPU: fast path vs naive.

GPU command lines (repository root; ``$OUT`` is where the tables go)::

    # the streamed-token-metrics study (issue 12): ~4 min on an H200 for the four families
    bash benchmarks/extract_gpu.sh bench -- --stream-study
    # or, with the packages already installed:
    PYTHONPATH=$PWD python benchmarks/extract.py --stream-study --out $OUT
    # CPU smoke run of the same study (tiny models, ~1 min):
    PYTHONPATH=$PWD python benchmarks/extract.py --stream-study --quick --device cpu --out /tmp/x

``--stream-study`` measures, per family: throughput without token states; with the token
metrics streamed (:class:`reprflow.sinks.TokenMetricsSink`) for 1 in ``--stream-every``
prompts (default every prompt, 1 in 8, 1 in 64) at each ``--precisions`` value
(``metrics.precision``: float64 = the reference, mixed = :mod:`reprflow.metrics.mixed`),
each with its drop in %; then, on one real prompt of the model (its captured states),
the per-part time of the per-prompt metrics (synchronised timers around cast, cosines,
inter-token, Sm/St, CKA Grams, ...) and the largest difference between mixed and float64.
It writes ``stream_table.md`` and ``stream_rows.json`` to ``--out``.

For each model (full size, random init built from its known hyperparameters, no hub):

* **naive**: what a user would otherwise write: float32 weights, TF32 off, batch 1,
  ``model(ids, output_hidden_states=True)`` on the causal LM, and the last-token state
  of every layer moved to numpy one prompt at a time; transformers' default kernels.
* **fast**: bf16, batch ``--batch-size``, :func:`reprflow.fastpath.prepare_model`, the
  last-token states of all K = L + 2 states captured by hooks and written to a Zarr
  store by :func:`reprflow.extract.extract_activations` -- the workflow's own engine and
  sinks (:mod:`reprflow.sinks`: pinned asynchronous host copies, one background writer),
  not a second one.
* **fast + tokens**: the same with full token states of ``--token-prompts`` prompts
  also written (the drop should stay within 10%).
* **fast + stream**: the same with token metrics of ``--stream-prompts`` prompts computed
  on the GPU during the pass (:class:`reprflow.sinks.TokenMetricsSink`, ``tokens: stream``),
  no token states written (the drop should stay within 10%).
* **T=4096** (SSMs): one batch at ``--long-tokens`` through the fast path; peak memory
  or OOM.

Throughput counts real tokens over the wall time of the timed loop (after a warm-up
that compiles the kernels); % of ceiling uses 2 * params FLOPs/token at
``--peak-tflops`` (798 TFLOP/s: the bf16 matmul rate measured on the H100 here).

Usage::

    PYTHONPATH=$PWD python benchmarks/extract.py --out $OUT          # full run (~5 min on an H100)
    PYTHONPATH=$PWD python benchmarks/extract.py --quick --out /tmp/x # small smoke run
    PYTHONPATH=$PWD python benchmarks/extract.py --scan-configs       # tune the Mamba scan launch
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger("benchmarks.extract")

GIB = 1024**3


# ---------------------------------------------------------------- configs (no hub)
def full_configs(quick: bool) -> dict[str, tuple[object, str]]:
    """model name -> (transformers config, tokenizer name). ``quick`` shrinks depth/width."""
    from transformers import GPTNeoConfig, GPTNeoXConfig, Mamba2Config, MambaConfig

    L = (lambda n: 2) if quick else (lambda n: n)
    h = 512 if quick else 2560

    def mamba2(hidden: int, layers: int, **extra) -> Mamba2Config:
        return Mamba2Config(
            vocab_size=50288,
            hidden_size=hidden,
            num_hidden_layers=layers,
            state_size=128,
            head_dim=64,
            expand=2,
            n_groups=1,
            chunk_size=256,
            num_heads=2 * hidden // 64,
            conv_kernel=4,
            **extra,
        )

    return {
        "gpt-neo-2.7b": (
            GPTNeoConfig(
                vocab_size=50257,
                max_position_embeddings=2048,
                hidden_size=h,
                num_layers=L(32),
                num_heads=(4 if quick else 20),
                attention_types=[[["global", "local"], L(32) // 2]],
                window_size=256,
                intermediate_size=None,
            ),
            "gpt2",
        ),
        "pythia-2.8b": (
            GPTNeoXConfig(
                vocab_size=50304,
                max_position_embeddings=2048,
                hidden_size=h,
                num_hidden_layers=L(32),
                num_attention_heads=(8 if quick else 32),
                intermediate_size=4 * h,
                rotary_pct=0.25,
                use_parallel_residual=True,
                tie_word_embeddings=False,
            ),
            "gpt-neox-20b",
        ),
        "mamba-2.8b": (
            MambaConfig(
                vocab_size=50280,
                hidden_size=h,
                num_hidden_layers=L(64),
                state_size=16,
                expand=2,
                conv_kernel=4,
            ),
            "gpt-neox-20b",
        ),
        "mamba2-2.7b": (mamba2(h, L(64)), "gpt-neox-20b"),
        # reprflow/models/configs/AntonV__mamba2-130m-hf.json
        "mamba2-130m": (mamba2(512 if quick else 768, L(24), tie_word_embeddings=True), "gpt-neox-20b"),
    }


def build_model(config, *, dtype: torch.dtype, seed: int, device: str):
    """Random-init causal LM built directly on ``device`` (the model's own init)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(copy.deepcopy(config), dtype=dtype)
    return model.eval()


def n_params(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


# ---------------------------------------------------------------- prompts
def single_token_words(tokenizer, *, n_max: int = 4000) -> list[str]:
    """Words ' xyz' that the tokenizer encodes as exactly one token (BPE never merges across spaces)."""
    words = []
    for tok in sorted(tokenizer.get_vocab()):
        if tok.startswith("\u0120") and tok[1:].isascii() and tok[1:].isalpha() and tok[1:].islower() and len(tok) > 3:
            w = " " + tok[1:]
            if len(tokenizer(w, add_special_tokens=False)["input_ids"]) == 1:
                words.append(w)
        if len(words) >= n_max:
            break
    return words


def make_prompts(tokenizer, *, n_prompts: int, n_tokens: int, seed: int) -> list[dict]:
    """Prompt records of exactly ``n_tokens`` tokens each (random single-token words)."""
    rng = np.random.default_rng(seed)
    words = single_token_words(tokenizer)
    recs = []
    for i in range(n_prompts):
        text = "".join(rng.choice(words, size=n_tokens))
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if n != n_tokens:
            raise RuntimeError(f"prompt {i}: {n} tokens, wanted {n_tokens}")
        recs.append(
            {
                "id": f"bench-{i}",
                "task": "kvpr",
                "prompt": text,
                "label": i % 10,
                "n_tokens": n,
                "n_items": 10,
                "answer": "",
            }
        )
    return recs


def encode(tokenizer, prompts: list[dict]) -> torch.Tensor:
    return torch.tensor([tokenizer(p["prompt"], add_special_tokens=False)["input_ids"] for p in prompts])


# ---------------------------------------------------------------- naive baseline
def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_naive(model_fp32, ids: torch.Tensor, *, n_prompts: int, device: str) -> float:
    """tok/s of the naive loop over ``n_prompts`` prompts (after a short warm-up)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with torch.no_grad():
        model_fp32(ids[:1, :32].to(device), output_hidden_states=True)
        _sync(device)
        t0 = time.perf_counter()
        states = []
        for i in range(n_prompts):
            out = model_fp32(ids[i : i + 1].to(device), output_hidden_states=True)
            states.append(np.stack([h[0, -1].cpu().numpy() for h in out.hidden_states]))
            del out
        _sync(device)
        dt = time.perf_counter() - t0
    return n_prompts * ids.shape[1] / dt


# ---------------------------------------------------------------- the fast path: reprflow's engine
def run_reprflow_engine(
    model,
    tokenizer,
    prompts,
    out_path: Path,
    *,
    batch_size: int,
    n_token_prompts: int,
    compress: bool,
    family: str,
    name: str,
    device: str,
    window_batches: int,
    stream_prompts: int = 0,
    precision: str = "float64",
) -> dict:
    """One extraction into a fresh store; with ``stream_prompts``, token metrics of that many prompts streamed."""
    from reprflow.extract import extract_activations, token_prompt_ids
    from reprflow.sinks import TokenMetricsSink

    attrs = {
        "model": name,
        "model_id": name,
        "revision": "random-init",
        "family": family,
        "init": {"scheme": "default", "seed": 0},
        "task": "kvpr",
        "length": int(prompts[0]["n_tokens"]),
        "tokenizer": "bench",
        "prompt_file": "<benchmark>",
        "prompt_sha256": "0" * 64,
    }
    if out_path.exists():
        shutil.rmtree(out_path)
    sinks = []
    if stream_prompts:
        n_bins = min(64, min(int(p["n_tokens"]) for p in prompts))
        sinks.append(
            TokenMetricsSink(token_prompt_ids(len(prompts), stream_prompts), n_bins=n_bins, precision=precision)
        )
    t0 = time.perf_counter()
    s = extract_activations(
        model,
        tokenizer,
        prompts,
        out_path,
        batch_size=batch_size,
        n_token_prompts=n_token_prompts,
        attrs=attrs,
        device=device,
        compute_dtype=torch.bfloat16 if device == "cuda" else torch.float32,
        progress=False,
        window_batches=window_batches,
        compress=compress,
        sinks=sinks,
    )
    wall = time.perf_counter() - t0
    return {"tokens": s.tokens, "seconds": s.seconds, "wall": wall, "tok_s": s.tokens / s.seconds}


def long_context_check(model, *, batch_size: int, n_tokens: int, vocab: int) -> dict:
    from reprflow.capture import forward_states

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    g = torch.Generator(device="cuda").manual_seed(1)
    ids = torch.randint(0, vocab, (batch_size, n_tokens), device="cuda", generator=g)
    try:
        forward_states(model, ids, torch.ones_like(ids))
        torch.cuda.synchronize()
        return {"ok": True, "peak_gib": torch.cuda.max_memory_allocated() / GIB}
    except torch.OutOfMemoryError as exc:
        return {"ok": False, "peak_gib": torch.cuda.max_memory_allocated() / GIB, "error": str(exc)[:200]}


# ---------------------------------------------------------------- one model
@dataclass
class Row:
    model: str
    params_b: float = 0.0
    ceiling_tok_s: float = 0.0
    naive_tok_s: float = float("nan")
    fast_tok_s: float = float("nan")
    fast_tokens_tok_s: dict = field(default_factory=dict)  # token prompts -> tok/s
    fast_stream_tok_s: dict = field(default_factory=dict)  # streamed-metrics prompts -> tok/s
    study_tok_s: dict = field(default_factory=dict)  # "precision 1/every" -> tok/s (--stream-study)
    breakdown: dict = field(default_factory=dict)  # precision -> {part: ms per prompt}
    accuracy: dict = field(default_factory=dict)  # metric -> max |mixed - float64| (relative for Sm/St)
    gram_kernel: str = ""
    n_states: int = 0
    hidden: int = 0
    peak_gib: float = float("nan")
    long_ok: str = "-"
    long_peak_gib: float = float("nan")
    kernels: dict = field(default_factory=dict)
    error: str = ""


def bench_model(name, config, tok_name, args, out_dir: Path) -> Row:
    from reprflow.fastpath import prepare_model
    from reprflow.prompts.tokenizers import load_tokenizer

    row = Row(model=name)
    t_start = time.perf_counter()
    tokenizer = load_tokenizer(tok_name)
    n_prompts = args.batch_size * args.n_batches
    prompts = make_prompts(tokenizer, n_prompts=n_prompts, n_tokens=args.tokens, seed=0)
    ids = encode(tokenizer, prompts)

    dev = args.device
    model = build_model(config, dtype=torch.bfloat16 if dev == "cuda" else torch.float32, seed=0, device=dev)
    row.params_b = n_params(model) / 1e9
    row.ceiling_tok_s = args.peak_tflops * 1e12 / (2 * n_params(model))
    family = config.model_type

    if args.naive_prompts > 0:
        ref = copy.deepcopy(model).float()
        row.naive_tok_s = run_naive(ref, ids, n_prompts=args.naive_prompts, device=dev)
        del ref
        _free(dev)
        logger.info("%s naive: %.0f tok/s", name, row.naive_tok_s)

    row.kernels = prepare_model(model)

    def run(n_tok, sub_prompts, sub_ids, tag, stream=0, precision="float64"):
        path = out_dir / f"{name}_{tag}.zarr"
        r = run_reprflow_engine(
            model,
            tokenizer,
            sub_prompts,
            path,
            batch_size=args.batch_size,
            n_token_prompts=n_tok,
            compress=args.compress,
            family=family,
            name=name,
            device=dev,
            window_batches=args.window_batches,
            stream_prompts=stream,
            precision=precision,
        )
        shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(str(path) + ".partial", ignore_errors=True)
        return r

    # warm-up: compiles Triton kernels, fills the allocator (and warms each metrics precision)
    run(0, prompts[: args.batch_size], ids[: args.batch_size], "warmup")
    for precision in args.precisions if args.stream_every else []:
        run(0, prompts[: args.batch_size], ids[: args.batch_size], f"warmup-{precision}", stream=1, precision=precision)
    _sync(dev)
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    r = run(0, prompts, ids, "last")
    row.fast_tok_s = r["tok_s"]
    row.peak_gib = torch.cuda.max_memory_allocated() / GIB if dev == "cuda" else float("nan")
    logger.info("%s fast: %s", name, r)
    for n_tok in args.token_prompts:
        r2 = run(n_tok, prompts, ids, f"tokens{n_tok}")
        row.fast_tokens_tok_s[n_tok] = r2["tok_s"]
        logger.info("%s fast+tokens (%d of %d prompts): %s", name, n_tok, n_prompts, r2)
    for n_stream in args.stream_prompts:
        r3 = run(0, prompts, ids, f"stream{n_stream}", stream=n_stream)
        row.fast_stream_tok_s[n_stream] = r3["tok_s"]
        logger.info("%s fast+stream (%d of %d prompts): %s", name, n_stream, n_prompts, r3)
    for every in args.stream_every:
        for precision in args.precisions:
            n_stream = max(1, n_prompts // every)
            r4 = run(0, prompts, ids, f"study-{precision}-{every}", stream=n_stream, precision=precision)
            row.study_tok_s[f"{precision} 1/{every}"] = r4["tok_s"]
            logger.info("%s stream %s 1/%d (%d of %d prompts): %s", name, precision, every, n_stream, n_prompts, r4)
    if args.breakdown:
        breakdown(model, ids[0], row, args)
    if family in ("mamba", "mamba2") and args.long_tokens > 0 and dev == "cuda":
        lc = long_context_check(
            model, batch_size=args.long_batch_size, n_tokens=args.long_tokens, vocab=config.vocab_size
        )
        row.long_ok = "ok" if lc["ok"] else "OOM"
        row.long_peak_gib = lc["peak_gib"]
    logger.info("%s: benchmarked in %.0f s", name, time.perf_counter() - t_start)
    model = None  # noqa: F841 (frees the weights before the next model; run() closes over it)
    _free(dev)
    return row


class SyncTimer:
    """``timer(part)`` context manager: synchronised wall time per part, summed over calls (seconds)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}

    def __call__(self, part: str):
        import contextlib

        @contextlib.contextmanager
        def timed():
            _sync(self.device)
            t0 = time.perf_counter()
            yield
            _sync(self.device)
            self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - t0

        return timed()


def breakdown(model, prompt_ids: torch.Tensor, row: Row, args) -> None:
    """Per-part time of the per-prompt metrics on one real prompt, and mixed vs float64 on it.

    The prompt's states come from the model (``forward_states``, all K states, T tokens);
    each precision runs ``--breakdown-repeats`` times after one warm-up: once with
    synchronising timers around each part (the breakdown; syncs add a little) and once
    without (``total``: the real per-prompt cost, one sync at the end).
    """
    from reprflow.capture import forward_states
    from reprflow.extract import run_info
    from reprflow.metrics.mixed import gram_kernel
    from reprflow.pipeline.token_metrics import prompt_metrics

    dev = args.device
    ids = prompt_ids[None].to(dev)
    with torch.inference_mode():
        states = forward_states(model, ids, torch.ones_like(ids), token_rows=[0]).tokens[:, 0]  # [K, T, d]
    views = {v: [int(i) for i in idx] for v, idx in run_info(model, 1).views.items()}
    row.gram_kernel = gram_kernel(states.device)
    row.n_states, row.hidden = int(states.shape[0]), int(states.shape[2])
    n_bins = min(64, states.shape[1])
    results = {}
    for precision in args.precisions:

        def once(timer=None):
            kw = {} if timer is None else {"timer": timer}
            with torch.inference_mode():
                return prompt_metrics(
                    states, views, debiased_cka=True, n_bins=n_bins, where="breakdown", precision=precision, **kw
                )

        results[precision] = once()  # warm-up
        timer = SyncTimer(dev)
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(args.breakdown_repeats):
            once()
        _sync(dev)
        total = (time.perf_counter() - t0) / args.breakdown_repeats
        for _ in range(args.breakdown_repeats):
            once(timer)
        parts = {k: 1e3 * v / args.breakdown_repeats for k, v in timer.seconds.items()}
        row.breakdown[precision] = {"total": 1e3 * total, **parts}
        logger.info("%s breakdown %s: %s", row.model, precision, row.breakdown[precision])
    if {"float64", "mixed"} <= set(results):
        ref, got = results["float64"], results["mixed"]
        acc: dict[str, float] = {}
        for v in ref:
            for f in ("inter_token", "layerwise_mean", "layerwise_binned", "cka", "cka_debiased"):
                diff = float(np.nanmax(np.abs(np.asarray(getattr(ref[v], f)) - np.asarray(getattr(got[v], f)))))
                acc[f] = max(acc.get(f, 0.0), diff)
            for f in ("sm", "st", "state_rms"):
                rel = abs(getattr(ref[v], f) - getattr(got[v], f)) / abs(getattr(ref[v], f))
                acc[f + " (rel)"] = max(acc.get(f + " (rel)", 0.0), rel)
        row.accuracy = acc
    states = None  # release the states before emptying the cache (a closure above reads them: no `del`)
    _free(dev)


def stream_table(rows: list[Row], args) -> str:
    """The --stream-study tables: throughput with streaming, per-part ms per prompt, mixed vs float64."""
    n_prompts = args.batch_size * args.n_batches
    keys = [f"{p} 1/{e}" for e in args.stream_every for p in args.precisions]
    heads = "".join(f"stream {k} ({max(1, n_prompts // int(k.split('/')[1]))} prompts) | " for k in keys)
    lines = [
        f"Throughput, T={args.tokens}, batch {args.batch_size}, {n_prompts} prompts: tok/s (drop vs no token "
        "states); goal: drop within 10%",
        "",
        f"| model | K states | hidden | no token states | {heads}",
        "|" + "---|" * (4 + len(keys)),
    ]
    for r in rows:
        if r.error:
            lines.append(f"| {r.model} | error: {r.error} |" + " |" * (2 + len(keys)))
            continue
        cells = "".join(
            f"{r.study_tok_s[k] / 1e3:.1f}K ({(r.study_tok_s[k] / r.fast_tok_s - 1) * 100:+.1f}%) | "
            if k in r.study_tok_s
            else "- | "
            for k in keys
        )
        lines.append(f"| {r.model} | {r.n_states or '-'} | {r.hidden or '-'} | {r.fast_tok_s / 1e3:.1f}K | {cells}")
    parts = sorted({p for r in rows for b in r.breakdown.values() for p in b if p != "total"})
    lines += [
        "",
        f"Per-prompt metrics on one real prompt (T={args.tokens}), ms; `total` without per-part syncs; "
        "forward = T / (tok/s without token states)",
        "",
        "| model | precision | Gram kernel | forward ms/prompt | total | " + " | ".join(parts) + " |",
        "|" + "---|" * (5 + len(parts)),
    ]
    for r in rows:
        for prec, b in r.breakdown.items():
            fwd = 1e3 * args.tokens / r.fast_tok_s if r.fast_tok_s == r.fast_tok_s else float("nan")
            kern = r.gram_kernel if prec == "mixed" else "float64"
            lines.append(
                f"| {r.model} | {prec} | {kern} | {fwd:.1f} | {b['total']:.1f} | "
                + " | ".join(f"{b[p]:.2f}" if p in b else "-" for p in parts)
                + " |"
            )
    fields = sorted({f for r in rows for f in r.accuracy})
    if fields:
        lines += [
            "",
            "mixed vs float64 on that prompt: max |difference| (relative for Sm, St, state RMS); "
            "documented tolerance 1e-4 absolute, 1e-5 relative",
            "",
            "| model | " + " | ".join(fields) + " |",
            "|" + "---|" * (1 + len(fields)),
        ]
        for r in rows:
            if r.accuracy:
                lines.append(
                    f"| {r.model} | " + " | ".join(f"{r.accuracy.get(f, float('nan')):.1e}" for f in fields) + " |"
                )
    return "\n".join(lines)


def _free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------- scan tuning
def scan_configs(args) -> str:
    import triton.testing

    from reprflow.kernels.causal_conv1d import causal_conv1d_silu_triton

    b, t, d = args.batch_size, args.tokens, 5120
    g = torch.Generator(device="cuda").manual_seed(0)
    xz = torch.randn(b, t, 2 * d, device="cuda", generator=g, dtype=torch.bfloat16)
    u = xz[..., :d]
    # the Mamba-1 scan: the Triton launch configurations and mamba_ssm, at B=16 T=2048 and B=8 T=4096
    # (benchmarks/scan_sweep.py, its own table)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from scan_sweep import sweep

    scan_table = sweep(argparse.Namespace(device="cuda", quick=False, reps=7, budget_s=65.0))
    lines = ["| kernel | config | ms (median) | GB/s | ms x layers per batch |", "|---|---|---|---|---|"]
    w = torch.randn(d, 4, device="cuda", generator=g, dtype=torch.bfloat16)
    ms = triton.testing.do_bench(
        lambda: causal_conv1d_silu_triton(u, w, None), warmup=50, rep=300, return_mode="median"
    )
    lines.append(
        f"| causal conv + silu | BLOCK 32x128 | {ms:.3f} | {2 * b * t * d * 2 / ms / 1e6:.0f} | {64 * ms:.1f} (64) |"
    )
    # RMSNorm of the fp32 residual stream: fused vs transformers' eager ops
    from reprflow.kernels.rms_norm import rms_norm, rms_norm_reference

    xr = torch.randn(b, t, 2560, device="cuda", generator=g)
    wr = torch.randn(2560, device="cuda", generator=g, dtype=torch.bfloat16)
    for label, fn in (
        ("rms_norm triton", lambda: rms_norm(xr, wr, eps=1e-5)),
        ("rms_norm HF eager", lambda: rms_norm_reference(xr, wr, eps=1e-5)),
    ):
        ms = triton.testing.do_bench(fn, warmup=20, rep=200, return_mode="median")
        lines.append(
            f"| {label} | fp32 in, fp32 out | {ms:.3f} | {2 * xr.numel() * 4 / ms / 1e6:.0f} | {65 * ms:.1f} (65) |"
        )
    # GPT-Neo attention (one layer, B x 20 heads x T x 128): local banded SDPA, global flash, eager local
    from reprflow.kernels.gpt_neo_attention import local_causal_attention

    q, k, v = (torch.randn(b, 20, t, 128, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(3))
    band = torch.ones(t, t, device="cuda", dtype=torch.bool).tril() & ~torch.ones(
        t, t, device="cuda", dtype=torch.bool
    ).tril(-256)
    for label, fn in (
        ("gpt-neo local, banded SDPA", lambda: local_causal_attention(q, k, v, window=256, scale=1.0)),
        (
            "gpt-neo local, dense-mask SDPA",
            lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=band, scale=1.0),
        ),
        (
            "gpt-neo global, causal SDPA",
            lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0),
        ),
    ):
        ms = triton.testing.do_bench(fn, warmup=20, rep=200, return_mode="median")
        lines.append(f"| {label} | B={b} T={t} | {ms:.3f} | | {16 * ms:.1f} (16) |")
    return scan_table + "\n\n" + "\n".join(lines)


# ---------------------------------------------------------------- report
def table(rows: list[Row], args) -> str:
    n_prompts = args.batch_size * args.n_batches
    tok_heads = "".join(f"+ tokens of {n} in {n_prompts} prompts: tok/s (drop) | " for n in args.token_prompts)
    tok_heads += "".join(f"+ stream {n} of {n_prompts} prompts: tok/s (drop) | " for n in args.stream_prompts)
    head = (
        "| model | params (B) | ceiling tok/s | naive tok/s | fast tok/s | % ceiling | speedup | "
        f"{tok_heads}peak GiB | SSM T={args.long_tokens} | attention | scan | conv |"
    )
    n_cols = 12 + len(args.token_prompts) + len(args.stream_prompts)
    lines = [head, "|" + "---|" * n_cols]
    for r in rows:
        if r.error:
            lines.append(f"| {r.model} | error: {r.error} |" + " |" * (n_cols - 2))
            continue
        toks = "".join(
            f"{v / 1e3:.1f}K ({(v / r.fast_tok_s - 1) * 100:+.1f}%) | "
            for v in (*r.fast_tokens_tok_s.values(), *r.fast_stream_tok_s.values())
        )
        k = r.kernels
        long = f"{r.long_ok} ({r.long_peak_gib:.1f} GiB)" if r.long_ok != "-" else "-"
        lines.append(
            f"| {r.model} | {r.params_b:.2f} | {r.ceiling_tok_s / 1e3:.0f}K | {r.naive_tok_s / 1e3:.2f}K | "
            f"{r.fast_tok_s / 1e3:.1f}K | {100 * r.fast_tok_s / r.ceiling_tok_s:.0f}% | "
            f"{r.fast_tok_s / r.naive_tok_s:.0f}x | {toks}"
            f"{r.peak_gib:.1f} | {long} | {k.get('attention')} | {k.get('scan')} | {k.get('conv')} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2-layer, 512-wide models, T=256: a smoke run")
    p.add_argument("--models", default="gpt-neo-2.7b,pythia-2.8b,mamba-2.8b,mamba2-2.7b")
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--n-batches", type=int, default=8, help="timed batches (prompts = batch_size * n_batches)")
    p.add_argument("--naive-prompts", type=int, default=2)
    p.add_argument(
        "--token-prompts",
        type=lambda v: [int(x) for x in v.split(",") if x],
        default=[1],
        help="comma list: one '+ tokens' run per entry, with that many prompts' full token states "
        "(the paper config keeps 64 of 12,000, i.e. 1 in 188)",
    )
    p.add_argument("--long-tokens", type=int, default=4096)
    p.add_argument("--long-batch-size", type=int, default=8)
    p.add_argument(
        "--stream-prompts",
        type=lambda v: [int(x) for x in v.split(",") if x],
        default=[64],
        help="comma list: one '+ stream' run per entry, with token metrics of that many prompts "
        "computed on the GPU during the pass (no token states written)",
    )
    p.add_argument(
        "--stream-every",
        type=lambda v: [int(x) for x in v.split(",") if x],
        default=[],
        help="comma list of N: one run per N and precision with token metrics streamed for 1 in N "
        "prompts (--stream-study: 1,8,64)",
    )
    p.add_argument(
        "--precisions",
        type=lambda v: [x for x in v.split(",") if x],
        default=["float64", "mixed"],
        help="metrics.precision values of the --stream-every runs and the breakdown",
    )
    p.add_argument("--breakdown", action="store_true", help="per-part ms of the per-prompt metrics on one real prompt")
    p.add_argument("--breakdown-repeats", type=int, default=3)
    p.add_argument(
        "--stream-study",
        action="store_true",
        help="issue 12 preset: --stream-every 1,8,64 --breakdown, batch 16 x 5, no naive/tokens/long runs "
        "(~50 s per family on an H200, model build included)",
    )
    p.add_argument("--compress", action="store_true")
    p.add_argument("--window-batches", type=int, default=2, help="batches per store window")
    p.add_argument("--device", default="cuda", help="cuda; cpu only for a --quick check of the script itself")
    p.add_argument("--peak-tflops", type=float, default=798.0)
    p.add_argument("--scan-configs", action="store_true", help="only time the Mamba scan/conv launch configs")
    p.add_argument("--out", default=os.environ.get("OUT", "benchmarks/out"))
    args = p.parse_args(argv)
    if args.stream_study:
        args.stream_every = args.stream_every or [1, 8, 64]
        args.breakdown = True
        args.naive_prompts, args.token_prompts, args.stream_prompts, args.long_tokens = 0, [], [], 0
        given = " ".join(sys.argv[1:] if argv is None else argv)
        if "--batch-size" not in given:
            args.batch_size = 16
        if "--n-batches" not in given:
            args.n_batches = 5
    if args.quick:
        args.tokens, args.long_tokens, args.naive_prompts = 256, 512, min(args.naive_prompts, 1)
        if args.stream_study:
            args.batch_size, args.n_batches = 4, 4
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import transformers

    gpu = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    env = (
        f"{gpu} | torch {torch.__version__} | transformers {transformers.__version__} "
        f"| python {platform.python_version()} | {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"
    )
    print(env, flush=True)
    if args.scan_configs:
        t = scan_configs(args)
        print(t)
        (out / "scan_configs.md").write_text(env + "\n\n" + t + "\n")
        return 0
    rows = []
    configs = full_configs(args.quick)
    work = Path(tempfile.mkdtemp(prefix="reprflow-bench-"))
    for name in args.models.split(","):
        cfg, tok = configs[name]
        try:
            rows.append(bench_model(name, cfg, tok, args, work))
        except Exception as exc:
            traceback.print_exc()
            rows.append(Row(model=name, error=f"{type(exc).__name__}: {str(exc)[:150]}"))
            _free(args.device)
        t = stream_table(rows, args) if args.stream_study else table(rows, args)
        stem = "stream" if args.stream_study else "extract"
        (out / f"{stem}_table.md").write_text(env + "\n\n" + t + "\n")
        (out / f"{stem}_rows.json").write_text(json.dumps([asdict(r) for r in rows], indent=1, default=str))
    shutil.rmtree(work, ignore_errors=True)
    print(env)
    print(t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
