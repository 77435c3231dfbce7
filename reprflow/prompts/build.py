"""Entry point of the prompts phase: calibrate the item count, draw the prompts, describe them.

:func:`build_prompt_set` is what the workflow calls; with
:func:`reprflow.prompts.dataset.write_prompt_set` it produces
``data/prompts/{tokenizer}/{task}_n{length}.jsonl`` and its manifest.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from pathlib import Path

import numpy as np

from reprflow import __version__
from reprflow.errors import PromptError
from reprflow.prompts.calibrate import calibrate_item_count
from reprflow.prompts.dataset import TASKS, check_task
from reprflow.prompts.distractors import liu_distractor_file, read_liu_distractors, tfidf_distractor_pools
from reprflow.prompts.files import sha256_file
from reprflow.prompts.kvpr import KVPRSampler
from reprflow.prompts.mdqa import MDQASampler, load_oracle
from reprflow.prompts.sampling import balanced_labels, prompt_rng, sample_prompts
from reprflow.prompts.tokenizers import load_tokenizer, tokenizer_file

__all__ = ["DEFAULT_POOL_SIZE", "DEFAULT_CALIBRATION_SIZE", "build_prompt_set"]

logger = logging.getLogger(__name__)

#: TF-IDF distractor candidates kept per question (must exceed the largest n_items - 1).
DEFAULT_POOL_SIZE = 100
#: Calibration sample per candidate count, by task.
DEFAULT_CALIBRATION_SIZE = {"kvpr": 32, "mdqa": 256}
#: Random stream of the final prompt set (calibration uses 1); plans add ``n_items`` to it.
FINAL_STREAM = 0
#: Random stream of the final label permutation (``seed_key + (2,)``, a key of its own length).
LABEL_STREAM = 2


@functools.lru_cache(maxsize=4)
def _mdqa_sources(oracle: str, oracle_sha: str, distractors: str | None, distractor_sha: str | None, pool_size: int):
    """Oracle examples and distractor pools, cached per file content within one process."""
    examples = load_oracle(oracle)
    if distractors is None:
        pools = tfidf_distractor_pools(examples, pool_size=pool_size, progress=True)
    else:
        pools = read_liu_distractors(distractors, examples)
    return examples, pools


def _check_inputs(task, target_tokens, n_prompts, seed, tolerance, max_tokens) -> int:
    check_task(task)
    for name, value, low in (("target_tokens", target_tokens, 1), ("n_prompts", n_prompts, 1), ("seed", seed, 0)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not low <= value < 2**32:
            raise PromptError(f"{task}: {name} must be an int in [{low}, 2**32), got {value!r}")
    if not 0 < tolerance < 1:
        raise PromptError(f"{task} n{target_tokens}: tolerance must be in (0, 1), got {tolerance!r}")
    cap = math.floor(target_tokens * (1 + tolerance))
    if max_tokens is not None:
        if not isinstance(max_tokens, (int, np.integer)) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise PromptError(f"{task} n{target_tokens}: max_tokens must be a positive int or None, got {max_tokens!r}")
        cap = min(cap, int(max_tokens))
    if cap < math.ceil(target_tokens * (1 - tolerance)):
        raise PromptError(
            f"{task} n{target_tokens}: max_tokens={max_tokens} leaves no room for a median within "
            f"{tolerance:.0%} of the target (needs >= {math.ceil(target_tokens * (1 - tolerance))}); "
            "skip this length for that model instead"
        )
    max_tokens = cap
    return int(max_tokens)


def build_prompt_set(
    task: str,
    *,
    target_tokens: int,
    tokenizer_name: str,
    n_prompts: int,
    seed: int,
    oracle_path: str | os.PathLike | None = None,
    distractor_dir: str | os.PathLike | None = None,
    tolerance: float = 0.05,
    max_tokens: int | None = None,
    calibration_size: int | None = None,
    pool_size: int = DEFAULT_POOL_SIZE,
    tokenizer_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[list[dict], dict]:
    """Build one prompt set: ``n_prompts`` prompts of ``task`` about ``target_tokens`` long.

    Parameters
    ----------
    task : {"kvpr", "mdqa"}
    target_tokens : int
        Target median length, e.g. 300, 1024, 2048, 4096.
    tokenizer_name : str
        ``"gpt2"`` or ``"gpt-neox-20b"`` (or a tokenizer.json path; see :func:`load_tokenizer`).
    n_prompts : int
    seed : int
        Every random choice derives from ``(seed, task, target_tokens)``.
    oracle_path : path, optional
        Liu et al.'s ``nq-open-oracle.jsonl.gz``; required for MDQA.
    distractor_dir : path, optional
        MDQA only: a folder of Liu et al.'s ``nq-open-N_total_documents_gold_at_K`` files; their
        retrieval distractors replace the TF-IDF default.
    tolerance : float
        Allowed relative error of the median length.
    max_tokens : int, optional
        Context limit (e.g. 2048 for GPT-Neo and Pythia). Every prompt gets
        ``n_tokens <= min(floor(target_tokens * (1 + tolerance)), max_tokens)``; without it the
        cap is ``floor(target_tokens * (1 + tolerance))``.
    calibration_size : int, optional
        Prompts per candidate item count in the calibration; default
        :data:`DEFAULT_CALIBRATION_SIZE` of the task (MDQA lengths vary far more than KVPR's).
    pool_size : int
        MDQA TF-IDF distractor candidates per question.
    tokenizer_dir : path, optional
        Where tokenizer names are looked up.
    progress : bool
        Show a tqdm bar for the final draw.

    Returns
    -------
    records : list of dict, length n_prompts
        Keys ``id, task, prompt, label, n_items, n_tokens, answer, group`` (MDQA: the split group
        of the question, :func:`reprflow.prompts.mdqa.gold_passage_groups`, i.e. the question's
        oracle line unless its gold passage is another question's too; KVPR: the prompt's index).
        No two records have the same prompt.
    manifest : dict
        Seed, inputs and their sha256s, the calibration and the achieved lengths.

    Raises
    ------
    PromptError
        Bad arguments (unknown task or tokenizer, non-positive length, ...), unreadable sources,
        or no item count within ``tolerance`` of the target.

    Notes
    -----
    - Item count: one per (task, target, tokenizer), chosen by
      :func:`reprflow.prompts.calibrate.calibrate_item_count` (search on natural prompts,
      choice under the cap; its module docstring states the rule).
    - Gold positions: every position equally often (within one), shuffled with the seed.
    - Cap: a prompt over ``max_tokens`` is redrawn with the same index and gold position
      (KVPR: new UUIDs; MDQA: a new distractor sample steered to shorter passages, or, when
      its question cannot fit, another question), so no prompt exceeds it.
      The tolerance cap alone, ``floor(target * (1 + tolerance))``, does *not* make a
      2048-token set fit a 2048-context model (it allows 2150): pass ``max_tokens=2048``.
    - Uniqueness: a prompt byte-identical to an earlier one is redrawn; the result is checked.
    - MDQA questions: drawn without replacement; beyond the number of usable questions
      (2655 in the oracle file, less those whose gold cannot fit the cap) a fresh permutation
      follows, so each question is used ``ceil`` or ``floor`` of ``n_prompts / n_usable`` times
      (about 9.5 at 25,000 prompts), each time with its own distractor sample, order and gold
      position. The records' ``group`` lets the probe split keep a question, and every question
      with the same gold passage, on one side.
    - Seeds: the random streams depend on ``(seed, task, target_tokens)``, not on the
      tokenizer, so the two tokenizers' sets share their draws wherever their item counts
      agree (e.g. the same UUIDs for KVPR at 2048 with 37 pairs).
    """
    context_limit = max_tokens
    max_tokens = _check_inputs(task, target_tokens, n_prompts, seed, tolerance, max_tokens)
    tok_path = tokenizer_file(tokenizer_name, tokenizer_dir=tokenizer_dir)
    tokenizer = load_tokenizer(tok_path)
    tok_label = tok_path.parent.name
    label = f"{task} n{target_tokens} {tok_label}"
    seed_key = (int(seed), TASKS.index(task), int(target_tokens))

    sources: list[dict] = []
    extra: dict = {}
    if task == "kvpr":
        sampler = KVPRSampler(seed_key=seed_key)
    else:
        if oracle_path is None:
            raise PromptError(f"{label}: oracle_path is required for MDQA (Liu et al.'s nq-open-oracle.jsonl.gz)")
        oracle = Path(oracle_path)
        if not oracle.is_file():
            raise PromptError(f"{label}: oracle file {oracle} not found")
        oracle_sha = sha256_file(oracle)
        sources.append({"role": "oracle", "file": oracle.name, "sha256": oracle_sha})
        dfile = dsha = None
        if distractor_dir is not None:
            dfile = liu_distractor_file(distractor_dir)
            dsha = sha256_file(dfile)
            sources.append({"role": "distractors", "file": dfile.name, "sha256": dsha})
        examples, pools = _mdqa_sources(str(oracle.resolve()), oracle_sha, dfile and str(dfile), dsha, pool_size)
        sampler = MDQASampler(examples, pools, tokenizer, seed_key=seed_key)
        extra["distractors"] = (
            {"source": "liu", "file": dfile.name}
            if dfile
            else {"source": "tfidf", "pool_size": pool_size, "pool": "gold passages of the other questions"}
        ) | {"choice": "uniform sample of the pool without replacement, shuffled, per prompt"}

    cal = calibrate_item_count(
        sampler,
        tokenizer,
        target_tokens=target_tokens,
        tolerance=tolerance,
        max_tokens=max_tokens,
        sample_size=calibration_size or DEFAULT_CALIBRATION_SIZE[task],
        label=label,
    )
    n_items = cal.n_items
    labels = balanced_labels(n_prompts, n_items, prompt_rng(seed_key, LABEL_STREAM))
    plan = sampler.plan(n_items, n_prompts, stream=FINAL_STREAM, max_tokens=max_tokens)
    got = sample_prompts(plan, labels, tokenizer, max_tokens=max_tokens, progress=label if progress else None)

    median = float(np.median(got.n_tokens))
    rel = (median - target_tokens) / target_tokens
    if abs(rel) > tolerance:
        raise PromptError(
            f"{label}: n_items={n_items} gave a median of {median:g} tokens ({rel:+.1%}) over {n_prompts} prompts, "
            f"outside the {tolerance:.0%} tolerance the calibration sample met ({cal.median:g}); "
            "raise calibration_size"
        )
    records = [
        {
            "id": f"{task}-n{target_tokens}-{i:06d}",
            "task": task,
            "prompt": d.prompt,
            "label": int(labels[i]),
            "n_items": n_items,
            "n_tokens": int(got.n_tokens[i]),
            "answer": d.answer if task == "kvpr" else list(d.answer),
            "group": i if d.group is None else int(d.group),
        }
        for i, d in enumerate(got.drafts)
    ]
    if len({r["prompt"] for r in records}) != n_prompts:  # sample_prompts guarantees it; never write otherwise
        raise PromptError(f"{label}: byte-identical prompts in the set (a bug in the sampler); nothing written")
    if task == "mdqa":
        questions = np.array([d.question for d in got.drafts])
        uses = np.bincount(questions)
        extra["questions"] = {
            "n_available": len(sampler.examples),
            "n_excluded_by_cap": plan.n_excluded,
            "n_distinct_used": int(np.count_nonzero(uses)),
            "max_uses": int(uses.max()),
            "n_replaced": int(np.sum(questions != plan.order)),
            "n_split_groups": len({r["group"] for r in records}),
        }
    manifest = {
        "task": task,
        "target_tokens": int(target_tokens),
        "tokenizer": tok_label,
        "tokenizer_sha256": sha256_file(tok_path),
        "n_prompts": int(n_prompts),
        "seed": int(seed),
        "seed_key": list(seed_key),
        "tolerance": tolerance,
        "max_tokens": max_tokens,
        "context_limit": context_limit,
        "n_items": n_items,
        "calibration": cal.to_dict(),
        "achieved": {
            "median": median,
            "rel_error": rel,
            "min": int(got.n_tokens.min()),
            "max": int(got.n_tokens.max()),
            "mean": float(got.n_tokens.mean()),
            "resampled_fraction": got.resampled_fraction,
            "adjusted_fraction": got.adjusted_fraction,
            "intervened_fraction": got.intervened_fraction,
            "duplicate_redraws": got.n_duplicates,
        },
        "label_counts": np.bincount(labels, minlength=n_items).tolist(),
        "sources": sources,
        **extra,
        "template": "Liu et al. 2024 lost-in-the-middle " + ("kv_retrieval.prompt" if task == "kvpr" else "qa.prompt"),
        "reprflow_version": __version__,
    }
    return records, manifest
