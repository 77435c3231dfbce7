"""Your own prompts as a task: a JSONL file of ``{"prompt": str, "label": int}`` records.

A config names such a file under ``custom_tasks`` (``{name: {jsonl: path, length: int}}``,
docs/custom_tasks.md); the ``custom_prompts`` rule turns it into a prompt set of the workflow
(``data/prompts/{tokenizer}/{name}_n{length}.jsonl`` and its manifest, the format of
:mod:`reprflow.prompts.dataset`), which the later stages read as they read KVPR and MDQA.

The user file: UTF-8 text (a leading byte-order mark is fine), one JSON object per line, blank
lines skipped. ``prompt``: a non-empty string (not only whitespace); ``label``: an int >= 0 (the
probe's class); other keys are ignored. The file holds at least two distinct labels (a probe needs two classes) and no two equal prompts
(they would land on both sides of the probe split). Every bad record is reported as
``FILE line N: what is wrong; the fix``.

In the prompt set each record gets ``id`` ``{name}-{index:06d}``, ``n_items`` = the number of
classes (max label + 1), ``n_tokens`` under the set's tokenizer (no special tokens, as the
prompt sets count), ``answer`` null and ``group`` = its index (each prompt its own group, as KVPR).
A custom task has one length, ``length``: a hard cap every prompt must fit under each tokenizer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from reprflow import __version__
from reprflow.errors import PromptError
from reprflow.prompts.files import read_user_text, sha256_file
from reprflow.prompts.tokenizers import load_tokenizer, tokenizer_file

__all__ = ["RECORD_HELP", "read_user_jsonl", "read_custom_task", "check_custom_tasks", "build_custom_prompt_set"]

RECORD_HELP = 'each line must be one JSON object like {"prompt": "some text", "label": 0}'


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def read_user_jsonl(path: str | os.PathLike, *, require_label: bool = True) -> list[dict]:
    """The ``{"prompt", "label", "line"}`` records of a user JSONL file, checked one by one.

    Parameters
    ----------
    path : path
        The JSONL file.
    require_label : bool
        True (the workflow): every record needs an int ``label`` >= 0. False (``reprflow
        extract``): a record without one gets label -1.

    Returns
    -------
    list of dict, one per non-blank line, in file order
        ``prompt`` (str), ``label`` (int), ``line`` (1-based line number).

    Raises
    ------
    PromptError
        ``FILE line N: ...`` for the first bad line (not UTF-8, not JSON, not an object, a missing, empty or
        non-string prompt, a missing, non-int or negative label, a prompt equal to an earlier
        one), or ``FILE: ...`` for a missing or empty file.
    """
    path = Path(path)
    if not path.is_file():
        raise PromptError(f"{path}: no such prompt file; {RECORD_HELP}")
    records: list[dict] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(read_user_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path} line {n}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PromptError(f"{where}: not JSON ({exc.msg} at column {exc.colno}); {RECORD_HELP}") from None
        if not isinstance(rec, dict):
            raise PromptError(f"{where}: expected a JSON object, got {type(rec).__name__}; {RECORD_HELP}")
        if "prompt" not in rec:
            raise PromptError(f"{where}: no 'prompt' key (keys: {sorted(rec)}); {RECORD_HELP}")
        prompt = rec["prompt"]
        if not isinstance(prompt, str):
            raise PromptError(f"{where}: 'prompt' must be a string, got {type(prompt).__name__}; {RECORD_HELP}")
        if not prompt.strip():
            raise PromptError(f"{where}: 'prompt' is empty; give it text or delete the line")
        if "label" not in rec:
            if require_label:
                raise PromptError(
                    f"{where}: no 'label' key; add the prompt's class as an int >= 0, e.g. \"label\": 0 ({RECORD_HELP})"
                )
            label = -1
        else:
            label = rec["label"]
            if not _is_int(label) or label < 0:
                raise PromptError(
                    f"{where}: 'label' must be an int >= 0 (the probe's class), got {label!r}; write "
                    'it as a bare integer (no quotes, no decimals), e.g. "label": 1'
                )
        if prompt in seen:
            raise PromptError(
                f"{where}: same prompt as line {seen[prompt]}; a prompt set holds no two equal prompts "
                "(they would land on both sides of the probe split): delete one of them"
            )
        seen[prompt] = n
        records.append({"prompt": prompt, "label": int(label), "line": n})
    if not records:
        raise PromptError(f"{path}: no records (empty file); {RECORD_HELP}")
    return records


def read_custom_task(name: str, spec: Mapping, *, root: str | os.PathLike = ".") -> list[dict]:
    """The checked records of ``config.custom_tasks.<name>`` (:func:`read_user_jsonl`, labels
    required), plus the check that they hold two classes or more.

    ``spec`` is ``{"jsonl": path, "length": int}``; ``jsonl`` is relative to ``root`` (the project).
    Errors start with ``config.custom_tasks.<name>.jsonl``."""
    path = Path(root) / spec["jsonl"]
    key = f"config.custom_tasks.{name}.jsonl"
    try:
        records = read_user_jsonl(path)
    except PromptError as exc:
        raise PromptError(f"{key}: {exc}") from None
    labels = sorted({r["label"] for r in records})
    if len(labels) < 2:
        raise PromptError(
            f"{key}: {path}: all {len(records)} records have label {labels[0]}; a probe needs two "
            "classes or more: label the prompts by what the probe should tell apart"
        )
    return records


def check_custom_tasks(config, *, root: str | os.PathLike = ".") -> None:
    """Read and check every custom task's file of a validated config (before any job runs).

    Raises
    ------
    PromptError
        The first bad file or record, starting with ``config.custom_tasks.<name>.jsonl``.
    """
    for name, spec in config.custom_tasks.items():
        read_custom_task(name, spec, root=root)


def build_custom_prompt_set(
    name: str, spec: Mapping, *, tokenizer_name: str, max_tokens: int | None = None, root: str | os.PathLike = "."
) -> tuple[list[dict], dict]:
    """The records and manifest of a custom task's prompt set under one tokenizer (nothing written).

    Parameters
    ----------
    name : str
        The task name (``config.custom_tasks`` key).
    spec : mapping
        ``{"jsonl": path, "length": int}``; every prompt must have at most ``length`` tokens.
    tokenizer_name : str
        ``"gpt2"``, ``"gpt-neox-20b"`` or a tokenizer.json path (:func:`load_tokenizer`).
    max_tokens : int, optional
        A further cap (the smallest context window among the models reading the set).
    root : path
        The project root ``spec["jsonl"]`` is relative to.

    Returns
    -------
    records : list of dict
        In file order, keys of :data:`reprflow.prompts.dataset.RECORD_KEYS` (module docstring).
    manifest : dict

    Raises
    ------
    PromptError
        A bad record (:func:`read_custom_task`), or a prompt longer than the cap, naming its line.
    """
    records = read_custom_task(name, spec, root=root)
    path = Path(root) / spec["jsonl"]
    length = int(spec["length"])
    cap = length if max_tokens is None else min(length, int(max_tokens))
    tokenizer = load_tokenizer(tokenizer_name)
    ids = tokenizer([r["prompt"] for r in records], add_special_tokens=False, return_attention_mask=False)["input_ids"]
    n_tokens = np.array([len(x) for x in ids], dtype=np.int64)
    too_long = np.flatnonzero(n_tokens > cap)
    if too_long.size:
        i = int(too_long[0])
        why = (
            f"config.custom_tasks.{name}.length = {length}"
            if cap == length
            else f"the context window {cap} of a model reading it"
        )
        raise PromptError(
            f"config.custom_tasks.{name}.jsonl: {path} line {records[i]['line']}: the prompt has {n_tokens[i]} tokens "
            f"under tokenizer {tokenizer_name}, above {why} ({too_long.size} prompt(s) too long, the longest "
            f"{int(n_tokens.max())}); shorten them or raise config.custom_tasks.{name}.length"
        )
    n_classes = max(r["label"] for r in records) + 1
    out = [
        {
            "id": f"{name}-{i:06d}",
            "task": name,
            "prompt": r["prompt"],
            "label": r["label"],
            "n_items": n_classes,
            "n_tokens": int(n_tokens[i]),
            "answer": None,
            "group": i,
        }
        for i, r in enumerate(records)
    ]
    manifest = {
        "task": name,
        "kind": "custom",
        "target_tokens": length,
        "tokenizer": str(tokenizer_name),
        "tokenizer_sha256": sha256_file(tokenizer_file(tokenizer_name)),
        "n_prompts": len(out),
        "max_tokens": cap,
        "n_items": n_classes,
        "achieved": {
            "median": float(np.median(n_tokens)),
            "min": int(n_tokens.min()),
            "max": int(n_tokens.max()),
            "mean": float(n_tokens.mean()),
        },
        "label_counts": np.bincount([r["label"] for r in out], minlength=n_classes).tolist(),
        "sources": {"jsonl": {"path": str(spec["jsonl"]), "sha256": sha256_file(path)}},
        "reprflow_version": __version__,
    }
    return out, manifest
