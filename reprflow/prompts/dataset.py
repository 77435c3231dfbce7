"""Prompt-set files: ``data/prompts/{tokenizer}/{task}_n{length}.jsonl`` plus a sidecar manifest.

One JSON record per line, keys in this order: ``id``, ``task``, ``prompt``, ``label`` (gold
position, 0-based; a custom task: the class), ``n_items`` (a custom task: the number of classes),
``n_tokens`` (no special tokens), ``answer`` (KVPR: the value string; MDQA: list of answer strings;
a custom task, :mod:`reprflow.prompts.custom`: null), ``group`` (what a train/validation split must keep on
one side: MDQA the question's split group, :func:`reprflow.prompts.mdqa.gold_passage_groups`, i.e. its
0-based line in the oracle file unless it shares its gold passage with other questions, then the
smallest line among them; KVPR the prompt's own index).
No two records of a file have the same ``prompt``. The manifest ``{task}_n{length}.manifest.json`` holds the
seed, source and tokenizer sha256s, the calibration, and ``prompts_sha256`` of the jsonl bytes.

Both files are written atomically; the manifest first, the jsonl last, so a jsonl on disk is
always complete and :func:`read_prompt_set` can check it against its manifest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from reprflow.config import PAPER_TASKS
from reprflow.errors import PromptError
from reprflow.prompts.files import atomic_write_bytes, sha256_bytes

__all__ = [
    "TASKS",
    "RECORD_KEYS",
    "check_task",
    "prompt_set_path",
    "manifest_path",
    "encode_records",
    "validate_record",
    "write_prompt_set",
    "read_prompt_set",
    "read_manifest",
    "read_prompt_groups",
]

#: The paper's task names, in the order used for seeding (custom tasks: reprflow.prompts.custom).
TASKS = PAPER_TASKS
#: Keys of a prompt record, in file order.
RECORD_KEYS = ("id", "task", "prompt", "label", "n_items", "n_tokens", "answer", "group")


def check_task(task: str) -> str:
    """Return ``task`` if it is one of :data:`TASKS`, else raise :class:`PromptError`."""
    if task not in TASKS:
        raise PromptError(f"unknown task {task!r}; expected one of {list(TASKS)}")
    return task


def prompt_set_path(root: str | os.PathLike, tokenizer: str, task: str, length: int) -> Path:
    """``root/{tokenizer}/{task}_n{length}.jsonl`` (the data contract of docs/design.md §3)."""
    return Path(root) / tokenizer / f"{check_task(task)}_n{int(length)}.jsonl"


def manifest_path(prompt_path: str | os.PathLike) -> Path:
    """Sidecar of ``x/kvpr_n300.jsonl``: ``x/kvpr_n300.manifest.json``."""
    p = Path(prompt_path)
    return p.with_name(p.name.removesuffix(".jsonl") + ".manifest.json")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def validate_record(rec, *, where: str = "record") -> dict:
    """Check one prompt record; return it unchanged.

    Raises
    ------
    PromptError
        Naming ``where`` (e.g. ``"file.jsonl line 3 (id kvpr-300-000002)"``) and the bad field.
    """
    if not isinstance(rec, dict):
        raise PromptError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    if "id" in rec:
        where = f"{where} (id {rec['id']!r})"
    missing = [k for k in RECORD_KEYS if k not in rec]
    extra = [k for k in rec if k not in RECORD_KEYS]
    if missing or extra:
        raise PromptError(
            f"{where}: missing keys {missing}, unexpected keys {extra}; expected {list(RECORD_KEYS)} "
            "(a file from an older reprflow: delete it and rebuild it with the prompts rule)"
        )
    if not isinstance(rec["id"], str) or not rec["id"]:
        raise PromptError(f"{where}: 'id' must be a non-empty string, got {rec['id']!r}")
    if not isinstance(rec["task"], str) or not rec["task"]:
        raise PromptError(f"{where}: 'task' must be {' or '.join(TASKS)} or a custom task's name, got {rec['task']!r}")
    if not isinstance(rec["prompt"], str) or not rec["prompt"]:
        raise PromptError(f"{where}: 'prompt' must be a non-empty string")
    for key in ("n_items", "n_tokens"):
        if not _is_int(rec[key]) or rec[key] < 1:
            raise PromptError(f"{where}: {key!r} must be a positive int, got {rec[key]!r}")
    if not _is_int(rec["group"]) or rec["group"] < 0:
        raise PromptError(f"{where}: 'group' must be an int >= 0, got {rec['group']!r}")
    if not _is_int(rec["label"]) or not 0 <= rec["label"] < rec["n_items"]:
        raise PromptError(f"{where}: 'label' must be an int in [0, n_items={rec['n_items']}), got {rec['label']!r}")
    ans = rec["answer"]
    if rec["task"] == "kvpr" and not (isinstance(ans, str) and ans):
        raise PromptError(f"{where}: KVPR 'answer' must be the gold value string, got {ans!r}")
    if rec["task"] == "mdqa" and not (isinstance(ans, list) and ans and all(isinstance(a, str) and a for a in ans)):
        raise PromptError(f"{where}: MDQA 'answer' must be a non-empty list of strings, got {ans!r}")
    if rec["task"] not in TASKS and ans is not None:
        raise PromptError(f"{where}: a custom task's 'answer' is null, got {ans!r}")
    return rec


def encode_records(records: Sequence[dict]) -> bytes:
    """The jsonl bytes of ``records``: UTF-8, one compact-spaced JSON object per line, keys in file order."""
    lines = [json.dumps({k: r[k] for k in RECORD_KEYS}, ensure_ascii=False) for r in records]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _check_unique(seen: dict, rec: dict, where: str) -> None:
    """Record ``rec``'s id and prompt in ``seen``; raise on a repeated id or a byte-identical prompt."""
    ids, prompts = seen.setdefault("id", set()), seen.setdefault("prompt", {})
    if rec["id"] in ids:
        raise PromptError(f"{where}: duplicate id {rec['id']!r}")
    ids.add(rec["id"])
    other = prompts.setdefault(rec["prompt"], rec["id"])
    if other != rec["id"]:
        raise PromptError(
            f"{where} (id {rec['id']!r}): same prompt text as {other!r}; a prompt set holds no two equal "
            "prompts (they would land on both sides of the probe split): delete the file and rebuild it"
        )


def write_prompt_set(records: Sequence[dict], manifest: dict, out_path: str | os.PathLike) -> Path:
    """Validate and write ``records`` to ``out_path`` and ``manifest`` to its sidecar, atomically.

    ``manifest`` gains ``prompts_sha256`` (of the jsonl bytes) and ``n_records``.

    Returns
    -------
    pathlib.Path
        ``out_path``.

    Raises
    ------
    PromptError
        A bad record, a repeated id, or two byte-identical prompts; nothing is written.
    """
    out_path = Path(out_path)
    seen: dict = {}
    for i, rec in enumerate(records):
        validate_record(rec, where=f"record {i}")
        _check_unique(seen, rec, f"record {i}")
    data = encode_records(records)
    full = dict(manifest, prompts_sha256=sha256_bytes(data), n_records=len(records))
    atomic_write_bytes((json.dumps(full, indent=2, ensure_ascii=False) + "\n").encode("utf-8"), manifest_path(out_path))
    atomic_write_bytes(data, out_path)
    return out_path


def read_manifest(prompt_path: str | os.PathLike) -> dict:
    """Read the sidecar manifest of a prompt set."""
    mpath = manifest_path(prompt_path)
    if not mpath.is_file():
        raise PromptError(
            f"{prompt_path}: manifest {mpath.name} missing (killed run?); delete the prompt set and rebuild it"
        )
    try:
        return json.loads(mpath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PromptError(f"{mpath}: not valid JSON ({exc}); delete the prompt set and rebuild it") from exc


def read_prompt_set(path: str | os.PathLike, *, check_manifest: bool = True) -> list[dict]:
    """Read and validate a prompt set.

    Parameters
    ----------
    path : path
        A ``{task}_n{length}.jsonl`` file.
    check_manifest : bool
        Also require the sidecar manifest and compare its ``prompts_sha256`` with the file.

    Returns
    -------
    list of dict, length n_prompts

    Raises
    ------
    PromptError
        A missing file, a bad line or record (named by line number and id), a duplicate id or
        prompt, or a file that does not match its manifest.
    """
    path = Path(path)
    if not path.is_file():
        raise PromptError(f"prompt set {path}: not found; build it with the prompts rule")
    data = path.read_bytes()
    records: list[dict] = []
    seen: dict = {}
    for lineno, line in enumerate(data.decode("utf-8").splitlines(), 1):
        where = f"{path} line {lineno}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PromptError(f"{where}: not valid JSON ({exc})") from exc
        validate_record(rec, where=where)
        _check_unique(seen, rec, where)
        records.append(rec)
    if not records:
        raise PromptError(f"prompt set {path}: empty")
    if check_manifest:
        expected = read_manifest(path).get("prompts_sha256")
        if expected != sha256_bytes(data):
            raise PromptError(
                f"prompt set {path}: sha256 differs from its manifest's prompts_sha256 (edited or partly "
                "written?); delete it and rebuild"
            )
    return records


def read_prompt_groups(path: str | os.PathLike, *, sha256: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``group`` and ``label`` of every record of a prompt set, in file order.

    Parameters
    ----------
    path : path
        A ``{task}_n{length}.jsonl`` file (read and validated whole, against its manifest, see
        :func:`read_prompt_set`).
    sha256 : str, optional
        Expected hex sha256 of the file (e.g. an activation store's ``prompt_sha256``); a
        mismatch raises instead of returning groups of another prompt set.

    Returns
    -------
    groups : ndarray of shape (n_prompts,), int64
    labels : ndarray of shape (n_prompts,), int64
    """
    path = Path(path)
    if sha256 is not None and path.is_file() and read_manifest(path).get("prompts_sha256") != sha256:
        raise PromptError(
            f"prompt set {path}: sha256 differs from the one recorded by the activation store; the store "
            "was extracted from another version of this file: rebuild the store (or restore the file)"
        )
    records = read_prompt_set(path)
    groups = np.fromiter((r["group"] for r in records), dtype=np.int64, count=len(records))
    labels = np.fromiter((r["label"] for r in records), dtype=np.int64, count=len(records))
    return groups, labels
