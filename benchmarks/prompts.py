"""Prompt-set generation cost: reprflow.prompts against what a user would write by hand.

Rows (all on this CPU, same inputs):

* ``tokenize``: token counts of N ready KVPR prompts at 2048 tokens -- reprflow's batched
  fast-tokenizer calls (:func:`reprflow.prompts.sampling.count_tokens`) against the naive
  ``len(tokenizer(p)["input_ids"])`` per prompt;
* ``tfidf``: MDQA distractor neighbour lists for the 2655 oracle questions -- one sparse product
  and a row-wise ``argpartition`` against the naive per-question ``linear_kernel`` + full sort per
  question (both then apply the same answer filter);
* ``build``: end-to-end :func:`build_prompt_set` for N prompts at 2048 tokens (calibration
  included), KVPR and MDQA (no naive twin: reported as seconds and tokens/s).

Run: ``PYTHONPATH=. python benchmarks/prompts.py --n-prompts 1000``

``--paper-sets`` instead builds every prompt set a config names (default config/config.yaml:
KVPR and MDQA x its lengths x each tokenizer, skipping lengths beyond all of that tokenizer's
models' ``max_context``, capped as the prompts rule caps them), exactly as the prompts rule
does, writes each to a temporary file and prints one markdown row per set: prompts, item
count, build and write time, token-length stats, byte-identical duplicates, and the probe
split's cross-split leakage (questions or prompts on both sides, seed 0, ``probes:`` of the
config). Run: ``PYTHONPATH=. python benchmarks/prompts.py --paper-sets``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from reprflow.prompts import build_prompt_set, load_tokenizer, write_prompt_set
from reprflow.prompts.distractors import DistractorPools, filter_pool, tfidf_distractor_pools, tie_break_ranks
from reprflow.prompts.kvpr import KVPRPlan
from reprflow.prompts.mdqa import load_oracle
from reprflow.prompts.sampling import count_tokens

ORACLE = Path(__file__).resolve().parents[1] / "data" / "lost_in_the_middle" / "nq-open-oracle.jsonl.gz"


def timed(fn, repeats: int = 1):
    """Median wall time of ``repeats`` calls, and the last result."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def naive_tfidf(examples, pool_size):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import linear_kernel  # cosine for L2-normalised tf-idf rows

    passages = [e.gold for e in examples]
    vec = TfidfVectorizer(stop_words="english", sublinear_tf=True, dtype=np.float32)
    p_mat = vec.fit_transform([f"{p.title}\n{p.text}" for p in passages])
    pools = []
    for qi, e in enumerate(examples):
        row = linear_kernel(vec.transform([e.question]), p_mat)[0]
        row[qi] = -np.inf
        order = np.lexsort((tie_break_ranks(qi, len(row)), -row))
        pools.append(filter_pool(e, order[np.isfinite(row[order])], passages, limit=pool_size))
    return DistractorPools(passages, pools, "tfidf")


def paper_sets(config_path: str, n_prompts: int | None, lengths: list[int] | None = None) -> None:
    """Build every prompt set of ``config_path`` as the prompts rule does; print one row per set."""
    import gc
    import tempfile

    from reprflow.config import load_config
    from reprflow.pipeline.prompt_stage import build_prompt_records
    from reprflow.probes import grouped_stratified_split
    from reprflow.workflow.targets import prompt_token_cap

    config = load_config(config_path)
    settings = config.section("prompts")
    if n_prompts is not None:
        settings["n_prompts"] = n_prompts
    probes = config.section("probes")
    needed = sorted(
        {
            (m.tokenizer, task, length)
            for m in config.models
            for task in config.tasks
            for length in config.lengths
            if m.fits(length)
        },
        key=lambda x: (x[2], x[1], x[0]),  # smallest first: a run cut short still covers every length it reached
    )
    if lengths:
        needed = [x for x in needed if x[2] in lengths]
    print(
        f"config {config_path}: {len(needed)} prompt sets x {settings['n_prompts']} prompts, seed {config.seed}; "
        f"split: val_fraction {probes['val_fraction']}, n_train {probes['n_train']}, seed 0",
        flush=True,
    )
    head = (
        "| set | tokenizer | context cap (prompt cap) | n | items | build s | write s | "
        "tokens min / median / max | steered | "
        "dup. redraws | duplicates | questions used (max uses, replaced) | train / val | leakage | K tok/s |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1), flush=True)
    total = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for tok, task, length in needed:
            cap = prompt_token_cap(config, tok, length)
            t0 = time.perf_counter()
            records, manifest = build_prompt_records(
                task=task,
                length=length,
                tokenizer=tok,
                seed=config.seed,
                settings=settings,
                max_tokens=cap,
                progress=False,
            )
            t_build = time.perf_counter() - t0
            t0 = time.perf_counter()
            path = write_prompt_set(records, manifest, Path(tmp) / tok / f"{task}_n{length}.jsonl")
            t_write = time.perf_counter() - t0
            total += t_build + t_write
            n_tok = np.array([r["n_tokens"] for r in records])
            labels = np.array([r["label"] for r in records])
            groups = np.array([r["group"] for r in records])
            duplicates = len(records) - len({r["prompt"] for r in records})
            tr, va = grouped_stratified_split(
                labels, groups, val_fraction=probes["val_fraction"], n_train=probes["n_train"], seed=0
            )
            prompts_tr = {records[i]["prompt"] for i in tr}
            leak_groups = len(set(groups[tr].tolist()) & set(groups[va].tolist()))
            leak_prompts = sum(records[i]["prompt"] in prompts_tr for i in va)
            a = manifest["achieved"]
            q = manifest.get("questions")
            used = f"{q['n_distinct_used']} ({q['max_uses']}, {q['n_replaced']})" if q else "-"
            print(
                f"| {task}_n{length} | {tok} | {cap or 'none'} ({manifest['max_tokens']}) | {len(records)} | "
                f"{manifest['n_items']} | {t_build:.1f} | {t_write:.1f} | "
                f"{n_tok.min()} / {np.median(n_tok):g} / {n_tok.max()} | {a['adjusted_fraction']:.0%} | "
                f"{a['duplicate_redraws']} | {duplicates} | {used} | {tr.size} / {va.size} | "
                f"{leak_groups} groups, {leak_prompts} prompts | {n_tok.sum() / t_build / 1e3:.0f} |",
                flush=True,
            )
            path.unlink()
            del records, manifest, prompts_tr
            gc.collect()
    print(f"total: {total:.0f} s ({total / 60:.1f} min) for {len(needed)} sets", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-prompts", type=int, default=None, help="default 1000; with --paper-sets the config's")
    ap.add_argument("--tokenizer", default="gpt2")
    ap.add_argument("--repeats", type=int, default=3, help="median of this many runs per timed row")
    ap.add_argument("--paper-sets", action="store_true", help="build every prompt set of --config (see above)")
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--lengths", type=int, nargs="*", help="with --paper-sets: only these lengths")
    args = ap.parse_args()
    if args.paper_sets:
        paper_sets(args.config, args.n_prompts, args.lengths)
        return
    n = args.n_prompts or 1000
    tok = load_tokenizer(args.tokenizer)
    rows = []

    plan = KVPRPlan(n_items=37, seed_key=(0, 0, 2048))
    prompts = [plan.draft(i, i % 37, attempt=0, budget=0).prompt for i in range(n)]
    t_naive, naive = timed(lambda: [len(tok(p)["input_ids"]) for p in prompts], args.repeats)
    t_ours, ours = timed(lambda: count_tokens(prompts, tok), args.repeats)
    assert naive == ours.tolist()
    rows.append(("tokenize", f"{n} KVPR prompts, {ours.sum() / 1e6:.2f}M tokens", t_naive, t_ours))

    examples = load_oracle(ORACLE)
    t_naive, a = timed(lambda: naive_tfidf(examples, 100), args.repeats)
    t_ours, b = timed(lambda: tfidf_distractor_pools(examples, pool_size=100), args.repeats)
    assert all(np.array_equal(x, y) for x, y in zip(a.pools, b.pools))
    rows.append(("tfidf", f"{len(examples)} questions, top 100", t_naive, t_ours))

    builds = []
    for task in ("kvpr", "mdqa"):
        t, (records, manifest) = timed(
            lambda: build_prompt_set(
                task,
                target_tokens=2048,
                tokenizer_name=args.tokenizer,
                n_prompts=n,
                seed=0,
                oracle_path=ORACLE,
                progress=False,
            )
        )
        total = sum(r["n_tokens"] for r in records)
        builds.append((task, t, total, manifest["n_items"]))

    print(f"{'step':<10} {'workload':<36} {'naive s':>9} {'reprflow s':>11} {'speed-up':>9}")
    for name, what, tn, to in rows:
        print(f"{name:<10} {what:<36} {tn:>9.2f} {to:>11.2f} {tn / to:>8.1f}x")
    for task, t, total, n_items in builds:
        print(
            f"{'build':<10} {f'{task} n2048 {args.tokenizer}, {n} prompts ({n_items} items)':<36} {'-':>9} {t:>11.2f} "
            f"{total / t / 1e3:>6.0f}K tok/s"
        )


if __name__ == "__main__":
    main()
