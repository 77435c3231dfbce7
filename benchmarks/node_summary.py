"""A multi-GPU run on one node, as a timeline: is the node busy, and where does each GPU wait?

Reads what a run on a machine with N GPUs leaves (``benchmarks/paper_rehearsal_gpu.sh`` writes
all of it):

- Snakemake's console log: each job's rule, start and end (1 s stamps) and log file;
- each GPU job's own log: the line ``claimed GPU i of N`` (``reprflow.devices``) says which GPU it
  ran on and from when, ``released GPU i`` until when (an extraction job gives its GPU back
  before it checks its store and exits; with ``execution.jobs_per_gpu: 2`` the next job, started
  up meanwhile, takes it at once);
- optionally the samples of ``sample_gpu`` (``benchmarks/gpu_site.sh``): each GPU's utilisation
  every 5 s, and the disk.

Prints per GPU its jobs, its busy time (a GPU job from its claim to its release or end, model
load included) and its idle gaps, split by cause: **start** (before its first GPU job: prompt building
and scheduling), **between** (no GPU job was started on it: none ready, or its claim went to
another job) and **tail** (after its last job, while other GPUs still worked: the long tail);
then the node's busy fraction, the sum of GPU-job time over N x the run's wall time, against the
goal of 85% (issue 16). GPU jobs are the rules that request the ``gpu`` resource (extraction and
its shards, theory) and any job whose log says it claimed a GPU (probes with ``device: auto``).

Usage (the run's root)::

    python benchmarks/node_summary.py --log <snakemake console log> --gpus 8 [--samples samples.txt] [--root .]
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime
from pathlib import Path

from paper_rehearsal import fmt_b, fmt_s, read_samples, read_snakemake_log  # benchmarks/paper_rehearsal.py

GPU_RULES = ("extract_activation", "theory")  # rule-name prefixes of the jobs that request `gpu`
# reprflow.devices' log line, with the job log's asctime (reprflow/pipeline/runlog.py)
CLAIM = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\S* .*claimed GPU (\d+) of \d+", re.M)
RELEASE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\S* .*released GPU \d+", re.M)
NODE_BUSY_GOAL = 0.85


def gpu_claim(job: dict, root: Path) -> tuple[int, datetime, datetime | None] | None:
    """(GPU index, time of the claim, time of the release or None) from a job's log, or None (no
    claim: one visible GPU without ``jobs_per_gpu`` sharing claims nothing)."""
    if not job.get("log"):
        return None
    path = root / job["log"]
    if not path.is_file():
        return None
    text = path.read_text(errors="replace")
    m = CLAIM.search(text)
    if m is None:
        return None
    released = RELEASE.search(text, m.end())
    stamp = lambda s: datetime.strptime(s, "%Y-%m-%d %H:%M:%S")  # noqa: E731
    return int(m.group(2)), stamp(m.group(1)), None if released is None else stamp(released.group(1))


def timeline(jobs: list[dict], n_gpus: int, root: Path) -> dict:
    """Per-GPU job time, busy seconds (some GPU job holding it) and idle gaps, and the node's busy
    fraction (sum of GPU-job time over ``n_gpus`` x wall; above 1 only when jobs share GPUs).

    ``jobs``: :func:`read_snakemake_log` rows. A job holds its GPU from its claim (its log's
    timestamp; Snakemake's start when it has none: one visible GPU, then GPU 0) to its release
    (else its end); the seconds before the claim (imports, prompts, waiting for the GPU) are
    ``startup``: GPU time only where no other job computed meanwhile, which the gaps show. Jobs
    that never finished count up to the last stamp.
    """
    stamped = [j for j in jobs if j["start"] is not None]
    if not stamped:
        raise SystemExit("node_summary: no job with a start stamp in the console log (is it Snakemake's log?)")
    t0 = min(j["start"] for j in stamped)
    t_end = max((j["end"] or j["start"]) for j in stamped)
    wall = (t_end - t0).total_seconds()
    per_gpu: dict[int, list[tuple[float, float, str]]] = {i: [] for i in range(n_gpus)}
    startup = 0.0  # Snakemake's start of a GPU job -> its claim: imports, prompts, waiting for the GPU
    for j in stamped:
        claim = gpu_claim(j, root)
        if claim is None and not j["rule"].startswith(GPU_RULES):  # probes claim a GPU without the resource
            continue
        held_from = j["start"] if claim is None else max(claim[1], j["start"])
        startup += (held_from - j["start"]).total_seconds()
        start = (held_from - t0).total_seconds()
        job_end = j["end"] or t_end
        until = job_end if claim is None or claim[2] is None else min(claim[2], job_end)
        end = max((until - t0).total_seconds(), start)
        per_gpu.setdefault(0 if claim is None else claim[0], []).append((start, end, j["key"]))
    gpus = {}
    for index, runs in sorted(per_gpu.items()):
        runs.sort()
        covered = []  # the union of the job intervals: [start, end, key of the job that ends it]
        for start, end, key in runs:
            if covered and start <= covered[-1][1]:
                if end > covered[-1][1]:
                    covered[-1][1:] = [end, key]
            else:
                covered.append([start, end, key])
        gaps = {
            "start": covered[0][0] if covered else wall,
            "between": 0.0,
            "tail": wall - covered[-1][1] if covered else 0.0,
        }
        longest = (0.0, "")
        for (_, prev_end, prev_key), (start, _, _) in zip(covered, covered[1:]):
            gaps["between"] += start - prev_end
            if start - prev_end > longest[0]:
                key = next(k for s, _, k in runs if s == start)
                longest = (start - prev_end, f"after {prev_key}, before {key}")
        gpus[index] = {
            "jobs": len(runs),
            "job_time": sum(e - s for s, e, _ in runs),
            "busy": sum(e - s for s, e, _ in covered),
            "gaps": gaps,
            "longest_between": longest,
        }
    total = sum(g["job_time"] for g in gpus.values())
    return {
        "wall": wall,
        "gpus": gpus,
        "busy_sum": total,
        "startup": startup,
        "node_busy": total / (n_gpus * wall) if wall else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--log", type=Path, required=True, help="Snakemake's console log of the run")
    ap.add_argument("--gpus", type=int, required=True, help="GPUs of the node")
    ap.add_argument("--samples", type=Path, help="sample_gpu's file (benchmarks/gpu_site.sh)")
    ap.add_argument("--root", type=Path, default=Path("."), help="the run's root (job log paths are relative to it)")
    args = ap.parse_args(argv)

    t = timeline(read_snakemake_log(args.log), args.gpus, args.root)
    samples = read_samples(args.samples) if args.samples else None
    print(f"Run wall time {fmt_s(t['wall'])} on {args.gpus} GPUs\n")
    print(
        "| GPU | GPU jobs | job time | busy (a job running) | busy % of wall | idle: start | idle: between jobs "
        "| idle: tail | nvidia-smi utilisation |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for index, g in t["gpus"].items():
        util = samples["per_gpu_busy"].get(index) if samples else None
        print(
            f"| {index} | {g['jobs']} | {fmt_s(g['job_time'])} | {fmt_s(g['busy'])} | {100 * g['busy'] / t['wall']:.0f}% | "
            f"{fmt_s(g['gaps']['start'])} | {fmt_s(g['gaps']['between'])} | {fmt_s(g['gaps']['tail'])} | "
            f"{'-' if util is None else f'{100 * util:.0f}%'} |"
        )
    worst = max(t["gpus"].items(), key=lambda kv: kv[1]["longest_between"][0])
    if worst[1]["longest_between"][0] > 0:
        print(
            f"\nLongest gap between two jobs: GPU {worst[0]}, {fmt_s(worst[1]['longest_between'][0])} ({worst[1]['longest_between'][1]})"
        )
    print(
        f"GPU jobs' time before their claim (imports, prompts, waiting for the GPU; idle GPU time only "
        f"where the gaps above show it): {fmt_s(t['startup'])} in all"
    )
    verdict = "met" if t["node_busy"] >= NODE_BUSY_GOAL else "NOT met"
    print(
        f"\nNode busy: sum of GPU-job time {fmt_s(t['busy_sum'])} / ({args.gpus} x {fmt_s(t['wall'])}) = "
        f"**{100 * t['node_busy']:.1f}%** (goal >= {100 * NODE_BUSY_GOAL:.0f}%: {verdict})"
    )
    if samples:
        print(
            f"GPU utilisation (nvidia-smi, every GPU): mean {100 * samples['gpu_busy_mean']:.0f}%; "
            f"disk peak {fmt_b(samples['disk_peak_bytes'])}, grew by {fmt_b(samples['disk_growth_bytes'])}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
