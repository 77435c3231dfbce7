"""The paper run's extraction jobs on N GPUs, in the workflow's order: how long does the node take?

Projects every extraction job of the full paper run from a one-GPU rehearsal (the model of
``benchmarks/paper_rehearsal.py``: ``--cells-md`` and ``--rates``, each job's measured start-up
and warm-up included), then simulates a local Snakemake run on ``--gpus`` GPUs, event by event:

* **one job per GPU** (``execution.jobs_per_gpu: 1``): a freed GPU starts the job of highest
  priority left; the job's start-up (interpreter and imports, reading its prompt set, the
  tokenizer) keeps the GPU idle;
* **two jobs per GPU** (``jobs_per_gpu: 2``, the default): Snakemake keeps 2N jobs started; each
  does its start-up while the GPUs compute, then claims a free GPU: in priority order, a job
  taking a GPU only while fewer started jobs of higher priority wait than GPUs are free
  (``reprflow.devices``), or, to compare, whoever is ready first.

The priorities: **optimum** (the projected times themselves, longest first: the best any order
can do with list scheduling), **workflow** (``reprflow.workflow.targets.extraction_priority`` on
the paper config: tokens forwarded x model size) and **old** (model size x length, the priority
before 2026-12-05, blind to a Fig. 3 cell's 64 prompts). Ties go in random order: ``--trials``
orders, the median and range printed. The rehearsal's ``random`` cells at every length stand for
the pretrained arm (its ``fig3`` cells are told from the keys, as in ``paper_rehearsal.py``).

A job's start-up before its claim: ``--imports-s`` (interpreter and imports; inside the
rehearsal's measured overhead already; each job drawn within +-25% of it) plus reading its
paper-size prompt set, which the rehearsal's 160-prompt sets did not show: every job reads the
whole set (a Fig. 3 cell too, then keeps its 64 token prompts), ``--prompt-bytes-per-token``
x prompts x length at ``--read-mb-per-s``. Defaults: measured on this 2-core CPU (2026-12-05):
the extraction job's imports 6.5 s; ``read_prompt_set`` on 2,500 MDQA prompts of 4K tokens (43
MB) 0.58 s, 74 MB/s, 4.17 bytes per token (25,000 prompts at 4K: 5.8 s). Until a run records them
(``timing.startup``, printed by ``paper_rehearsal.py``) these stand in for the node's.

The probes: each cell with probes (not a Fig. 3 cell) has a probe job that Snakemake starts when
the cell's extraction ends, outside its GPU slots (the ``probes`` rule books CPU threads, not the
``gpu`` resource). On a node with several GPUs its ``device: auto`` still claims a GPU
(``reprflow.devices``) after its imports, with the lowest priority (its ticket's 0), and holds it for
the rest of the job: so a probe runs when no extraction waits, in gaps and in the tail. A probe job
takes ``--probe-s`` (default 17 s: ``--imports-s`` of it before its claim, then the 10.4 s it held
an H200 at paper size with the paper config's ``max_batch_gib: 16``, the first group read before
the claim and the next ones while one trains; ``benchmarks/probe_hold.py``, 2026-12-05; before the
read-ahead, 32.1 s at the default 2 GiB); the last column is each simulated run
with them (two jobs per GPU only: with one, a probe's claim in an extraction's start-up is not modelled).

Usage (repository root; no GPU)::

    python benchmarks/schedule_sim.py --cells-md benchmarks/results/paper_rehearsal.md \\
        --n-prompts 160 --n-token-prompts 8 --stream-s 0.07 \\
        --rates gpt-neo-2.7b=116500,pythia-2.8b=108500,mamba-2.8b=90500,mamba2-2.7b=89800,mamba2-130m=1400000
"""

from __future__ import annotations

import argparse
import functools
import random
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from paper_rehearsal import fmt_s, parse_rates, project_cell, read_cells_md  # noqa: E402 (benchmarks/)

from reprflow.config import load_config  # noqa: E402
from reprflow.workflow.disk import model_dims  # noqa: E402
from reprflow.workflow.targets import extraction_priority  # noqa: E402


def simulate(
    jobs: dict[str, float],
    priority: dict[str, float],
    gpus: int,
    *,
    per_gpu: int = 1,
    before_claim: dict[str, float],
    claims: str = "priority",
    seed: int = 0,
    ends: dict[str, float] | None = None,
    followers: dict[str, tuple[float, float]] | None = None,
) -> float:
    """Wall seconds of ``jobs`` (key -> GPU-slot seconds, start-up included) on ``gpus`` GPUs;
    ``ends``, when given, receives each job's end (seconds from the start).

    Snakemake keeps ``per_gpu`` x ``gpus`` jobs started, highest ``priority`` first (ties in a
    random order drawn from ``seed``). With ``per_gpu`` 1 a job's slot is its GPU from its start;
    with more, a started job is ready to claim ``before_claim[key]`` seconds later, computes for
    its time less that, and ``claims`` is ``priority`` (a job claims only while fewer started jobs
    of higher priority wait than GPUs are free) or ``ready`` (first ready, first served).

    ``followers`` (``per_gpu`` >= 2 only): key -> (seconds, seconds before its claim) of a job
    that starts when job ``key`` ends, outside Snakemake's GPU slots (the probes: no ``gpu``
    resource), and then claims a GPU like the others at the lowest priority (its ticket's 0, behind
    every extraction's; among themselves, first come first served). Its end counts in the wall; it
    is recorded in ``ends`` as ``key + "#follower"``.
    """
    keys = list(jobs)
    random.Random(seed).shuffle(keys)
    pending = sorted(keys, key=lambda k: -priority[k])  # stable: ties keep the shuffled order
    rank = {k: i for i, k in enumerate(pending)}
    ends = {} if ends is None else ends
    followers = followers or {}
    if per_gpu == 1:
        if followers:
            raise ValueError(
                "simulate: followers need per_gpu >= 2 (their claims are not modelled with one job per GPU)"
            )
        free_at = [0.0] * gpus
        for k in pending:
            i = min(range(gpus), key=free_at.__getitem__)
            free_at[i] += jobs[k]
            ends[k] = free_at[i]
        return max(free_at)
    t, free, running, waiting = 0.0, gpus, [], []  # running: [(end, key)]; waiting: [(ready_at, key)]
    rank = {k: (0, i) for k, i in rank.items()}  # a follower's: (1, when it queues), behind every job
    follow: dict[str, float] = {}  # a started follower's seconds on its GPU
    started = min(len(pending), per_gpu * gpus)
    waiting = [(before_claim[k], k) for k in pending[:started]]
    pending = pending[started:]
    end = 0.0
    while waiting or running:
        order = sorted(waiting, key=lambda w: rank[w[1]] if claims == "priority" else (w[0], rank[w[1]]))
        entitled = order[:free]  # priority: a job with `free` or more ahead of it waits
        claimed = [w for w in entitled if w[0] <= t] if claims == "priority" else [w for w in order if w[0] <= t][:free]
        for ready_at, k in claimed:
            waiting.remove((ready_at, k))
            running.append((t + (follow[k] if k in follow else jobs[k] - before_claim[k]), k))
            free -= 1
        events = [r[0] for r in running] + [w[0] for w in waiting if w[0] > t]
        if not events:
            break
        t = min(events)
        for done in [r for r in running if r[0] <= t]:
            running.remove(done)
            free += 1
            ends[done[1]] = done[0]
            end = max(end, done[0])
            if done[1] in follow:  # a follower held no Snakemake slot: nothing else starts
                continue
            if done[1] in followers:
                seconds, before = followers[done[1]]
                f = done[1] + "#follower"
                follow[f], rank[f] = seconds - before, (1, t + before)
                waiting.append((t + before, f))
            if pending:  # Snakemake starts the next job in the freed slot
                k = pending.pop(0)
                waiting.append((t + before_claim[k], k))
    return end


def spread(walls: list[float]) -> str:
    """``median (min-max)`` of simulated walls over job orders."""
    return f"{fmt_s(statistics.median(walls))} ({fmt_s(min(walls))}-{fmt_s(max(walls))})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells-md", type=Path, required=True, help="a paper_rehearsal.py summary (its per-cell table)")
    ap.add_argument("--n-prompts", type=int, required=True)
    ap.add_argument("--n-token-prompts", type=int, required=True)
    ap.add_argument("--full-prompts", type=int, default=25000)
    ap.add_argument("--full-token-prompts", type=int, default=64)
    ap.add_argument("--stream-s", type=float, default=0.0)
    ap.add_argument("--rates", required=True, help="steady-state tok/s per model, model=tok_s,...")
    ap.add_argument("--configfile", type=Path, default=ROOT / "config" / "config.yaml")
    ap.add_argument("--gpus", type=int, nargs="+", default=[8])
    ap.add_argument("--imports-s", type=float, default=6.5, help="a job's interpreter and imports (s)")
    ap.add_argument("--read-mb-per-s", type=float, default=74.0, help="read_prompt_set's rate (MB/s)")
    ap.add_argument("--prompt-bytes-per-token", type=float, default=4.17)
    ap.add_argument("--trials", type=int, default=200, help="random orders of equal priorities")
    ap.add_argument("--probe-s", type=float, default=17.0, help="a probe job at paper size (s); 0: none")
    args = ap.parse_args(argv)
    args.start_ahead = False  # project_cell: the full job, start-up included

    stores, job_s = read_cells_md(args.cells_md)
    rates = parse_rates(args.rates)
    jobs = {k: s for k, st in stores.items() if (s := project_cell(k, st, job_s.get(k, float("nan")), args, rates))}
    config = load_config(args.configfile)
    fig3_init = next(i.name for i in config.inits if getattr(i, "scope", "all") == "fig3")
    full_init = next(i.name for i in config.inits if getattr(i, "scope", "all") == "all")

    def cell(k: str) -> tuple[str, str, str, int]:
        model, _, task_length = k.split("/")
        task, length = task_length.rsplit("_n", 1)
        return model, fig3_init if stores[k].get("fig3") else full_init, task, int(length)

    def old_priority(k: str) -> float:
        model, _, _, length = cell(k)
        dims = model_dims(config.model(model), config)
        return dims.hidden**2 * dims.n_layers * length >> 20

    def read_s(k: str) -> float:  # the whole paper-size prompt set, whatever the cell forwards
        return args.full_prompts * cell(k)[3] * args.prompt_bytes_per_token / (args.read_mb_per_s * 1e6)

    jobs = {k: s + read_s(k) for k, s in jobs.items()}  # the rehearsal read 160 prompts, not 25,000

    priorities = {
        "optimum (projected times, longest first)": dict(jobs),
        "workflow: tokens forwarded x model size": {k: extraction_priority(config, *cell(k)) for k in jobs},
        "old: model size x length": {k: old_priority(k) for k in jobs},
    }
    total = sum(jobs.values())
    reads = [read_s(k) for k in jobs]
    probed = [k for k in jobs if not stores[k].get("fig3")]  # Fig. 3 cells get no probes
    print(
        f"{len(jobs)} extraction jobs, {total / 3600:.2f} GPU-hours with their start-up "
        f"(longest {fmt_s(max(jobs.values()))}); start-up before the claim: {args.imports_s:g} s +-25% of "
        f"imports + {min(reads):.1f}-{max(reads):.1f} s reading the prompt set ({sum(reads) / 60:.1f} min in all); "
        f"{len(probed)} probe jobs of {args.probe_s:g} s, each started when its cell's extraction ends, "
        "claiming a GPU at the lowest priority\n"
    )
    print(
        "| GPUs | job order | jobs per GPU | claims | wall, median of orders (range) | bound with the start-up on the GPU "
        "| with the probes, median (range) |"
    )
    print("|---:|---|---:|---|---|---|---|")
    for gpus in args.gpus:
        bound = max(total / gpus, max(jobs.values()))
        runs = [(name, 1, "-") for name in priorities] + [
            (name, 2, claims) for name in list(priorities)[1:2] for claims in ("priority", "ready")
        ]
        for name, per_gpu, claims in runs:
            walls, with_probes = [], []
            for seed in range(args.trials):
                jitter = random.Random(-1 - seed)
                before = {k: args.imports_s * jitter.uniform(0.75, 1.25) + read_s(k) for k in sorted(jobs)}
                run = functools.partial(
                    simulate,
                    jobs,
                    priorities[name],
                    gpus,
                    per_gpu=per_gpu,
                    before_claim=before,
                    claims="priority" if claims == "-" else claims,
                    seed=seed,
                )
                walls.append(run())
                if per_gpu > 1 and args.probe_s:
                    probes = {k: (args.probe_s, args.imports_s * jitter.uniform(0.75, 1.25)) for k in probed}
                    with_probes.append(run(followers=probes))
            print(
                f"| {gpus} | {name} | {per_gpu} | {claims} | {spread(walls)} | {fmt_s(bound)} "
                f"| {spread(with_probes) if with_probes else '-'} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
