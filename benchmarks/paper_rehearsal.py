"""Summarise a paper-config rehearsal run and project the full paper run from it.

A rehearsal runs ``snakemake results/table1.csv`` on the paper config with a reduced prompt
count (``benchmarks/paper_rehearsal_gpu.sh`` on one GPU). This script reads what that run left:

- Snakemake's ``benchmark:`` files (``<root>/logs/benchmarks/<phase>/...tsv``): wall seconds per job;
- each activation store's ``zarr.json`` attrs (``timing``: tokens, seconds of GPU extraction);
- each store's bytes on disk, split into its ``last`` and ``tokens`` arrays;

and prints markdown tables: per-rule time, per-cell extraction (tok/s, load overhead, disk),
and a projection of the full paper run (every cell at ``--full-prompts`` prompts and
``--full-token-prompts`` token prompts) in GPU-hours, wall time on 1/2/4/8 GPUs and disk.

Projection model, per extraction cell of the full run::

    overhead + warm-up + tokens_full / rate + token_prompts_full x stream_s

* ``overhead``: the measured job time minus its extraction seconds (imports, model build or
  load, store open/finalise), less the time it waited for a GPU (``timing.startup.gpu_wait``);
  with ``--start-ahead`` (``execution.jobs_per_gpu`` >= 2: the next job of a GPU starts up
  while the current one computes) also less its start-up before the claim (process, prompts,
  tokenizer), which then costs the GPU nothing;
* ``rate``: the model's steady-state tokens/s from ``--rates`` (``benchmarks/extract.py`` on
  the same GPU); without it the cell's own rehearsal rate, which includes the warm-up
  (Triton compiles and autotuning, the kernel chooser's first-use timings, the hf-view check)
  and so over-estimates a large cell, sometimes tenfold;
* ``warm-up``: the rehearsal's extraction seconds beyond ``tokens / rate`` and its streamed
  metrics (0 without ``--rates``: it is inside the rate then);
* ``tokens_full``: the rehearsal's tokens times ``full_prompts / n_prompts`` for a ``scope:
  all`` cell, times ``full_token_prompts / n_token_prompts`` for a ``scope: fig3`` cell (it
  forwards only its token prompts);
* ``stream_s``: seconds of streamed token metrics per token prompt (``--stream-s``; the H200's
  float64 metrics take about 0.07 s per 2048-token prompt of a 2.7B model), with ``tokens:
  stream``.

Probes per cell: the rehearsal's probe job (start-up, reading, a small fit) plus the paper-size
fit (``--probe-fit-s``; 10.2 s on the H100, BENCHMARKS.md) plus reading the full ``last`` array
at ``--read-bytes-per-s``. Token-metric jobs (``tokens: store``) scale with token prompts.
Disk: ``last`` bytes scale with prompts (fig3 cells: with token prompts), ``tokens`` bytes with
token prompts.

A rehearsal whose stores are gone (a GPU machine given back) is re-projected from its earlier
summary: ``--cells-md`` names the markdown this script printed (its per-cell table), and
``--root`` a folder holding the run's ``logs/benchmarks``.

Usage::

    python benchmarks/paper_rehearsal.py --root . --n-prompts 200 --n-token-prompts 2 \
        --full-prompts 25000 --full-token-prompts 64 [--pretrained-arm] \
        [--rates gpt-neo-2.7b=92600,mamba-2.8b=67700] [--stream-s 0.07] [--cells-md old_summary.md]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
from collections import defaultdict
from datetime import datetime
from pathlib import Path


def tree_bytes(path: Path) -> int:
    """Bytes of all files under ``path`` (apparent size; 0 if missing)."""
    if not path.exists():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def read_benchmarks(root: Path) -> list[dict]:
    """One row per Snakemake benchmark file: phase, cell key, wall seconds, max RSS (MB)."""
    rows = []
    base = root / "logs" / "benchmarks"
    for tsv in sorted(base.rglob("*.tsv")):
        with tsv.open() as fh:
            rec = next(csv.DictReader(fh, delimiter="\t"), None)
        if rec is None:
            continue
        rel = tsv.relative_to(base)
        rows.append(
            {
                "phase": rel.parts[0],
                "key": str(rel.with_suffix(""))[len(rel.parts[0]) + 1 :],
                "seconds": float(rec["s"]),
                "max_rss_mb": float(rec.get("max_rss") or "nan")
                if rec.get("max_rss") not in (None, "NA", "-")
                else math.nan,
            }
        )
    return rows


def read_snakemake_log(path: Path) -> list[dict]:
    """Jobs from a Snakemake console log (start/finish stamps, 1 s resolution): the fallback
    when a killed run left no benchmark files, and the start times a node timeline needs. Rows:
    rule, key (``model/init/task_nL`` or the wildcards), log (the job's first log file), start,
    end (None if it never finished), seconds."""
    # a stamp ends its line; a progress bar's carriage-return output may precede it on that line
    stamp = re.compile(r"\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]\s*$")
    jobs: dict[str, dict] = {}
    now = current = None
    for line in path.read_text().splitlines():
        if m := stamp.search(line):
            now = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
        elif m := re.match(r"^(?:local)?rule (\w+):$", line.strip()):
            current = {"rule": m.group(1), "start": now, "end": None, "key": "", "log": None}
        elif current is not None and (m := re.match(r"^jobid: (\d+)$", line.strip())):
            jobs[m.group(1)] = current
        elif current is not None and line.strip().startswith("log:"):
            current["log"] = line.strip()[len("log: ") :].split(", ")[0]
        elif current is not None and line.strip().startswith("wildcards:"):
            w = dict(kv.split("=", 1) for kv in line.strip()[len("wildcards: ") :].split(", "))
            current["key"] = (
                f"{w['model']}/{w['init']}/{w['task']}_n{w['length']}" if "model" in w else "/".join(w.values())
            )
        elif m := re.match(r"^Finished jobid: (\d+)", line.strip()):
            if m.group(1) in jobs:
                jobs[m.group(1)]["end"] = now
    rows = []
    for job in jobs.values():
        done = job["end"] is not None and job["start"] is not None
        rows.append({**job, "seconds": (job["end"] - job["start"]).total_seconds() if done else math.nan})
    return rows


def read_samples(path: Path) -> dict:
    """GPU busy fraction and disk growth from ``benchmarks/gpu_site.sh``'s samples, 5 s apart:
    ``epoch gpu_index, util%, mem_MiB disk_bytes`` (one line per GPU per sample) or the older
    single-GPU ``epoch util%, mem_MiB disk_bytes``. ``per_gpu_busy``: mean utilisation per GPU
    index (0..1); the other fields pool every GPU."""
    util: dict[int, list[float]] = defaultdict(list)
    disk = []
    for line in path.read_text().splitlines():
        parts = line.replace(",", " ").split()
        if len(parts) == 4:
            parts = [parts[0], "0", *parts[1:]]
        if len(parts) >= 5:
            util[int(parts[1])].append(float(parts[2]))
            disk.append(float(parts[4]))
    busy = [u for values in util.values() for u in values[1:]]
    return {
        "samples": max((len(v) for v in util.values()), default=0),
        "gpu_busy_mean": sum(busy) / max(len(busy), 1) / 100,
        "gpu_busy_frac_over_50": sum(u > 50 for u in busy) / max(len(busy), 1),
        "per_gpu_busy": {i: sum(v[1:]) / max(len(v) - 1, 1) / 100 for i, v in sorted(util.items())},
        "disk_growth_bytes": (max(disk) - disk[0]) if disk else 0.0,
        "disk_peak_bytes": max(disk) if disk else 0.0,
    }


def read_stores(root: Path) -> dict[str, dict]:
    """``model/init/task_nL`` -> timing attrs, the fast path's kernel choices (``kernels``:
    op -> shape class -> entry, :mod:`reprflow.kernels.select`) and bytes of each store under
    results/activations."""
    out = {}
    base = root / "results" / "activations"
    for meta in sorted(base.glob("*/*/*.zarr/zarr.json")):
        store = meta.parent
        attrs = json.loads(meta.read_text()).get("attributes", {})
        key = str(store.relative_to(base).with_suffix(""))
        out[key] = {
            "timing": attrs.get("timing") or {},
            "kernels": (attrs.get("fastpath") or {}).get("kernels") or {},
            "fig3": "prompt_indices" in attrs,  # a scope: fig3 cell forwards only its token prompts
            "n_samples": attrs.get("n_samples"),
            "store_dtype": attrs.get("store_dtype"),
            "last_bytes": tree_bytes(store / "last"),
            "tokens_bytes": tree_bytes(store / "tokens"),
            "bytes": tree_bytes(store),
        }
    return out


def _parse_bytes(text: str) -> float:
    value, unit = text.split()
    return float(value) * {"kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}[unit]


def _parse_s(text: str) -> float:
    value, unit = text.split()
    return float(value) * {"s": 1, "min": 60, "h": 3600}[unit]


def fig3_cells(keys) -> set[str]:
    """The ``model/init/task_nL`` keys of ``scope: fig3`` inits, told from the keys alone: an init
    whose cells of a model all have one length while that model has cells at several lengths (a
    fig3 init runs only at ``figures.length``; for summaries and logs, which do not record scope)."""
    lengths: dict[tuple[str, str], set[str]] = defaultdict(set)
    for key in keys:
        model, init, cell = key.split("/")
        lengths[(model, init)].add(cell.split("_n")[1])
    by_model: dict[str, set[str]] = defaultdict(set)
    for (model, _init), ls in lengths.items():
        by_model[model] |= ls
    return {k for k in keys if len(lengths[tuple(k.split("/")[:2])]) == 1 and len(by_model[k.split("/")[0]]) > 1}


def read_cells_md(path: Path) -> tuple[dict[str, dict], dict[str, float]]:
    """Stores and extraction job seconds from the per-cell table of an earlier summary.

    Returns ``(stores, job_seconds)`` shaped as :func:`read_stores` and the benchmark rows give
    them (``tokens_bytes`` and the exact token count are rounded as printed).
    """
    stores, jobs = {}, {}
    rows = [line for line in path.read_text().splitlines() if line.startswith("| ") and "/" in line.split("|")[1]]
    fig3 = fig3_cells([line.strip("|").split("|")[0].strip() for line in rows])
    for line in rows:
        key, job, ext, rate, _overhead, last, tokens, dtype = [c.strip() for c in line.strip("|").split("|")]
        ext_s, tok_s = _parse_s(ext), float(rate.rstrip("K")) * 1e3
        stores[key] = {
            "timing": {"seconds": ext_s, "tokens_per_s": tok_s, "tokens": ext_s * tok_s},
            "fig3": key in fig3,
            "store_dtype": dtype,
            "last_bytes": _parse_bytes(last),
            "tokens_bytes": _parse_bytes(tokens),
        }
        jobs[key] = _parse_s(job)
    if not stores:
        raise SystemExit(f"{path}: no per-cell table (| model/init/task_nL | job | ... |) found")
    return stores, jobs


def parse_rates(text: str | None) -> dict[str, float]:
    """``model=tok_s,model=tok_s`` -> {model: tok_s}."""
    if not text:
        return {}
    return {k.strip(): float(v) for k, v in (item.split("=") for item in text.split(",") if item.strip())}


def fmt_s(seconds: float) -> str:
    return (
        f"{seconds:.0f} s"
        if seconds < 600
        else f"{seconds / 60:.1f} min"
        if seconds < 7200
        else f"{seconds / 3600:.2f} h"
    )


def fmt_b(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 1e3:.0f} kB"


def lpt_makespan(durations: list[float], workers: int) -> float:
    """Wall time of longest-first list scheduling of independent jobs on ``workers`` GPUs."""
    loads = [0.0] * workers
    for d in sorted(durations, reverse=True):
        loads[loads.index(min(loads))] += d
    return max(loads) if loads else 0.0


def prompt_scales(args: argparse.Namespace) -> tuple[float, float]:
    """Full run over rehearsal: for a cell's prompts, and for its token prompts (all that a
    ``scope: fig3`` cell forwards, and all that token states and token metrics depend on)."""
    return args.full_prompts / args.n_prompts, args.full_token_prompts / max(args.n_token_prompts, 1)


def project_cell(key: str, st: dict, wall: float, args: argparse.Namespace, rates: dict[str, float]) -> float | None:
    """GPU seconds of one extraction job of the full run (the module docstring's model), from its
    rehearsal job's ``wall`` seconds and its store ``st``; None when it cannot be projected (no
    job time, no rate). ``args``: the command line (prompt counts, ``stream_s``, ``start_ahead``)."""
    t = st["timing"]
    ext_s, rate = float(t.get("seconds") or 0.0), float(t.get("tokens_per_s") or 0.0)
    if rate <= 0 or math.isnan(wall):
        return None
    steps = t.get("startup") or {}
    not_gpu = float(steps.get("gpu_wait") or 0.0)  # waiting is not work
    if args.start_ahead:
        not_gpu += sum(float(steps.get(k) or 0.0) for k in BEFORE_CLAIM)
    overhead = max(wall - ext_s - not_gpu, 0.0)
    scale_p, scale_t = prompt_scales(args)
    scale = scale_t if st.get("fig3") else scale_p
    tokens = float(t.get("tokens") or 0.0)
    steady = rates.get(key.split("/")[0])
    if not steady:
        return overhead + tokens * scale / rate
    warmup = max(ext_s - tokens / steady - args.n_token_prompts * args.stream_s, 0.0)
    return overhead + warmup + tokens * scale / steady + args.full_token_prompts * args.stream_s


STARTUP_STEPS = ("process", "prompts", "tokenizer", "gpu_wait", "model")
BEFORE_CLAIM = ("process", "prompts", "tokenizer")  # overlapped with the GPU's previous job when jobs_per_gpu >= 2


def startup_rows(stores: dict[str, dict], job_s: dict[str, float]) -> list[str]:
    """Markdown rows: per model, the mean seconds per extraction job before its loop, by step (the
    store attr ``timing.startup``: the job's process start to the stage, reading the prompts, the
    tokenizer, waiting for a GPU, building or loading the model), and the rest of the job outside the loop (the
    job's overhead minus those steps: fast-path preparation, store open and finalize, metric
    files, Snakemake's own bookkeeping). Empty when no store has ``timing.startup``."""
    by_model: dict[str, list[list[float]]] = defaultdict(list)
    for key, st in stores.items():
        startup = st["timing"].get("startup")
        if not startup or key not in job_s:
            continue
        steps = [float(startup.get(k) or 0.0) for k in STARTUP_STEPS]
        rest = job_s[key] - float(st["timing"].get("seconds") or 0.0) - sum(steps)
        by_model[key.split("/")[0]].append([*steps, max(rest, 0.0)])
    rows = []
    for model, jobs in sorted(by_model.items()):
        means = [sum(col) / len(jobs) for col in zip(*jobs)]
        rows.append(f"| {model} | {len(jobs)} | " + " | ".join(f"{m:.1f}" for m in means) + " |")
    return rows


def summarise_log(log: Path, samples: Path | None) -> None:
    """Per-rule and per-extraction tables from a console log (jobs still running are counted)."""
    rows = read_snakemake_log(log)
    print("## Per rule (from the console log)\n")
    print("| rule | finished | unfinished | total | mean | max |\n|---|---|---|---|---|---|")
    for rule in sorted({r["rule"] for r in rows}):
        done = [r["seconds"] for r in rows if r["rule"] == rule and not math.isnan(r["seconds"])]
        left = sum(1 for r in rows if r["rule"] == rule and math.isnan(r["seconds"]))
        if done:
            print(
                f"| {rule} | {len(done)} | {left} | {fmt_s(sum(done))} | {fmt_s(sum(done) / len(done))} | {fmt_s(max(done))} |"
            )
        else:
            print(f"| {rule} | 0 | {left} | – | – | – |")
    print("\n## Extraction jobs by model and length (mean wall seconds per finished job)\n")
    cells = defaultdict(list)
    extractions = [r for r in rows if r["rule"].startswith("extract_activation") and not math.isnan(r["seconds"])]
    fig3 = fig3_cells({r["key"] for r in extractions})
    for r in extractions:
        model, init, cell = r["key"].split("/")
        cells[(model, cell.split("_n")[1], "fig3 sweep" if r["key"] in fig3 else init)].append(r["seconds"])
    print("| model | length | init | jobs | mean | max |\n|---|---|---|---|---|---|")
    for (model, length, init), secs in sorted(cells.items(), key=lambda kv: (kv[0][0], int(kv[0][1]), kv[0][2])):
        print(f"| {model} | {length} | {init} | {len(secs)} | {sum(secs) / len(secs):.0f} s | {max(secs):.0f} s |")
    if samples is not None:
        s = read_samples(samples)
        print(
            f"\nGPU: mean utilisation {100 * s['gpu_busy_mean']:.0f}% over {s['samples']} samples 5 s apart "
            f"({100 * s['gpu_busy_frac_over_50']:.0f}% of samples above 50%); disk grew by {fmt_b(s['disk_growth_bytes'])}."
        )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("."), help="the run's out_dir")
    ap.add_argument("--n-prompts", type=int, required=True, help="prompts per set in the rehearsal")
    ap.add_argument("--n-token-prompts", type=int, required=True, help="token prompts per store in the rehearsal")
    ap.add_argument("--full-prompts", type=int, default=25000)
    ap.add_argument("--full-token-prompts", type=int, default=64)
    ap.add_argument(
        "--pretrained-arm",
        action="store_true",
        help="count every scope-all cell twice (pretrained + random at every length, for a config that runs both; "
        "same compute, weights loaded instead of built). The paper config runs random at scope fig3: leave it off",
    )
    ap.add_argument(
        "--start-ahead",
        action="store_true",
        help="project with execution.jobs_per_gpu >= 2: each job's start-up before its GPU claim (process, "
        "prompts, tokenizer; timing.startup) overlaps the GPU's previous job",
    )
    ap.add_argument("--snakemake-log", type=Path, help="a killed run's console log: per-job times from its stamps")
    ap.add_argument("--samples", type=Path, help="the GPU/disk samples written by paper_rehearsal_gpu.sh")
    ap.add_argument("--rates", help="steady-state tok/s per model, model=tok_s,... (benchmarks/extract.py)")
    ap.add_argument(
        "--stream-s",
        type=float,
        default=0.0,
        help="seconds of streamed token metrics per token prompt (tokens: stream)",
    )
    ap.add_argument("--probe-fit-s", type=float, default=10.2, help="paper-size probe fit per cell (s)")
    ap.add_argument("--read-bytes-per-s", type=float, default=2e9, help="store read rate of the probe jobs")
    ap.add_argument("--cells-md", type=Path, help="re-project from an earlier summary's per-cell table")
    args = ap.parse_args(argv)
    if args.snakemake_log is not None:
        summarise_log(args.snakemake_log, args.samples)
        return

    bench = read_benchmarks(args.root)
    if args.cells_md is not None:
        stores, md_jobs = read_cells_md(args.cells_md)
        bench = [r for r in bench if r["phase"] != "activations"] + [
            {"phase": "activations", "key": k, "seconds": v, "max_rss_mb": math.nan} for k, v in md_jobs.items()
        ]
    else:
        stores = read_stores(args.root)
    rates = parse_rates(args.rates)
    scale_p, scale_t = prompt_scales(args)

    print("## Per rule (rehearsal)\n")
    print("| phase | jobs | total | mean | max |\n|---|---|---|---|---|")
    by_phase = defaultdict(list)
    for r in bench:
        by_phase[r["phase"]].append(r["seconds"])
    for phase, secs in sorted(by_phase.items()):
        print(f"| {phase} | {len(secs)} | {fmt_s(sum(secs))} | {fmt_s(sum(secs) / len(secs))} | {fmt_s(max(secs))} |")

    print("\n## Extraction per cell (rehearsal)\n")
    print(
        "| cell | job | GPU extraction | tok/s | overhead | last | tokens | dtype |\n|---|---|---|---|---|---|---|---|"
    )
    job_s = {r["key"]: r["seconds"] for r in bench if r["phase"] == "activations"}
    projected: dict[str, float] = {}
    disk_full = 0.0
    for key, st in sorted(stores.items()):
        t = st["timing"]
        wall = job_s.get(key, math.nan)
        overhead = max(wall - float(t.get("seconds") or 0.0), 0.0) if not math.isnan(wall) else math.nan
        print(
            f"| {key} | {fmt_s(wall)} | {fmt_s(float(t.get('seconds') or 0.0))} | "
            f"{float(t.get('tokens_per_s') or 0.0) / 1e3:.1f}K | {fmt_s(overhead)} | "
            f"{fmt_b(st['last_bytes'])} | {fmt_b(st['tokens_bytes'])} | {st['store_dtype']} |"
        )
        gpu_s = project_cell(key, st, wall, args, rates)
        if gpu_s is not None:
            projected[key] = gpu_s
            disk_full += st["last_bytes"] * (scale_t if st.get("fig3") else scale_p) + st["tokens_bytes"] * scale_t
    rows = startup_rows(stores, job_s)
    if rows:
        print("\n## Start-up of the extraction jobs, mean seconds per job (store attr timing.startup)\n")
        print(
            "| model | jobs | process to stage | prompts | tokenizer | waiting for a GPU | model load "
            "| rest outside the loop |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        print("\n".join(rows))
    missing = sorted({k.split("/")[0] for k in projected} - set(rates))
    if missing:
        print(
            f"\nNo --rates for {missing}: their cells scale the rehearsal's own rate, warm-up included "
            "(an over-estimate for small rehearsal cells)."
        )
    arms = 2 if args.pretrained_arm else 1
    # Only scope-all cells (those with probes) run in the pretrained arm too.
    probe_keys = {r["key"] for r in bench if r["phase"] == "probes"}
    gpu_jobs = list(projected.values()) + ([v for k, v in projected.items() if k in probe_keys] if arms == 2 else [])
    cpu = defaultdict(float)
    for r in bench:
        if r["phase"] == "metrics":
            cpu["metrics"] += r["seconds"] * scale_t * (2 if arms == 2 and r["key"] in probe_keys else 1)
        elif r["phase"] == "probes":
            last_full = stores.get(r["key"], {}).get("last_bytes", 0.0) * scale_p
            cpu["probes"] += (r["seconds"] + args.probe_fit_s + last_full / args.read_bytes_per_s) * arms
    if arms == 2:
        disk_full += sum(
            stores[k]["last_bytes"] * scale_p + stores[k]["tokens_bytes"] * scale_t for k in stores if k in probe_keys
        )
    by_model = defaultdict(float)
    for key, sec in projected.items():
        by_model[key.split("/")[0]] += sec * (arms if key in probe_keys else 1)
    print("\n| model | extraction GPU time, full run | steady rate |\n|---|---|---|")
    for model, sec in sorted(by_model.items(), key=lambda kv: -kv[1]):
        print(
            f"| {model} | {fmt_s(sec)} | {f'{rates[model] / 1e3:.1f}K tok/s' if model in rates else 'rehearsal cells'} |"
        )

    print(
        f"\n## Projection: full paper run ({args.full_prompts} prompts, {args.full_token_prompts} token prompts per store, "
        f"{'pretrained + random at every length' if arms == 2 else 'each rehearsal cell once'})\n"
    )
    print(
        f"- extraction jobs: {len(gpu_jobs)}, {sum(gpu_jobs) / 3600:.2f} GPU-hours (longest job {fmt_s(max(gpu_jobs, default=0))})"
    )
    print(f"- metrics (token-level, scale with token prompts): {cpu['metrics'] / 3600:.2f} h of job time")
    print(f"- probes (scale with prompts): {cpu['probes'] / 3600:.2f} h of job time")
    print(f"- activation stores on disk: {fmt_b(disk_full)}")
    print(
        "\n| GPUs | extraction wall (longest first) | + metrics and probes spread over the same GPUs |\n|---|---|---|"
    )
    for g in (1, 2, 4, 8):
        ext = lpt_makespan(gpu_jobs, g)
        print(f"| {g} | {fmt_s(ext)} | {fmt_s(ext + (cpu['metrics'] + cpu['probes']) / g)} |")


if __name__ == "__main__":
    main()
