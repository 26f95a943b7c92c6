"""The root Typer application: one-line errors (exit 2) for :class:`MedencError`, ``--version``.

Each command module builds its own sub-app; :mod:`medenc.cli` composes them with ``add_typer``.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from medenc.cli._common import report_error
from medenc.errors import MedencError


class MedencGroup(TyperGroup):
    """Command group that turns :class:`MedencError` into one line on stderr and exit status 2."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except MedencError as error:
            report_error(error)


app = typer.Typer(
    name="medenc",
    cls=MedencGroup,
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion, as Typer offers them
    pretty_exceptions_show_locals=False,  # tracebacks must not print local variables (patient data)
    help="Adversarial Data Encryption for brain MRI: shareable images that doctors can read and "
    "machine-learning models cannot learn from.",
)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="Print medenc's version and exit.", is_eager=True),
) -> None:
    if not version and ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(2)
    if version:
        from medenc import __version__

        typer.echo(__version__)
        raise typer.Exit(0)
