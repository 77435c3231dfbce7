"""Forward throughput of the four paper families, side by side, with and without the
compiled kernels, and the Mamba-1 scan against its exp and memory bounds.

One command, one table per run. For each family (full-size random-init models built from
their known hyperparameters, no hub; bf16; random token ids, no padding) four rows:

* **hf naive**: transformers as a user would call it, eager attention, batch
  ``--naive-batch-size``, the compiled ``mamba_ssm`` / ``causal_conv1d`` hidden (so the
  SSMs take transformers' torch paths);
* **hf best**: transformers with SDPA attention (GPT-Neo has none in transformers; it stays
  eager) and every compiled kernel it finds installed, batch ``--batch-size``;
* **reprflow (no compiled)**: :func:`reprflow.fastpath.prepare_model` with the compiled
  packages hidden (reprflow's Triton kernels and ``mamba_ssm``'s Triton SSD remain);
* **reprflow**: ``prepare_model`` with everything installed; the kernel chooser picks;
* **reprflow, fusions off**: the same with ``prepare_model(fuse=False)`` (transformers'
  rounding order; what the fusions of docs/kernels.md are worth, in the same run).

"Hidden" rows run in a subprocess whose import system refuses ``selective_scan_cuda``,
``causal_conv1d`` and ``causal_conv1d_cuda`` (``mamba_ssm`` then loads as a bare package
with its Triton kernels only), so both sides run in one command. Each row: one warm-up
batch (kernel choice, Triton compiles; 256 tokens for the naive rows), then ``--batches`` timed batches of a forward
that returns every layer's state (transformers: ``output_hidden_states=True``; reprflow:
:func:`reprflow.capture.forward_states`, last-token states of all layers, as extraction).

Tokens/s counts tokens over the timed wall time. % of the roofline uses 2 x parameters
FLOPs per token (as benchmarks/extract.py) at ``--peak-tflops``, by default the best bf16 matmul
rate over :data:`ROOFLINE_SHAPES` measured at the start (the square 8192^3 and the SSMs' two large
projections; 782 TFLOP/s for the square on the H200).

Mamba-1 scan per layer (``B x T x 5120 channels x 16 states``, time-major views of one
fused projection as in the mixer), for each available scan and conv candidate:

* exp bound: one ``exp`` per token, channel and state at the ``ex2`` rate measured on this
  GPU at the start (``benchmarks/sfu_rate.py``; 3.74-3.78 T/s on the H200, whose clock
  under load is ~1.7 GHz), beside the data sheet's 132 SMs x 16 SFU ops/clock/SM x
  1.98 GHz = 4.18 T exp/s; on CPU (toy runs) only the latter;
* memory bound: bytes moved (read u, delta, z, B, C; write y; bf16) / the rate a device-to-device
  copy reaches on this GPU, measured at the start (:func:`copy_bytes_per_s`; 4.3 TB/s on the H200).

Usage (repository root)::

    PYTHONPATH=$PWD python benchmarks/kernels.py                       # H200: ~5 min, T=2048
    PYTHONPATH=$PWD python benchmarks/kernels.py --quick --device cpu  # toy sizes, seconds
"""

from __future__ import annotations

import argparse
import functools
import importlib.abc
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

SFU_EXP_PER_S = 132 * 16 * 1.98e9  # H200: SMs x SFU ops/clock/SM x boost clock (assumption)
HBM_BYTES_PER_S = 4.3e12  # H200 HBM3e, measured copy bandwidth; where no GPU measures it (copy_bytes_per_s)
H200_BF16_TFLOPS = 782.0  # bf16 matmul rate measured on the H200 (2026-12-03)
HIDDEN_MODULES = ("selective_scan_cuda", "causal_conv1d", "causal_conv1d_cuda")
FAMILIES = {"gpt_neo": "gpt-neo-2.7b", "gpt_neox": "pythia-2.8b", "mamba": "mamba-2.8b", "mamba2": "mamba2-2.7b"}


class _Refuse(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes the compiled kernel packages unimportable in this process: they are found
    (``find_spec`` is not None) but importing them raises ImportError, as a broken build would."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN_MODULES:
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        raise ImportError(f"{spec.name} hidden by benchmarks/kernels.py")

    def exec_module(self, module):  # never reached
        raise ImportError(module.__name__)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


#: GEMM shapes (M, K, N) whose best bf16 rate is the roofline: the square 8192^3 of every run
#: before 2026-12-05, and the paper SSMs' out_proj and in_proj at 64K tokens per pass, which ran
#: 10% and 5% faster than the square one on an H100 (762 and 728 against 695 TFLOP/s,
#: benchmarks/gemm_shapes.py), so the square alone understated that GPU's limit
ROOFLINE_SHAPES = ((8192, 8192, 8192), (65536, 5120, 2560), (65536, 2560, 10240))


def _best_seconds(fn, device: str, *, calls: int, warmup_s: float) -> float:
    """Seconds per call of ``fn``: the best of 5 trials of ``calls`` calls, after one call and (on a GPU)
    ``warmup_s`` of calls. A GPU idling at a low clock needs a moment of work to reach its rate, and
    the best trial, not the median, is what the hardware sustains."""
    fn()
    _sync(device)
    start = time.perf_counter()
    while device == "cuda" and time.perf_counter() - start < warmup_s:
        for _ in range(calls):
            fn()
        _sync(device)
    times = []
    for _ in range(5):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        _sync(device)
        times.append((time.perf_counter() - t0) / calls)
    return min(times)


def gemm_tflops(device: str, m: int, k: int, n: int, *, warmup_s: float = 1.0) -> float:
    """Rate of ``x (m x k)`` times ``W^T`` with ``W (n x k)`` (``F.linear``, nn.Linear's layout,
    the one every model projection runs) in TFLOP/s, bf16 on a GPU (float32 on a CPU): the best of
    5 trials of 20 products, after ``warmup_s`` of the same products on a GPU (:func:`_best_seconds`).

    From idle, the median of five short trials measured 735 and 770 TFLOP/s on the same H200
    minutes apart (2026-12-05). The layout matters: cuBLAS picks other kernels for ``x @ B`` with
    ``B (k x n)``, and on an H200 (2026-12-05) Mamba's out_proj shape ran at 750 TFLOP/s as
    ``F.linear`` against at most 711 as ``x @ B``."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    x = torch.randn(m, k, device=device, dtype=dtype)
    w = torch.randn(n, k, device=device, dtype=dtype)
    return 2 * m * k * n / _best_seconds(lambda: F.linear(x, w), device, calls=20, warmup_s=warmup_s) / 1e12


@functools.cache
def copy_bytes_per_s(device: str) -> float:
    """This GPU's memory bandwidth as a device-to-device copy reaches it, bytes (read + written) per
    second: the best of 5 trials of 10 copies of 1 GiB after 0.5 s of the same (:func:`_best_seconds`).
    The "memory bound" of the kernel tables divides by it (the H200 reached 4.3e12,
    :data:`HBM_BYTES_PER_S`; an H100 80GB HBM3 has 3.35e12 on its data sheet). Measured once per
    process; on a CPU the H200's constant (the toy runs only check that the tables print)."""
    if device != "cuda":
        return HBM_BYTES_PER_S
    src = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return 2 * src.numel() / _best_seconds(lambda: dst.copy_(src), device, calls=10, warmup_s=0.5)


def measure_peak_tflops(device: str, quick: bool, *, warmup_s: float = 1.0) -> float:
    """The roofline's matmul rate, TFLOP/s: the best :func:`gemm_tflops` over :data:`ROOFLINE_SHAPES`
    on a GPU (each divided by 4 with ``quick``), of one 256^3 float32 product on a CPU."""
    if device == "cpu":
        return gemm_tflops("cpu", 256, 256, 256)
    div = 4 if quick else 1
    return max(gemm_tflops(device, m // div, k // div, n // div, warmup_s=warmup_s) for m, k, n in ROOFLINE_SHAPES)


def compute_dtype_on(device: str) -> torch.dtype:
    """The benchmarks' compute dtype: bfloat16 on CUDA, float32 on the CPU."""
    return torch.bfloat16 if device == "cuda" else torch.float32  # CPU bf16 matmuls are emulated


def _compiled_found() -> str:
    from reprflow.kernels.optional import compiled_causal_conv1d, compiled_selective_scan

    return (
        f"compiled kernels: mamba_ssm {'yes' if compiled_selective_scan() else 'no'}, "
        f"causal_conv1d {'yes' if compiled_causal_conv1d() else 'no'}"
    )


def time_batches(
    run, ids: torch.Tensor, *, batch: int, n_batches: int, device: str, warm_tokens: int | None = None
) -> float:
    """Tokens/s of ``run(ids_batch)`` over ``n_batches`` batches after one warm-up batch
    (of ``warm_tokens`` tokens; default all, so that kernel choices happen before timing)."""
    with torch.no_grad():
        run(ids[:batch, :warm_tokens])
        _sync(device)
        t0 = time.perf_counter()
        for i in range(n_batches):
            run(ids[(i * batch) % ids.shape[0] :][:batch])
        _sync(device)
    return n_batches * batch * ids.shape[1] / (time.perf_counter() - t0)


def hf_forward(model):
    """transformers' forward: ``run(ids [B, T]) -> [n_states, B, d]``, every hidden state's last token."""

    def run(ids):
        out = model.base_model(input_ids=ids, output_hidden_states=True, use_cache=False)
        return torch.stack([h[:, -1] for h in out.hidden_states])

    return run


def cuda_tokens_per_s(fn, tokens: int, calls: int) -> float:
    """Tokens/s of ``calls`` back-to-back calls of ``fn`` on the GPU, each forwarding ``tokens`` tokens."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return calls * tokens / (time.perf_counter() - t0)


def alternating_order(names: list, rounds: int):
    """``(round, name)`` pairs for ``rounds`` rounds over ``names``, the order alternating (as
    given, reversed, as given, ...), so a clock that drifts during a run is shared among them."""
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            yield r, name


def alternating_rates(variants: dict, tokens: int, *, rounds: int, calls: int) -> dict[str, list[float]]:
    """Tokens/s of each of ``variants`` (name -> a call forwarding ``tokens`` tokens), one value per
    round, in :func:`alternating_order`."""
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _, name in alternating_order(list(variants), rounds):
        rates[name].append(cuda_tokens_per_s(variants[name], tokens, calls))
    return rates


def median_range(values: list[float]) -> str:
    """``"median (min-max)"`` of tokens/s values, or ``-`` when there are none."""
    if not values:
        return "-"
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def full_size_forward(name: str):
    """(config, run) for a model of ``extract.full_configs``: full size, random init, bf16 on the GPU,
    ``prepare_model`` applied, ``run`` as :func:`reprflow_forward`."""
    from extract import build_model, full_configs  # benchmarks/extract.py

    from reprflow.fastpath import prepare_model

    config, _ = full_configs(False)[name]
    model = build_model(config, dtype=torch.bfloat16, seed=0, device="cuda")
    prepare_model(model)
    return config, reprflow_forward(model)


def random_ids(vocab_size: int, shapes, device: str) -> dict[tuple[int, int], torch.Tensor]:
    """Token ids [batch, tokens] per (tokens, batch) shape, uniform over the vocabulary, seed 0."""
    gen = torch.Generator(device).manual_seed(0)
    return {
        (tokens, batch): torch.randint(0, vocab_size, (batch, tokens), device=device, generator=gen)
        for tokens, batch in shapes
    }


def family_table_main(args, time_family, table) -> int:
    """The tail of a per-family GPU benchmark (options of ``batch_tokens.add_gpu_family_args``):
    ``time_family(model name, args)`` rows for every family in ``args.families`` (the GPU's cache
    emptied between them), ``table(rows, gpu name)`` printed and, with ``args.out``, written to
    ``args.out / args.out_name``."""
    rows = []
    for family in args.families:
        rows += time_family(FAMILIES[family], args)
        torch.cuda.empty_cache()
    text = table(rows, torch.cuda.get_device_name())
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / args.out_name).write_text(text + "\n")
    print(text)
    return 0


def reprflow_forward(model):
    """reprflow's forward as extraction calls it: ``run(ids [B, T]) -> [n_states, B, d]`` (last tokens)."""
    from reprflow.capture import forward_states

    def run(ids):
        return forward_states(model, ids, torch.ones_like(ids), check_padding=False).last

    return run


def _set_attention(model, impl: str) -> str:
    try:
        model.set_attn_implementation(impl)
    except Exception:  # GPT-Neo: eager (or flash_attention_2) only
        pass
    return getattr(model.config, "_attn_implementation", None) or "eager"


def chosen_kernels(report: dict) -> str:
    """One line naming the kernels a prepare_model report ended up with."""
    parts = [f"attn {report['attention']}"] if report.get("attention") not in (None, "none") else []
    for op, classes in report.get("kernels", {}).items():
        names = sorted({e["kernel"] for e in classes.values()})
        parts.append(f"{op} {'/'.join(names)}")
    if not report.get("kernels") and report.get("scan") not in (None, "none"):
        parts.append(f"scan {report['scan']}")
    return ", ".join(parts)


def bench_family(family: str, args, *, hidden: bool, peak: float) -> list[dict]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from extract import build_model, full_configs, n_params  # benchmarks/extract.py

    from reprflow.fastpath import prepare_model

    config, _ = full_configs(args.quick)[FAMILIES[family]]
    model = build_model(config, dtype=compute_dtype_on(args.device), seed=0, device=args.device)
    ceiling = peak * 1e12 / (2 * n_params(model))
    ids = torch.randint(
        0,
        config.vocab_size,
        (max(args.batch_size, args.naive_batch_size), args.tokens),
        device=args.device,
        generator=torch.Generator(args.device).manual_seed(0),
    )
    rows = []

    def row(path, kernels, batch, rate):
        rows.append(
            {
                "family": family,
                "path": path,
                "kernels": kernels,
                "batch": batch,
                "tokens_per_s": rate,
                "pct_roofline": 100 * rate / ceiling,
            }
        )
        print(f"  {family:9s} {path:24s} {rate:10.0f} tok/s  {kernels}", flush=True)

    ssm = family in ("mamba", "mamba2")
    if hidden:
        attn = _set_attention(model, "eager")
        rate = time_batches(
            hf_forward(model),
            ids,
            batch=args.naive_batch_size,
            n_batches=args.naive_batches,
            device=args.device,
            warm_tokens=min(args.tokens, 256),
        )
        row("hf naive", "transformers' torch SSM path" if ssm else f"attn {attn}", args.naive_batch_size, rate)
    else:
        attn = _set_attention(model, "sdpa")
        rate = time_batches(hf_forward(model), ids, batch=args.batch_size, n_batches=args.batches, device=args.device)
        row("hf best", f"transformers' choice; {_compiled_found()}" if ssm else f"attn {attn}", args.batch_size, rate)
    report = prepare_model(model)
    rate = time_batches(reprflow_forward(model), ids, batch=args.batch_size, n_batches=args.batches, device=args.device)
    row("reprflow (no compiled)" if hidden else "reprflow", chosen_kernels(report), args.batch_size, rate)
    del model
    if args.device == "cuda":
        torch.cuda.empty_cache()
    if not hidden:  # the same, without the fusions (transformers' rounding order): what they are worth
        model = build_model(config, dtype=compute_dtype_on(args.device), seed=0, device=args.device)
        report = prepare_model(model, fuse=False)
        rate = time_batches(
            reprflow_forward(model), ids, batch=args.batch_size, n_batches=args.batches, device=args.device
        )
        row("reprflow, fusions off", chosen_kernels(report), args.batch_size, rate)
        del model
        if args.device == "cuda":
            torch.cuda.empty_cache()
    return rows


def bench_mamba_scan(args) -> list[dict]:
    """Per-layer time of every available Mamba-1 scan and conv candidate at the paper shape."""
    from reprflow.kernels.ops import causal_conv_op, mamba_scan_op

    dev = torch.device(args.device)
    batch, n_tokens = args.batch_size, args.tokens
    channels, d_state = (1024, 16) if args.quick else (5120, 16)
    g = torch.Generator(args.device).manual_seed(0)
    dt = compute_dtype_on(args.device)

    def rnd(*shape, scale=1.0):
        return (scale * torch.randn(*shape, device=dev, generator=g)).to(dt)

    xz = rnd(batch, n_tokens, 2 * channels)  # in_proj output: x and z are views, as in the mixer
    u, z = xz[..., :channels], xz[..., channels:]
    dbl = rnd(batch, n_tokens, 160 + 2 * d_state)  # x_proj output: dt_rank + B + C
    B, C = dbl[..., 160 : 160 + d_state], dbl[..., 160 + d_state :]
    delta = rnd(batch, n_tokens, channels, scale=0.5)
    A = -torch.exp(torch.rand(channels, d_state, device=dev, generator=g) * 2.7)
    D, dt_bias = torch.ones(channels, device=dev), torch.full((channels,), -3.0, device=dev)
    w, b = rnd(channels, 4), rnd(channels)
    n = batch * n_tokens * channels
    exp_ms = 1e3 * n * d_state / args.exp_rate
    elt = torch.finfo(dt).bits // 8
    mem_ms = 1e3 * (4 * n * elt + 2 * batch * n_tokens * d_state * elt) / copy_bytes_per_s(args.device)
    rows = []

    def timed(fn) -> float:
        with torch.no_grad():
            fn()
            ts = []
            for _ in range(5):
                _sync(args.device)
                t0 = time.perf_counter()
                fn()
                _sync(args.device)
                ts.append(1e3 * (time.perf_counter() - t0))
        return statistics.median(ts)

    scan_op = mamba_scan_op(dev, report={})
    for c in scan_op.candidates:
        if not c.timed and args.device == "cuda":
            continue  # the per-token torch loop: seconds per layer, not a contender
        ms = timed(lambda: c.fn(u, delta, A, B, C, D, z, delta_bias=dt_bias, delta_softplus=True))
        rows.append({"op": "mamba_scan", "kernel": c.name, "ms": ms, "exp_bound_ms": exp_ms, "mem_bound_ms": mem_ms})
    conv_mem_ms = 1e3 * 2 * n * elt / copy_bytes_per_s(args.device)
    for c in causal_conv_op(dev, report={}).candidates:
        ms = timed(lambda: c.fn(u, w, b))
        rows.append(
            {"op": "causal_conv", "kernel": c.name, "ms": ms, "exp_bound_ms": None, "mem_bound_ms": conv_mem_ms}
        )
    for r in rows:
        print(f"  {r['op']:11s} {r['kernel']:14s} {r['ms']:8.3f} ms/layer", flush=True)
    return rows


def worker(args) -> int:
    hidden = args.worker == "hidden"
    if hidden:
        sys.meta_path.insert(0, _Refuse())
    peak = args.peak_tflops or measure_peak_tflops(args.device, args.quick)
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    args.exp_rate = SFU_EXP_PER_S
    if args.device == "cuda" and not hidden and "mamba" in args.families:
        from sfu_rate import measure_exp_rate  # benchmarks/sfu_rate.py

        args.exp_rate = measure_exp_rate()
    out = {"peak_tflops": peak, "device": gpu, "rows": [], "scan": [], "exp_rate": args.exp_rate}
    out["copy_rate"] = copy_bytes_per_s(args.device)
    for family in args.families:
        out["rows"] += bench_family(family, args, hidden=hidden, peak=peak)
    if not hidden and "mamba" in args.families:
        out["scan"] = bench_mamba_scan(args)
    Path(args.json).write_text(json.dumps(out))
    return 0


def table(results: dict[str, dict], args) -> str:
    # each worker measures the matmul rate at its start (they differ by a few %); every row is
    # put against the higher of the two, so that rows of both workers compare
    peaks = {mode: results[mode]["peak_tflops"] for mode in ("hidden", "visible")}
    peak = max(peaks.values())
    order = ["hf naive", "hf best", "reprflow (no compiled)", "reprflow, fusions off", "reprflow"]
    rows = sorted(
        [
            {**r, "pct_roofline": r["pct_roofline"] * peaks[mode] / peak}
            for mode in peaks
            for r in results[mode]["rows"]
        ],
        key=lambda r: (args.families.index(r["family"]), order.index(r["path"])),
    )
    gpu = results["visible"]["device"]
    lines = [
        f"Forward throughput, {gpu}, T={args.tokens}, {str(compute_dtype_on(args.device))[6:]}, random init"
        f"{' (quick: toy sizes)' if args.quick else ''}; roofline = {peak:.3g} TFLOP/s / (2 x params) per token "
        f"(the higher of the two workers' measured matmul rates, {peaks['hidden']:.0f} and {peaks['visible']:.0f})",
        "",
        "| family | path | batch | tokens/s | % roofline | kernels |",
        "|---|---|---:|---:|---:|---|",
    ]
    lines += [
        f"| {r['family']} | {r['path']} | {r['batch']} | {r['tokens_per_s']:,.0f} | {r['pct_roofline']:.1f} | "
        f"{r['kernels']} |"
        for r in rows
    ]
    scan = results["visible"]["scan"]
    if scan:
        lines += [
            "",
            f"Mamba-1 per layer, B={args.batch_size}, T={args.tokens}: exp bound = 1 exp per token x channel x state "
            f"at {results['visible']['exp_rate'] / 1e12:.2f} T exp/s "
            + (
                "(measured here, benchmarks/sfu_rate.py; "
                if results["visible"]["exp_rate"] != SFU_EXP_PER_S
                else "(data sheet: "
            )
            + f"132 SMs x 16 SFU/clk x 1.98 GHz would be {SFU_EXP_PER_S / 1e12:.2f}); "
            f"memory bound = bytes / {results['visible']['copy_rate'] / 1e12:.2f} TB/s "
            "(a device-to-device copy's rate, measured here)",
            "",
            *scan_table(scan),
        ]
    return "\n".join(lines)


def scan_table(scan: list[dict], *, shapes: bool = False) -> list[str]:
    """Markdown lines of :func:`bench_mamba_scan`'s rows against their bounds; with ``shapes``, a
    first column "tokens x prompts" from each row's ``tokens`` and ``batch`` keys."""
    lead = ("| tokens x prompts ", "|---") if shapes else ("", "")
    lines = [
        f"{lead[0]}| op | kernel | ms/layer | exp bound ms | x exp bound | memory bound ms | x memory bound |",
        f"{lead[1]}|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in scan:
        e = r["exp_bound_ms"]
        bound = ("", "") if e is None else (f"{e:.3f}", f"{r['ms'] / e:.2f}")
        shape = f"| {r['tokens']} x {r['batch']} " if shapes else ""
        lines.append(
            f"{shape}| {r['op']} | {r['kernel']} | {r['ms']:.3f} | {bound[0]} | {bound[1]} | "
            f"{r['mem_bound_ms']:.3f} | {r['ms'] / r['mem_bound_ms']:.2f} |"
        )
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    p.add_argument("--quick", action="store_true", help="toy model sizes (2 layers, width 512), T=64")
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--tokens", type=int, default=None, help="tokens per prompt (default 2048; 64 with --quick)")
    p.add_argument("--batch-size", type=int, default=None, help="default 16 (2 with --quick)")
    p.add_argument("--batches", type=int, default=3, help="timed batches per row")
    p.add_argument("--naive-batch-size", type=int, default=1)
    p.add_argument("--naive-batches", type=int, default=1)
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help=f"roofline; default: measured at the start (H200: {H200_BF16_TFLOPS:.0f})",
    )
    p.add_argument("--out", type=Path, default=None, help="also write the table (kernels.md) and raw JSON here")
    p.add_argument("--worker", choices=["hidden", "visible"], help=argparse.SUPPRESS)
    p.add_argument("--json", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.tokens = args.tokens or (64 if args.quick else 2048)
    args.batch_size = args.batch_size or (2 if args.quick else 16)
    if args.worker:
        return worker(args)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("hidden", "visible"):
            print(f"== {mode} compiled kernels", flush=True)
            path = Path(tmp) / f"{mode}.json"
            cmd = [
                sys.executable,
                __file__,
                *(argv if argv is not None else sys.argv[1:]),
                "--worker",
                mode,
                "--json",
                str(path),
            ]
            if subprocess.run(cmd).returncode != 0:
                print(f"worker '{mode}' failed", file=sys.stderr)
                return 1
            results[mode] = json.loads(path.read_text())
    text = table(results, args)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "kernels.md").write_text(text + "\n")
        (args.out / "kernels.json").write_text(json.dumps(results, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
