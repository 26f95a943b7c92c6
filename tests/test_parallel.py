"""``encrypt-study --batch --workers N`` on Ray: the tests run inside a private network namespace.

Ray probes an outside address to find its own IP, and its local cluster listens on ports: so this test
re-executes pytest on ``tests/test_parallel_inside.py`` through ``scripts/netns-run.sh`` (a network
namespace with only its own loopback) and asserts the inner run passed every test, none skipped.
Skipped, with the reason, without unshare / ip or without the ray package.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def missing() -> str | None:
    """Why the Ray tests cannot run here, or ``None``."""
    if importlib.util.find_spec("ray") is None:
        return "the ray package is not installed"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    for flags in (["-n"], ["-r", "-n"]):
        if subprocess.run(["unshare", *flags, "true"], capture_output=True).returncode == 0:
            return None
    return "cannot create a private network namespace here (unshare -n and unshare -rn both fail)"


@pytest.mark.skipif(missing() is not None, reason=str(missing()))
def test_ray_batches_inside_a_private_network() -> None:
    short = Path(tempfile.mkdtemp(prefix="mr", dir="/tmp"))  # Ray's socket paths must stay short
    env = {**os.environ, "PYTHONPATH": str(REPO), "MEDENC_PARALLEL_INSIDE": "1",
           "MEDENC_OUTER_NETNS": os.readlink("/proc/self/ns/net"), "TMPDIR": str(short)}
    command = [str(REPO / "scripts" / "netns-run.sh"), sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "-rA", "tests/test_parallel_inside.py"]
    try:
        run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        leftovers = subprocess.run(["pgrep", "-f", str(short)], capture_output=True, text=True).stdout.split()
    finally:
        shutil.rmtree(short, ignore_errors=True)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    summary = output.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 5, summary
    assert "skipped" not in summary and "failed" not in summary, summary
    assert not leftovers, f"Ray processes left running: {leftovers}"
