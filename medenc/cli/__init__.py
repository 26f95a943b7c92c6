"""medenc's command line: ``medenc --help`` lists the commands.

Each command module builds its own Typer sub-app; they are composed here onto the root app of
:mod:`medenc.cli._app` (one-line errors, ``--version``). Their top-level imports stay light.
"""

from __future__ import annotations

from medenc.cli import calibrate, demo, encrypt_study, experiment, keygen, reader_study, security, synth, train
from medenc.cli._app import app

for _commands in (keygen, train, reader_study, experiment, demo, synth, encrypt_study, calibrate, security):
    app.add_typer(_commands.app)

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()
