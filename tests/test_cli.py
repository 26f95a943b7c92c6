"""The CLI behaves like its peers: --version, results on stdout, progress and logs on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from medenc import __version__
from medenc.cli import app

MEDENC = [sys.executable, "-c", "from medenc.cli import main; main()"]


def test_version_prints_and_exits_0() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == __version__


def test_no_command_shows_help_and_exits_2() -> None:
    result = CliRunner().invoke(app, [])
    assert result.exit_code == 2 and "encrypt-study" in result.output


def test_progress_goes_to_stderr_and_results_to_stdout(tmp_path: Path) -> None:
    """With a terminal on stderr (FORCE_COLOR), the bar is drawn there; stdout holds only the result line."""
    env = {**os.environ, "FORCE_COLOR": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = subprocess.run(
        [*MEDENC, "synth", str(tmp_path / "s"), "--cases", "5", "--size", "32"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    out = tmp_path / "s"
    assert run.stdout.splitlines() == [f"wrote 5 SYNTHETIC cases to {out} (manifest: {out / 'manifest.csv'})"]
    assert "synth" in run.stderr and "5/5" in run.stderr  # the progress bar, with its real total


def test_shell_completion_is_offered() -> None:
    result = CliRunner().invoke(app, ["--show-completion", "bash"])
    assert result.exit_code == 0 and "_medenc_completion" in result.output
