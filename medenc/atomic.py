"""Atomic file and folder writes: a temporary sibling, then one rename.

An interrupted run therefore never leaves a half-written output under the final name; what a killed
run left (a hidden ``.NAME.PID.*.partial`` folder of a process that is gone) is removed by the next
write of the same output. Every writer takes the command's ``inputs`` and refuses, through
:func:`medenc.files.check_output`, an output that would replace or hold one of them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from medenc.errors import InputError
from medenc.files import check_output


def atomic_write_bytes(
    path: str | Path,
    data: bytes,
    *,
    mode: int = 0o644,
    force: bool = True,
    inputs: Iterable[str | Path | None] = (),
) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    Args:
        path: destination file.
        data: the bytes to write.
        mode: permission bits of the new file (e.g. ``0o600`` for secrets); set before any byte is
            written, so the content is never readable with wider permissions.
        force: replace an existing file; if False an existing file raises :class:`OutputExistsError`.
        inputs: the files and folders the command read (see :func:`medenc.files.check_output`).

    Returns:
        The destination path.
    """
    path = check_output(path, inputs=inputs, force=force)
    if path.is_dir():
        raise InputError("is a folder; expected the path of a file to write", path, tip="name a file inside it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    return path


def atomic_write_text(
    path: str | Path,
    text: str,
    *,
    mode: int = 0o644,
    force: bool = True,
    inputs: Iterable[str | Path | None] = (),
) -> Path:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"), mode=mode, force=force, inputs=inputs)


@contextlib.contextmanager
def atomic_directory(
    path: str | Path, *, force: bool = False, inputs: Iterable[str | Path | None] = ()
) -> Iterator[Path]:
    """Build a folder under a temporary name and rename it to ``path`` when the block succeeds.

    On an exception the temporary folder is removed and ``path`` is left as it was.

    Args:
        path: the final folder.
        force: replace an existing ``path``; otherwise an existing non-empty folder raises
            :class:`OutputExistsError`.
        inputs: the files and folders the command read (see :func:`medenc.files.check_output`).

    Yields:
        The temporary folder to fill.
    """
    path = check_output(path, inputs=inputs, force=force)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        tmp.chmod(_mkdir_mode())  # mkdtemp makes 0700; the result gets the mode a plain mkdir would give
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _mkdir_mode() -> int:
    """The mode ``os.mkdir`` gives a new folder under the current umask."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o777 & ~mask


def remove_stale_partials(path: str | Path) -> list[Path]:
    """Remove the temporary folders that killed runs left for ``path`` (their process is gone).

    Returns:
        The folders removed.
    """
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for candidate in path.parent.glob(f".{glob_escape(path.name)}.*.partial"):
        pid_text = candidate.name[len(path.name) + 2 :].split(".", 1)[0]
        if candidate.is_dir() and pid_text.isdigit() and not _alive(int(pid_text)):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
