"""The Typer application object and what every command shares.

Commands live in sibling modules (one per command group) that import :data:`app` and register on it.
Heavy imports (torch, MONAI, pydicom) stay inside the command bodies so ``medenc --help`` is quick.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

from medenc.errors import MedencError


def _report(error: BaseException) -> NoReturn:
    typer.echo(f"medenc: error: {error}", err=True)
    raise typer.Exit(2)


class MedencGroup(TyperGroup):
    """Command group that turns :class:`MedencError` into one line on stderr and exit status 2."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except MedencError as error:
            _report(error)


app = typer.Typer(
    name="medenc",
    cls=MedencGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # tracebacks must not print local variables (patient data)
    help="Adversarial Data Encryption for brain MRI: shareable images that doctors can read and "
    "machine-learning models cannot learn from.",
)


def fail(message: str) -> NoReturn:
    """Print ``message`` as a one-line user error on stderr and exit with status 2."""
    _report(MedencError(message))


def warn(message: str) -> None:
    """Print a one-line warning on stderr."""
    print(f"medenc: warning: {message}", file=sys.stderr)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print medenc's version and exit.", is_eager=True),
) -> None:
    if version:
        from medenc import __version__

        typer.echo(__version__)
        raise typer.Exit(0)
