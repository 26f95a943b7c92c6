"""Exceptions a user can act on.

Every error that is the user's to fix (a bad file, a wrong option, a key that does not fit) is a
:class:`MedencError`. The CLI prints such errors as one line on stderr and exits with status 2; other
exceptions are bugs and keep their traceback.
"""

from __future__ import annotations

from pathlib import Path


class MedencError(Exception):
    """Base class of errors caused by the user's input, reported as one line by the CLI."""


class InputError(MedencError, ValueError):
    """A file or argument is not what medenc expected.

    Args:
        problem: what is wrong, in plain words (what was expected, what arrived).
        path: the file concerned, if any; it leads the message.
        tip: an optional hint how to fix it.
    """

    def __init__(self, problem: str, path: str | Path | None = None, tip: str | None = None) -> None:
        self.problem = problem
        self.path = None if path is None else Path(path)
        self.tip = tip
        message = problem if path is None else f"{path}: {problem}"
        if tip:
            message = f"{message} (tip: {tip})"
        super().__init__(message)


class KeyFileError(InputError):
    """An encryption key file or key object is invalid."""


class OutputExistsError(MedencError, FileExistsError):
    """An output already exists and overwriting was not asked for."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        super().__init__(f"{path}: output already exists (tip: pass --force / force=True to replace it)")
