"""Atomic file and folder writes: a temporary sibling, then one rename.

An interrupted run therefore never leaves a half-written output under the final name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from medenc.errors import OutputExistsError


def atomic_write_bytes(path: str | Path, data: bytes, *, mode: int = 0o644, force: bool = True) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    Args:
        path: destination file.
        data: the bytes to write.
        mode: permission bits of the new file (e.g. ``0o600`` for secrets); set before any byte is
            written, so the content is never readable with wider permissions.
        force: replace an existing file; if False an existing file raises :class:`OutputExistsError`.

    Returns:
        The destination path.
    """
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(path)
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


def atomic_write_text(path: str | Path, text: str, *, mode: int = 0o644, force: bool = True) -> Path:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"), mode=mode, force=force)


@contextlib.contextmanager
def atomic_directory(path: str | Path, *, force: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name and rename it to ``path`` when the block succeeds.

    On an exception the temporary folder is removed and ``path`` is left as it was.

    Args:
        path: the final folder.
        force: replace an existing ``path``; otherwise an existing non-empty folder raises
            :class:`OutputExistsError`.

    Yields:
        The temporary folder to fill.
    """
    path = Path(path)
    if path.exists() and not force and (not path.is_dir() or any(path.iterdir())):
        raise OutputExistsError(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
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
