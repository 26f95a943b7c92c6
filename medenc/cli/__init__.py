"""medenc's command line: ``medenc --help`` lists the commands.

Each command module registers itself on :data:`medenc.cli._app.app` when imported here.
"""

from __future__ import annotations

from medenc.cli._app import app

# command modules: importing registers their commands (keep their top-level imports light)
from medenc.cli import keygen  # noqa: F401  isort: skip
from medenc.cli import train  # noqa: F401  isort: skip
from medenc.cli import reader_study  # noqa: F401  isort: skip
from medenc.cli import experiment  # noqa: F401  isort: skip
from medenc.cli import demo  # noqa: F401  isort: skip
from medenc.cli import synth  # noqa: F401  isort: skip
from medenc.cli import encrypt_study  # noqa: F401  isort: skip
from medenc.cli import calibrate  # noqa: F401  isort: skip
from medenc.cli import security  # noqa: F401  isort: skip

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()
