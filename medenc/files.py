"""What every command that reads inputs and writes outputs shares: the output check, hashes, safe names.

:func:`check_output` is the one place that decides whether an output may be written: it refuses an
output that is, contains or lies inside any input (so ``--force`` can never delete an input), and an
existing output without ``force``. :func:`sha256_files` is the one file hasher (input checksums in
reports, resumable batches); :func:`check_name` keeps ids that become file names to one path component.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from medenc.errors import InputError, OutputExistsError

_BLOCK = 1 << 20


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def check_output(
    out: str | Path,
    *,
    inputs: Iterable[str | Path | None] = (),
    force: bool = False,
    what: str = "output",
) -> Path:
    """Refuse an output that would touch an input, or that exists when ``force`` is False.

    Args:
        out: the file or folder about to be written (or replaced).
        inputs: every file or folder the command reads (studies, manifests and their folders, model, key,
            mask); ``None`` entries are skipped.
        force: an existing ``out`` may be replaced.
        what: how the message names ``out`` (e.g. ``"output folder"``).

    Returns:
        ``out`` as a :class:`Path`.

    Raises:
        InputError: ``out`` is an input, holds one, or lies inside an input folder.
        OutputExistsError: ``out`` exists (a file, or a non-empty folder) and ``force`` is False.
    """
    out = Path(out)
    target = _resolved(out)
    given = [(g, _resolved(g)) for g in inputs if g is not None and Path(g).exists()]  # missing: nothing to protect
    for name, source in given:
        if target == source:
            raise InputError(f"the {what} is the input {name}; writing it would destroy the input", out,
                             tip="write somewhere else")
    for name, source in given:
        if target in source.parents:
            raise InputError(f"the {what} holds the input {name}; replacing it would delete the input", out,
                             tip="write somewhere else")
    for name, source in given:
        if source in target.parents and source.is_dir():
            raise InputError(f"the {what} lies inside the input folder {name}", out,
                             tip="write outside the input folders")
    if not force and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(out)
    return out


def manifest_inputs(path: str | Path) -> list[Path]:
    """A manifest and, if it exists, the folder it lies in (where its relative paths point)."""
    path = Path(path)
    return [path, path.parent] if path.is_file() else [path]


def sha256_files(paths: Iterable[str | Path], root: str | Path | None = None) -> str:
    """SHA-256 over the files' names (relative to ``root``, else the base name) and contents, in order."""
    digest = hashlib.sha256()
    for given in paths:
        path = Path(given)
        digest.update(str(path.relative_to(root) if root else path.name).encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(_BLOCK), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def sha256_file(path: str | Path) -> str:
    """SHA-256 of one file's contents (hex)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def files_under(path: str | Path) -> list[Path]:
    """The files of an input: every file under a folder (sorted), or the file itself."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return [path] if path.is_file() else []


def check_name(name: str, source: str | Path | None = None, *, what: str = "case id") -> str:
    """Check that ``name`` can be used as one file or folder name: one path component, no traversal.

    Raises:
        InputError: empty, ``.``/``..``, a separator, a NUL or another control character.
    """
    bad = (
        not name
        or name in (".", "..")
        or any(sep in name for sep in ("/", "\\"))
        or any(ord(c) < 32 for c in name)
    )
    if bad:
        raise InputError(f"{what} {name!r} cannot be used as a file name (one path component, no / or ..)", source,
                         tip="use letters, digits, '-', '_' and '.'")
    return name


def safe_name(name: str) -> str:
    """A file-name-safe version of an id: characters other than letters, digits, ``-_.`` become ``_``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return safe if safe.strip(".") else f"_{safe}"


def inside(path: str | Path, root: str | Path) -> bool:
    """Whether ``path`` resolves to ``root`` or somewhere below it (links followed)."""
    target, base = _resolved(path), _resolved(root)
    return target == base or base in target.parents
