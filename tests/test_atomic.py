"""Atomic writes give their outputs the permissions a plain open()/mkdir() would (the umask's)."""

from __future__ import annotations

import os
import stat

import pytest

from reprflow.atomic import atomic_write_bytes, atomic_write_dir


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_outputs_follow_the_umask_not_the_temporary_files_0600(tmp_path, mask):
    """Before: every prompt set, table and metrics folder was 0600/0700, unreadable to a group
    sharing out_dir."""
    old = os.umask(mask)
    try:
        atomic_write_bytes(b"x", tmp_path / "table.csv")
        atomic_write_dir(tmp_path / "metrics", lambda d: (d / "a.json").write_text("{}"))
        plain = tmp_path / "plain"
        plain.write_text("x")
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "table.csv") == mode(plain) == 0o666 & ~mask
    assert mode(tmp_path / "metrics") == 0o777 & ~mask
