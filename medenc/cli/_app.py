"""The root Typer application: one-line errors (exit 2) for :class:`MedencError`, ``--version``.

Each command module builds its own sub-app; :mod:`medenc.cli` composes them with ``add_typer``.
Path arguments that Typer checks itself (``exists=True``) report a bad path in medenc's own words, one
line like every other path error (:func:`medenc.cli._common.path_problem`), not in Typer's error box.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import typer
from typer.core import TyperGroup

from medenc.cli._common import path_problem, report_error
from medenc.errors import InputError, MedencError

#: how Typer words a failed ``exists=True`` check: "file '/x/y.csv' does not exist." (kind, quoted path, problem)
_TYPER_PATH_ERROR = re.compile(
    r"^(?P<kind>file|dir|path) (?P<value>'.*'|\".*\") (?:does not exist|is a file|is a directory|is not readable)\.$",
    re.DOTALL,
)


def typer_path_error(error: typer.BadParameter) -> InputError | None:
    """Typer's own error for a path parameter (``exists=True``) as medenc's one-line :class:`InputError`, or None."""
    match = _TYPER_PATH_ERROR.match(str(error.message))
    if match is None or error.param is None:
        return None
    value = ast.literal_eval(match["value"])
    opts = [o for o in getattr(error.param, "opts", []) if o.startswith("-")]
    what = max(opts, key=len) if opts else str(error.param.name or "path").upper()
    kind = {"file": "file", "dir": "folder"}.get(match["kind"])
    problem = path_problem(value, what, kind=kind)
    return None if problem is None else InputError(problem, path=value)


class MedencGroup(TyperGroup):
    """Command group that turns :class:`MedencError` into one line on stderr and exit status 2."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except MedencError as error:
            report_error(error)
        except typer.BadParameter as error:  # Typer checked a path itself: say it as every command does
            converted = typer_path_error(error)
            if converted is None:
                raise
            report_error(converted)


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
