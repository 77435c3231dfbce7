"""One paper cell end to end, split by stage: prompt file -> model -> store + streamed
token metrics -> probes.json, with the GPU's busy fraction during extraction.

The cell is the one the paper run spends most on (issue 15): Mamba-2.8B, MDQA, 2K tokens,
random init (no hub here; the compute equals the pretrained arm's), the paper config's
settings (bf16, ``tokens: stream`` with its 64 token prompts, ``batch_tokens // length`` or
``batch_size`` prompts per forward, probes with 5 seeds x 150 epochs), ``--n-prompts`` prompts
instead of 25,000. It calls the functions the Snakemake rules call
(:func:`reprflow.pipeline.prompt_stage.build_prompt_file`,
:func:`reprflow.pipeline.extract_stage.run_extraction`,
:func:`reprflow.pipeline.probe_stage.run_probe_stage`), so what it times is what a run pays.

Stages timed (wall seconds):

* **prompts**: building the prompt file (CPU; the paper run builds each set once for all models);
* **model load**: tokenizer + model built on the GPU (random init) + fast-path preparation,
  measured by a separate :func:`reprflow.models.registry.load_model` call;
* **tokenisation**: one batched tokenizer call over every prompt (the reference cost; inside
  extraction the same ids are made window by window in a background thread,
  :class:`reprflow.token_ids.TokenIds`, so only the first window's share delays the GPU);
* **extraction**: ``run_extraction`` whole (its own model load included, subtracted in the
  table), i.e. GPU compute, device-to-host copies, checks, Zarr writes and the streamed token
  metrics, overlapped by the background threads; its split comes from the store attr
  ``timing["stages"]`` (seconds of each thread's work: tokenizer, copy waits, check + write,
  token metrics, and what the launching thread waited for: token ids, a full writer queue,
  the final drain);
* **forward only**: the same batches through :func:`reprflow.capture.forward_states` with no
  sink (the GPU-compute floor of the extraction stage);
* **probes**: ``run_probe_stage`` on the store (paper protocol).

GPU busy fraction: ``nvidia-smi`` sampled every 100 ms during the extraction stage (the
fraction of each sample period in which a kernel ran), reported twice: the mean over the samples
between the first and last busy sample (the stage: its model build on the GPU and fast-path
preparation included), and the mean over the extraction loop, the phase in which a slow writer
would stall the GPU: the ``seconds`` the store records for its loop, ending when extraction logs
its summary line (just after the store's finalize, so the window is shifted late by the
finalize's time: a lower bound). The JSON keeps every sample, seconds from the stage's start. Roofline: 2 x parameters FLOPs per token at
``--peak-tflops``, by default measured on this GPU at the start (``kernels.measure_peak_tflops``;
the constant 782 TFLOP/s, an H200's, off a GPU).

Usage (repository root, GPU machine, ``.gpu/`` carried as benchmarks/extract_gpu.sh does)::

    PYTHONPATH=$PWD python benchmarks/cell.py --n-prompts 800 --out $OUT      # H200: ~1.5 min
    PYTHONPATH=$PWD python benchmarks/cell.py --n-prompts 800 --n-token-prompts 2 --out $OUT  # paper density
    PYTHONPATH=$PWD python benchmarks/cell.py --n-prompts 400 --trace --out $OUT  # + a torch.profiler trace
    PYTHONPATH=$PWD python benchmarks/cell.py --quick                          # CPU smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reprflow.config import load_configs  # noqa: E402
from reprflow.devices import resolve_device  # noqa: E402
from reprflow.extract import capture_batches  # noqa: E402
from reprflow.fastpath import prepare_model  # noqa: E402
from reprflow.models.init_schemes import InitSpec  # noqa: E402
from reprflow.models.registry import load_model  # noqa: E402
from reprflow.models.tiny import build_tiny_model  # noqa: E402
from reprflow.pipeline.extract_stage import batch_size_for, compute_dtype_for, run_extraction  # noqa: E402
from reprflow.pipeline.probe_stage import run_probe_stage  # noqa: E402
from reprflow.pipeline.prompt_stage import build_prompt_file  # noqa: E402
from reprflow.prompts.dataset import read_prompt_set  # noqa: E402
from reprflow.prompts.tokenizers import load_tokenizer  # noqa: E402
from reprflow.store import open_store  # noqa: E402
from reprflow.token_ids import tokenize_prompts  # noqa: E402
from reprflow.training.loop import untrained_config  # noqa: E402
from reprflow.training.recipe import TrainSpec  # noqa: E402

from kernels import H200_BF16_TFLOPS, measure_peak_tflops  # noqa: E402  (benchmarks/kernels.py)


class LoopEnd(logging.Handler):
    """``time.perf_counter()`` when ``reprflow.extract`` logs a store's summary line (its loop has ended)."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.at: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.at is None and " tok/s (padding " in record.getMessage():
            self.at = time.perf_counter()

    @contextlib.contextmanager
    def attached(self):
        log = logging.getLogger("reprflow.extract")
        level = log.level
        log.addHandler(self)
        if log.getEffectiveLevel() > logging.INFO:
            log.setLevel(logging.INFO)
        try:
            yield self
        finally:
            log.removeHandler(self)
            log.setLevel(level)


class GpuSampler:
    """``nvidia-smi`` utilisation every ``period_ms`` in a background thread (CUDA only)."""

    def __init__(self, period_ms: int = 100) -> None:
        self.samples: list[tuple[float, float]] = []
        self.period_ms = period_ms
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        if torch.cuda.is_available() and shutil.which("nvidia-smi"):
            self._proc = subprocess.Popen(
                [
                    "nvidia-smi",
                    "--query-gpu=utilization.gpu",
                    "--format=csv,noheader,nounits",
                    f"-lms={self.period_ms}",
                    f"--id={torch.cuda.current_device()}",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        return self

    def _read(self) -> None:
        for line in self._proc.stdout:
            try:
                self.samples.append((time.perf_counter(), float(line.strip())))
            except ValueError:
                continue

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait()

    def busy(self, between: tuple[float, float] | None = None) -> tuple[float | None, int]:
        """Mean utilisation (fraction) and the sample count: over the samples taken ``between`` two
        ``time.perf_counter()`` values, or (None) between the first and last busy sample."""
        if between is not None:
            window = [v for t, v in self.samples if between[0] <= t <= between[1]]
        else:
            values = [v for _, v in self.samples]
            busy_idx = [i for i, v in enumerate(values) if v > 0]
            window = values[busy_idx[0] : busy_idx[-1] + 1] if busy_idx else []
        if not window:
            return None, len(window)
        return sum(window) / (100.0 * len(window)), len(window)


@contextlib.contextmanager
def stage_trace(enabled: bool):
    """A torch.profiler session (CPU and CUDA activity) around the block when ``enabled``, else None."""
    if not enabled:
        yield None
        return
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        yield prof


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def forward_only(model, tokenizer, prompts, *, batch_size: int, device: torch.device) -> tuple[float, int]:
    """Seconds and real tokens of the extraction's own batches (:func:`reprflow.extract.capture_batches`:
    same tokenisation, length buckets, padding and pinned copies) with no sink consuming them.
    The first batch warms up and is not timed."""
    ids = tokenize_prompts(tokenizer, prompts, range(len(prompts)), prompt_file="benchmark")
    batches = capture_batches(
        model,
        ids,
        [(None, range(len(prompts)))],
        batch_size=batch_size,
        pad_id=tokenizer.pad_token_id,
        device=device,
        verify_hf=False,
    )
    n_tokens, t0 = 0, None
    with torch.inference_mode():
        for i, batch in enumerate(batches):
            if i == 0:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            else:
                n_tokens += sum(batch.lengths)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, n_tokens


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mamba-2.8b", help="a model of config/config.yaml")
    p.add_argument("--task", default="mdqa", choices=["mdqa", "kvpr"])
    p.add_argument("--length", type=int, default=2048)
    p.add_argument("--n-prompts", type=int, default=2000)
    p.add_argument("--quick", action="store_true", help="CPU smoke test: tiny Mamba, 300 tokens, 40 prompts")
    p.add_argument(
        "--n-token-prompts",
        type=int,
        default=None,
        help="streamed float64 token prompts (default: the config's 64; the paper streams 64 of 25,000 "
        "prompts, so 2 gives its density at 800 prompts)",
    )
    p.add_argument(
        "--metrics-precision",
        choices=["float64", "mixed"],
        default=None,
        help="metrics.precision of the streamed token metrics (default: the config's)",
    )
    p.add_argument("--peak-tflops", type=float, default=None, help="default: measured on this GPU")
    p.add_argument(
        "--trace",
        action="store_true",
        help="profile the extraction stage (torch.profiler, CPU and CUDA) into OUT/cell_trace.json.gz "
        "(a diagnostic run: the profiler slows the stage, so use fewer prompts)",
    )
    p.add_argument("--workdir", type=Path, default=None, help="where prompt file and store go (default a temp dir)")
    p.add_argument("--out", type=Path, default=None, help="also write cell.md and cell.json here")
    args = p.parse_args(argv)
    if args.trace and args.out is None:
        p.error("--trace writes OUT/cell_trace.json.gz: give --out")
    peak_tflops = args.peak_tflops
    if peak_tflops is None:
        peak_tflops = measure_peak_tflops("cuda", False) if torch.cuda.is_available() else H200_BF16_TFLOPS

    config = load_configs([ROOT / "config" / ("demo.yaml" if args.quick else "config.yaml")])
    work = Path(args.workdir or tempfile.mkdtemp(prefix="reprflow-cell-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.quick:
        args.model, args.length, args.n_prompts = "tiny-mamba", 300, 40
    spec = config.model(args.model)
    if spec.tiny is not None:  # a demo model: build it into the work dir as its rule would
        spec = dataclasses.replace(spec, hf_id=str(work / "model"))
        build_tiny_model(
            spec.family, out_dir=spec.hf_id, seed=spec.tiny.get("seed", 0), overrides=spec.tiny.get("overrides") or None
        )
    elif spec.train is not None and not Path(spec.hf_id).exists():  # a model the workflow trains (the demo's)
        # the cell runs random init, so its untrained architecture is all it needs
        spec = dataclasses.replace(spec, hf_id=str(work / "model"))
        arch = untrained_config(
            spec.family, TrainSpec.from_dict(spec.train), spec.tokenizer, positions=spec.max_context or args.length
        )
        AutoModelForCausalLM.from_config(arch).save_pretrained(spec.hf_id)
    model = asdict(spec)
    init = {"name": "random", "scheme": "default", "params": {}, "scope": "all"}
    prompts_cfg = {**config.section("prompts"), "n_prompts": args.n_prompts}
    # the paper config's setting (the --quick demo config stores token states instead)
    extraction = {**config.section("extraction"), **config.execution("extraction"), "tokens": "stream"}
    if args.n_token_prompts is not None:
        extraction["n_token_prompts"] = args.n_token_prompts
    batch_size = batch_size_for(extraction, args.length, spec.family)  # prompts per forward, as run_extraction takes it
    metrics = {**config.section("metrics"), **config.execution("metrics")}
    if args.metrics_precision is not None:
        metrics["precision"] = args.metrics_precision
    probes_cfg = {**config.section("probes"), "n_train": int(args.n_prompts * 0.8)}
    device = resolve_device(extraction["device"])
    dtype = compute_dtype_for(extraction["compute_dtype"], device)
    prompt_path = work / f"{args.task}_n{args.length}.jsonl"
    store_path = work / f"{args.task}_n{args.length}.zarr"
    times: dict[str, float] = {}

    _, times["prompts"] = timed(
        build_prompt_file,
        prompt_path,
        task=args.task,
        length=args.length,
        tokenizer=spec.tokenizer,
        seed=config.seed,
        settings=prompts_cfg,
        max_tokens=spec.max_context,
    )
    prompts = read_prompt_set(prompt_path)

    def load():
        tok = load_tokenizer(spec.tokenizer)
        net = load_model(
            spec.hf_id,
            init=InitSpec(scheme="default", params={}),
            seed=config.seed,
            dtype=dtype,
            device=device,
            tokenizer_size=len(tok),
            family=spec.family,
        )
        prepare_model(net)
        return tok, net

    (tokenizer, net), times["model load"] = timed(load)
    # one batched call, as extraction makes it (inside the extraction stage's time too)
    _, times["tokenisation"] = timed(
        tokenize_prompts, tokenizer, prompts, range(len(prompts)), prompt_file=str(prompt_path)
    )
    times["forward only"], fwd_tokens = forward_only(net, tokenizer, prompts, batch_size=batch_size, device=device)
    n_params = sum(q.numel() for q in net.parameters())
    del net
    if device.type == "cuda":
        torch.cuda.empty_cache()

    t_stage = time.perf_counter()
    with GpuSampler() as sampler, LoopEnd().attached() as loop_end, stage_trace(args.trace) as trace:
        _, times["extraction (with its load)"] = timed(
            run_extraction,
            prompt_path,
            store_path,
            model=model,
            init=init,
            task=args.task,
            length=args.length,
            seed=config.seed,
            settings=extraction,
            config_digest="benchmark",
            origin=f"models[{args.model}]",
            metrics_dir=work / "token_metrics",
            metrics=metrics,
        )
    if trace is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        trace.export_chrome_trace(str(args.out / "cell_trace.json.gz"))  # torch gzips a .gz path
    busy, n_samples = sampler.busy()
    # the extraction loads the model again (warm caches: faster than the first load above), so
    # its own load is not the first load's time; the store records the loop's time itself
    timing = dict(open_store(store_path).attrs["timing"])
    stages = timing.get("stages", {})
    store_s, metrics_s = stages.get("store", {}), stages.get("token_metrics", {})
    times["extraction loop"] = timing["seconds"]
    loop_window = (loop_end.at - timing["seconds"], loop_end.at) if loop_end.at is not None else None
    busy_loop, n_loop = sampler.busy(loop_window) if loop_window else (None, 0)
    # what the launching thread waited for (the GPU starves only if its queue of kernels drains)
    waited = {
        "token ids": stages.get("tokenise_wait", 0.0),
        "a full writer queue": store_s.get("stall", 0.0) + metrics_s.get("stall", 0.0),
        "the writers after the last batch": store_s.get("drain", 0.0) + metrics_s.get("drain", 0.0),
    }
    _, times["probes"] = timed(
        run_probe_stage,
        store_path,
        work / "probes.csv",
        views=metrics["views"],
        epochs=probes_cfg["epochs"],
        lr=probes_cfg["lr"],
        seeds=probes_cfg["seeds"],
        val_fraction=probes_cfg["val_fraction"],
        standardize=probes_cfg["standardize"],
        n_train=probes_cfg["n_train"],
        device=config.execution("probes").get("device", "auto"),
        matmul_precision=probes_cfg["matmul_precision"],
        prompt_path=prompt_path,
    )

    n_tokens = sum(int(x.get("n_tokens", 0)) for x in prompts) or None
    ceiling = peak_tflops * 1e12 / (2 * n_params)
    end_to_end = times["extraction (with its load)"] + times["probes"]
    fwd_rate = fwd_tokens / times["forward only"]
    rows = [
        ("prompts (CPU, once per set)", times["prompts"], ""),
        ("model load (tokenizer, build on GPU, fast path)", times["model load"], ""),
        ("tokenisation (all prompts, one batched call; reference)", times["tokenisation"], ""),
        (
            "forward only (no sink)",
            times["forward only"],
            f"{fwd_rate / 1e3:.1f}K tok/s, {fwd_rate / ceiling:.0%} of roofline",
        ),
        (
            "extraction loop: compute + copies + writes + streamed metrics",
            times["extraction loop"],
            f"{n_tokens / times['extraction loop'] / 1e3:.1f}K tok/s, "
            f"{n_tokens / times['extraction loop'] / ceiling:.0%} of roofline"
            if n_tokens
            else "",
        ),
        *((f"&nbsp; launching thread waited for {what}", sec, "") for what, sec in waited.items()),
        ("&nbsp; [tokenizer thread] tokenisation", stages.get("tokenise", 0.0), "overlapped"),
        ("&nbsp; [writer thread] waiting for device-to-host copies", store_s.get("copy_wait", 0.0), "overlapped"),
        (
            "&nbsp; [writer thread] checks, conversion, compression, Zarr writes",
            store_s.get("write", 0.0) + store_s.get("create", 0.0),
            "overlapped",
        ),
        (
            "&nbsp; [metrics thread] streamed token metrics (side CUDA stream)",
            metrics_s.get("compute", 0.0),
            "overlapped",
        ),
        (
            "extraction outside its loop (its own model load, fast-path prep, store open + finalize, metric files)",
            times["extraction (with its load)"] - times["extraction loop"],
            "",
        ),
        ("probes (5 seeds x 150 epochs, both views)", times["probes"], ""),
        (
            "cell end to end (extraction with its load + probes)",
            end_to_end,
            f"{n_tokens / end_to_end / 1e3:.1f}K tok/s, {n_tokens / end_to_end / ceiling:.0%} of roofline"
            if n_tokens
            else "",
        ),
    ]
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    lines = [
        f"{gpu} | torch {torch.__version__} | {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"cell: {args.model} random init, {args.task} {args.length} tokens, {len(prompts)} prompts "
        f"({n_tokens} tokens), batch {batch_size}, {dtype}, tokens: {extraction.get('tokens')} "
        f"({extraction['n_token_prompts']} token prompts, metrics {metrics.get('precision') or 'float64'}); roofline {ceiling / 1e3:.0f}K tok/s",
        "",
        "| stage | seconds | rate |",
        "|---|---|---|",
        *[f"| {name} | {sec:.1f} | {rate} |" for name, sec, rate in rows],
        "",
        f"GPU busy during extraction: {busy:.1%} of {n_samples} samples (100 ms); during its loop "
        + (
            f"{busy_loop:.1%} of {n_loop} (a lower bound: the window ends after the store's finalize)"
            if busy_loop is not None
            else "not measured"
        )
        if busy is not None
        else "GPU busy during extraction: not sampled (no CUDA / nvidia-smi)",
        f"extraction overhead over forward-only: {times['extraction loop'] / (n_tokens / fwd_rate) - 1:+.0%}"
        if n_tokens
        else "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "cell.md").write_text(text + "\n")
        (args.out / "cell.json").write_text(
            json.dumps(
                {
                    "times": times,
                    "stages": stages,
                    "busy": busy,
                    "busy_loop": busy_loop,
                    "loop_window_s": [t - t_stage for t in loop_window] if loop_window else None,
                    "samples": [[round(t - t_stage, 3), v] for t, v in sampler.samples],
                    "n_tokens": n_tokens,
                    "n_params": n_params,
                    "ceiling_tok_s": ceiling,
                },
                indent=1,
            )
        )
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
