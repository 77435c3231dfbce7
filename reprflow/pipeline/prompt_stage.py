"""Prompt stage: build one prompt set (task, length, tokenizer) and write it with its manifest:
a paper task's (KVPR, MDQA) from its sources, a custom task's from the user's JSONL file."""

from __future__ import annotations

import logging
from pathlib import Path

from reprflow.config import prompt_set_settings
from reprflow.prompts import build_prompt_set, write_prompt_set
from reprflow.prompts.custom import build_custom_prompt_set

logger = logging.getLogger(__name__)


def build_prompt_records(
    *,
    task: str,
    length: int,
    tokenizer: str,
    seed: int,
    settings: dict,
    max_tokens: int | None = None,
    progress: bool = True,
) -> tuple[list[dict], dict]:
    """The records and manifest of one prompt set, as the prompts rule builds them (nothing written).

    ``settings`` is the validated ``config.prompts`` section or this set's part of it
    (:func:`reprflow.config.prompt_set_settings`, the prompts rule's param); a
    ``tolerance_overrides`` entry replaces ``tolerance`` for its (task, length). ``max_tokens`` caps every prompt
    (the smallest context window among the models that read this set; see
    :func:`reprflow.workflow.targets.prompt_token_cap`).
    """
    settings = prompt_set_settings(settings, task, length)
    return build_prompt_set(
        task,
        target_tokens=length,
        tokenizer_name=tokenizer,
        n_prompts=settings["n_prompts"],
        seed=seed,
        oracle_path=settings.get("mdqa_oracle"),
        distractor_dir=settings.get("mdqa_distractor_dir"),
        tolerance=settings["tolerance"],
        max_tokens=max_tokens,
        progress=progress,
    )


def build_prompt_file(
    out_path: str | Path,
    *,
    task: str,
    length: int,
    tokenizer: str,
    seed: int,
    settings: dict,
    max_tokens: int | None = None,
) -> Path:
    """Write ``data/prompts/{tokenizer}/{task}_n{length}.jsonl`` and its ``.manifest.json``.

    Arguments as :func:`build_prompt_records`.
    """
    records, manifest = build_prompt_records(
        task=task, length=length, tokenizer=tokenizer, seed=seed, settings=settings, max_tokens=max_tokens
    )
    write_prompt_set(records, manifest, out_path)
    logger.info("wrote %d %s prompts (~%d tokens) to %s", len(records), task, length, out_path)
    return Path(out_path)


def build_custom_prompt_file(
    out_path: str | Path, *, task: str, spec: dict, tokenizer: str, max_tokens: int | None = None
) -> Path:
    """Write a custom task's ``data/prompts/{tokenizer}/{task}_n{length}.jsonl`` and its manifest.

    ``spec`` is ``config.custom_tasks.<task>`` (``jsonl``, ``length``); see
    :func:`reprflow.prompts.custom.build_custom_prompt_set`.
    """
    records, manifest = build_custom_prompt_set(task, spec, tokenizer_name=tokenizer, max_tokens=max_tokens)
    write_prompt_set(records, manifest, out_path)
    logger.info(
        "wrote %d %s prompts (at most %d tokens, from %s) to %s",
        len(records),
        task,
        manifest["max_tokens"],
        spec["jsonl"],
        out_path,
    )
    return Path(out_path)
