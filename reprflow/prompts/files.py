"""Small file helpers for the prompt sets: content hashes (atomic writes: reprflow.atomic)."""

from __future__ import annotations

import hashlib
import os

from reprflow.atomic import atomic_write_bytes

__all__ = ["sha256_bytes", "sha256_file", "atomic_write_bytes"]


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of the file at ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
