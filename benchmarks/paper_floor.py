"""The paper run's extraction cost from its config alone: tokens, the bf16 roofline floor, and wall
time on 1, 2, 4 and 8 GPUs.

For every extraction cell of the config (``reprflow.workflow.targets.cells``: model x init x task x
length within the model's context; a ``scope: fig3`` init only at ``figures.length``) the tokens it
forwards are ``prompts x length``: ``prompts.n_prompts`` for a ``scope: all`` init,
``extraction.n_token_prompts`` for a ``scope: fig3`` one (it forwards only its token prompts). A
cell's GPU time is then

- at the **roofline floor**: ``tokens x 2 x params / peak`` (params of the model's config, shipped
  with the package for the paper models, counted on the meta device; the LM head is never computed,
  so the floor is generous to the GPU);
- at **measured rates** (``--rates model=tokens_per_s,...``, e.g. from ``benchmarks/kernels.py``):
  ``tokens / rate``.

Wall time on N GPUs: longest-first list scheduling of the cells (as Snakemake's extraction
priority does), each cell split into ``execution.extraction.shards`` shards (``--shards`` to
override). ``--arms paper`` counts only what the paper computes: the pretrained arm at full size
and every other init at its token prompts (the paper's Fig. 3 sweep; its Tables 1-2 are pretrained
only); ``--arms config`` (default) counts what the config runs. Model loading, probes and metrics
are not counted (``benchmarks/paper_rehearsal.py`` projects them from a rehearsal).

Usage (repository root)::

    python benchmarks/paper_floor.py [--configfile config/config.yaml] [--arms paper] \\
        [--rates gpt-neo-2.7b=112600,pythia-2.8b=103300,mamba-2.8b=88200,mamba2-2.7b=87600,mamba2-130m=500000]

The measured columns need a rate for every model of the config (BENCHMARKS.md has today's).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from kernels import H200_BF16_TFLOPS  # benchmarks/kernels.py: the bf16 matmul rate measured on the H200
from paper_rehearsal import fmt_s, lpt_makespan, parse_rates  # benchmarks/paper_rehearsal.py
from reprflow.config import PROJECT_ROOT, load_configs
from reprflow.models.registry import load_config
from reprflow.training.loop import untrained_config
from reprflow.training.sizing import count_params
from reprflow.training.recipe import TrainSpec
from reprflow.workflow.targets import cells, init_scope


def model_params(model) -> int:
    """Parameters of a config's model entry (``reprflow.training.sizing.count_params``: meta device,
    tied weights once) from its config: ``reprflow.models.registry.load_config``
    (a paper model's shipped copy or a local folder; never the hub here), or for a ``train:`` entry
    not trained yet the architecture its recipe builds (``reprflow.training.loop.untrained_config``)."""
    if model.train is not None and not Path(model.hf_id).exists():
        arch = untrained_config(
            model.family, TrainSpec.from_dict(model.train), model.tokenizer, positions=model.max_context
        )
    else:
        arch = load_config(model.hf_id, revision=model.revision, origin=f"models[{model.name}]", prefer_shipped=True)
    return count_params(arch)[0]


def cell_jobs(config, *, arms: str) -> list[dict]:
    """One dict per extraction cell: model, init, task, length, prompts, tokens."""
    n_prompts = config.section("prompts")["n_prompts"]
    n_token = config.section("extraction")["n_token_prompts"]
    pretrained = {i.name for i in config.inits if i.scheme == "pretrained"}
    fig3_length = config.section("figures")["length"]
    scope = {i.name: init_scope(i) for i in config.inits}
    jobs = []
    for cell in cells(config):
        if cell.task not in config.paper_tasks:
            continue
        full = scope[cell.init] == "all" and (arms == "config" or cell.init in pretrained)
        if not full and cell.length != fig3_length:  # the paper's other inits: Fig. 3's length only
            continue
        prompts = n_prompts if full else n_token
        jobs.append({**vars(cell), "prompts": prompts, "tokens": prompts * cell.length})
    return jobs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configfile", type=Path, default=PROJECT_ROOT / "config" / "config.yaml")
    ap.add_argument("--arms", choices=["config", "paper"], default="config")
    ap.add_argument("--rates", help="measured tokens/s per model, model=tok_s,...")
    ap.add_argument("--peak-tflops", type=float, default=H200_BF16_TFLOPS)
    ap.add_argument("--shards", type=int, default=None, help="shards per cell (default: the config's)")
    args = ap.parse_args(argv)

    config = load_configs([args.configfile])
    rates = parse_rates(args.rates)
    shards = args.shards or int(config.execution("extraction").get("shards") or 1)
    jobs = cell_jobs(config, arms=args.arms)
    params = {m.name: model_params(m) for m in config.models}
    for job in jobs:
        job["floor_s"] = job["tokens"] * 2 * params[job["model"]] / (args.peak_tflops * 1e12)
        rate = rates.get(job["model"])
        job["rate_s"] = job["tokens"] / rate if rate else None

    print(
        f"Extraction cost of {args.configfile.name} ({'what the config runs' if args.arms == 'config' else 'the paper: pretrained at full size, other inits at their token prompts'}): "
        f"{config.section('prompts')['n_prompts']} prompts per set, roofline {args.peak_tflops:.0f} TFLOP/s / "
        f"(2 x params) per token, {shards} shard(s) per cell\n"
    )
    print("| model | params | cells | tokens | GPU time at the roofline | tokens/s used | GPU time at that rate |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    by_model = defaultdict(list)
    for job in jobs:
        by_model[job["model"]].append(job)
    for model, js in sorted(by_model.items(), key=lambda kv: -sum(j["floor_s"] for j in kv[1])):
        rate_s = [j["rate_s"] for j in js]
        measured = fmt_s(sum(rate_s)) if all(r is not None for r in rate_s) else "-"
        print(
            f"| {model} | {f'{params[model] / 1e9:.2f}B' if params[model] >= 1e9 else f'{params[model] / 1e6:.1f}M'} | {len(js)} | {sum(j['tokens'] for j in js) / 1e6:,.1f}M | "
            f"{fmt_s(sum(j['floor_s'] for j in js))} | "
            f"{f'{rates[model] / 1e3:.1f}K' if model in rates else '-'} | {measured} |"
        )
    floor = [j["floor_s"] / shards for j in jobs for _ in range(shards)]
    have_rates = all(j["rate_s"] is not None for j in jobs)
    if rates and not have_rates:
        missing = sorted({j["model"] for j in jobs if j["rate_s"] is None})
        print(f"paper_floor: no --rates for {', '.join(missing)}: the measured columns stay '-'", file=sys.stderr)
    measured = [j["rate_s"] / shards for j in jobs for _ in range(shards)] if have_rates else []
    print(
        f"| **total** | | {len(jobs)} | {sum(j['tokens'] for j in jobs) / 1e6:,.1f}M | {fmt_s(sum(floor))} | | "
        f"{fmt_s(sum(measured)) if have_rates else '-'} |"
    )
    longest = max(jobs, key=lambda j: j["floor_s"])
    print(
        f"\nLongest cell: {longest['model']}/{longest['init']}/{longest['task']}_n{longest['length']}, "
        f"{fmt_s(longest['floor_s'])} at the roofline"
        + (f", {fmt_s(longest['rate_s'])} at its rate" if longest["rate_s"] else "")
        + (f" ({shards} shards: / {shards})" if shards > 1 else "")
    )
    print("\n| GPUs | extraction wall at the roofline (longest first) | at the measured rates |\n|---:|---:|---:|")
    for g in (1, 2, 4, 8):
        print(f"| {g} | {fmt_s(lpt_makespan(floor, g))} | {fmt_s(lpt_makespan(measured, g)) if have_rates else '-'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
