"""What lineage needs from one Python file, from one parse, cached on disk by the file's content.

:mod:`reprflow.workflow.lineage` digests the code every rule's script imports: each Snakemake
start (every dry run, every job a cluster runs, every ``dvc repro`` stage) parses the ~140 files
of the package. On a 2-core CI machine that was ~1.7 s of CPU per start; the parse results
depend only on a file's bytes and its place in the package, so they are kept in a small file per
version, named by the sha256 of both (and of this Python's version and :data:`FORMAT`):
``$REPRFLOW_CACHE_DIR/code-facts/``, default ``$XDG_CACHE_HOME/reprflow`` (``~/.cache/reprflow``).
A file edited back and forth hits the cache; any change of its bytes misses it, so a cached
value is always the one a fresh parse gives. Where the folder cannot be written, each process
parses again, as before. Entries are written atomically (a temporary file, then a rename), so
concurrent jobs never read half an entry.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = ["FORMAT", "CodeFacts", "cache_dir", "code_facts", "python_code"]

FORMAT = 1
"""Bumped when what :func:`code_facts` computes changes: older entries are then never read."""


@dataclass(frozen=True)
class CodeFacts:
    """The parse of one Python file.

    Attributes
    ----------
    imports : tuple of (str, tuple of str or None), or None
        One entry per import statement, in order: ``(module, None)`` for ``import module``,
        ``(module, names)`` for ``from module import names`` with relative modules resolved
        against the file's package. None when the file does not parse.
    code : bytes
        sha256 of :func:`python_code` (of the bytes, when the file does not parse).
    """

    imports: tuple[tuple[str, tuple[str, ...] | None], ...] | None
    code: bytes


def cache_dir() -> Path:
    """The folder of the cached entries: ``$REPRFLOW_CACHE_DIR/code-facts``, default under
    ``$XDG_CACHE_HOME/reprflow`` (``~/.cache/reprflow``)."""
    base = os.environ.get("REPRFLOW_CACHE_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "reprflow"
    )
    return Path(base) / "code-facts"


def code_facts(source: bytes, rel: PurePosixPath) -> CodeFacts:
    """:class:`CodeFacts` of the Python file ``rel`` (relative to the project root, e.g.
    ``reprflow/metrics/cka.py``) whose bytes are ``source``: from the cache, else parsed and
    stored there."""
    key = hashlib.sha256(f"{FORMAT}\0{sys.version_info[:2]}\0{rel.as_posix()}\0".encode() + source).hexdigest()
    entry = cache_dir() / f"{key}.json"
    try:
        data = json.loads(entry.read_text())
        imports = data["imports"]
        return CodeFacts(
            None if imports is None else tuple((m, None if n is None else tuple(n)) for m, n in imports),
            bytes.fromhex(data["code"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        pass
    facts = _parse(source, rel)
    _store(entry, {"imports": facts.imports, "code": facts.code.hex()})
    return facts


def _store(entry: Path, data: dict) -> None:
    """Write ``data`` to ``entry`` atomically; a folder that cannot be written is left alone."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, entry)
    except OSError:
        pass


def _parse(source: bytes, rel: PurePosixPath) -> CodeFacts:
    try:
        tree = ast.parse(source, filename=str(rel))
    except (SyntaxError, ValueError):
        return CodeFacts(None, hashlib.sha256(source).digest())
    here = list(rel.with_suffix("").parts[:-1])  # the package a module (or __init__) lives in
    imports: list[tuple[str, tuple[str, ...] | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1] if node.level > 1 else here
                module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            else:
                module = node.module or ""
            imports.append((module, tuple(a.name for a in node.names)))
    return CodeFacts(tuple(imports), hashlib.sha256(_code_of_tree(tree)).digest())  # after the walk: it edits the tree


def python_code(source: bytes) -> bytes:
    """What a Python file computes, as bytes: its syntax tree (``ast.dump``, no line numbers)
    with every module, class and function docstring removed. Equal for two files that differ
    only in comments, docstrings or formatting; the file's bytes if it does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return source
    return _code_of_tree(tree)


def _code_of_tree(tree: ast.Module) -> bytes:
    """:func:`python_code` of a parsed file; removes the docstrings from ``tree`` itself."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree).encode()
