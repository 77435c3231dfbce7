"""Small file helpers for the prompt sets: content hashes, user text (atomic writes: reprflow.atomic)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from reprflow.atomic import atomic_write_bytes
from reprflow.errors import PromptError

__all__ = ["sha256_bytes", "sha256_file", "atomic_write_bytes", "read_user_text"]


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


def read_user_text(path: str | os.PathLike) -> str:
    """The text of a user's prompt file, decoded as UTF-8 (a leading byte-order mark is dropped).

    Raises
    ------
    PromptError
        ``FILE line N: not UTF-8 text ...`` naming the first byte that does not decode.
    """
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PromptError(
            f"{path} line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "save the file as UTF-8"
        ) from None
