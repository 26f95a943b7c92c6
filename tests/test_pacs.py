"""The PACS round trip against a real Orthanc, which runs inside a private network namespace.

Orthanc listens on every interface, so it never runs in this process's network: this test re-executes
pytest on ``tests/test_pacs_inside.py`` through ``scripts/orthanc-netns.sh``, which makes a network
namespace holding only its own loopback, starts Orthanc there from a configuration of its own (in a
temporary folder, random password) and stops it by its PID when the inner pytest ends. The test asserts
the inner run passed every test (none skipped) and that Orthanc's process is gone afterwards.
Skipped, with the reason, without unshare / setpriv / ip or without Debian orthanc + orthanc-dicomweb
(``scripts/install-orthanc.sh``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "orthanc-netns.sh"
ORTHANC = Path("/usr/sbin/Orthanc")
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def missing() -> str | None:
    """Why the PACS test cannot run here, or ``None``."""
    for tool in ("unshare", "setpriv", "ip", "curl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not ORTHANC.is_file() or not PLUGIN.is_file():
        return "Debian orthanc + orthanc-dicomweb are not installed (scripts/install-orthanc.sh)"
    for flags in (["-n"], ["-r", "-n"]):
        if subprocess.run(["unshare", *flags, "true"], capture_output=True).returncode == 0:
            return None
    return "cannot create a private network namespace here (unshare -n and unshare -rn both fail)"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


@pytest.mark.skipif(missing() is not None, reason=str(missing()))
def test_orthanc_round_trip_inside_a_private_network(tmp_path: Path) -> None:
    pidfile = tmp_path / "orthanc.pid"
    short = Path(tempfile.mkdtemp(prefix="mp", dir="/tmp"))  # Orthanc's folder; Ray's socket paths stay short
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "MEDENC_ORTHANC_PIDFILE": str(pidfile),
        "MEDENC_OUTER_NETNS": os.readlink("/proc/self/ns/net"),
        "TMPDIR": str(short),
    }
    for name in ("MEDENC_DICOMWEB_USER", "MEDENC_DICOMWEB_PASSWORD", "MEDENC_DICOMWEB_TOKEN", "MEDENC_NETRC"):
        env.pop(name, None)
    command = [str(SCRIPT), sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA",
               "tests/test_pacs_inside.py"]
    try:
        run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    finally:
        pid = int(pidfile.read_text()) if pidfile.is_file() else None
        left_running = pid is not None and _alive(pid)
        if left_running:
            os.kill(pid, signal.SIGKILL)  # type: ignore[arg-type]  # Orthanc of this test, by its PID
        left_behind = list(short.glob("medenc-orthanc.*"))
        shutil.rmtree(short, ignore_errors=True)
    output = run.stdout + run.stderr
    assert pid is not None, output[-3000:]
    assert not left_running, "Orthanc was still running after the inner tests"
    assert run.returncode == 0, output[-6000:]
    summary = output.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 12, summary
    assert "skipped" not in summary and "failed" not in summary, summary
    assert not left_behind, "Orthanc's temporary folder was left behind"
