"""Atomic folder and file writes: all or nothing, and the permissions a user expects."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from medenc.atomic import atomic_directory, atomic_write_text
from medenc.errors import OutputExistsError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_finished_folder_gets_the_mode_of_a_plain_mkdir(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        with atomic_directory(tmp_path / "out") as tmp:
            assert _mode(tmp) == 0o700  # private while partial
            (tmp / "a.txt").write_text("x")
        (tmp_path / "plain").mkdir()
    finally:
        os.umask(old)
    assert _mode(tmp_path / "out") == _mode(tmp_path / "plain") == 0o750
    assert (tmp_path / "out" / "a.txt").read_text() == "x"


def test_failed_block_leaves_nothing_and_keeps_the_old_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(OutputExistsError), atomic_directory(out):
        pass
    with pytest.raises(RuntimeError), atomic_directory(out, force=True) as tmp:
        (tmp / "new.txt").write_text("new")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no .partial left behind
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    with atomic_directory(out, force=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"]


def test_secret_file_is_written_with_its_mode(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "key.json", "{}", mode=0o600)
    assert _mode(path) == 0o600
    with pytest.raises(OutputExistsError):
        atomic_write_text(path, "{}", force=False)
