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


def test_a_run_killed_with_sigkill_leaves_a_partial_that_the_next_run_removes(tmp_path: Path) -> None:
    """Issue #22 item 11: ``kill -9`` while writing leaves a hidden .partial folder; the rerun removes it."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "shared" / "case1"
    writer = (
        "import sys, time; from medenc.atomic import atomic_directory\n"
        f"with atomic_directory({str(out)!r}) as tmp:\n"
        "    (tmp / 'half.dcm').write_bytes(b'x' * 1000); print(tmp, flush=True); time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    try:
        partial = Path(child.stdout.readline().strip())
        assert partial.is_dir() and partial.name.startswith(".case1.") and partial.name.endswith(".partial")
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert partial.exists() and not out.exists()  # what a killed run leaves behind
    time.sleep(0.01)
    with atomic_directory(out) as tmp:  # the rerun
        (tmp / "done.dcm").write_bytes(b"y")
    assert not partial.exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["case1"]


def test_a_partial_of_a_live_run_is_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "case1"
    live = tmp_path / f".case1.{os.getppid()}.abc.partial"  # the parent (pytest's launcher) is alive
    live.mkdir()
    with atomic_directory(out) as tmp:
        (tmp / "a").write_bytes(b"a")
    assert live.is_dir() and out.is_dir()
