"""Ray batches (``--workers N``): run by ``tests/test_parallel.py`` inside a private network namespace.

On their own these tests skip (Ray must not probe the outside network from the test machine).

- the same batch through the serial path and through 2 Ray workers gives the same outputs: every
  case's report.json equal once times, dates, versions and the new UIDs are left out, and the pixel
  data of every written file equal (the serial run uses the workers' number of torch threads);
- both workers took cases; each loaded the model once;
- a finished batch resumes with workers: nothing is redone; a removed case is redone alone;
- the CLI runs ``--batch --workers 2`` and says so.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import torch
from typer.testing import CliRunner

from medenc.cli import app
from medenc.study.batch import encrypt_batch
from tests.support_cluster import comparable, make_env

pytestmark = pytest.mark.skipif(
    os.environ.get("MEDENC_PARALLEL_INSIDE") != "1",
    reason="runs inside tests/test_parallel.py's private network namespace (Ray probes the outside network)",
)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data = make_env(tmp_path_factory.mktemp("parallel"), cases=5)
    return data


def _pixels(folder: Path) -> dict[str, np.ndarray]:
    """Pixel data of a written series by the source instance each file was derived from."""
    found = {}
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        found[str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID)] = ds.pixel_array
    return found


def test_this_runs_in_a_private_network() -> None:
    assert os.readlink("/proc/self/ns/net") != os.environ.get("MEDENC_OUTER_NETNS")


def test_serial_and_ray_give_the_same_outputs(env: dict[str, Any], tmp_path: Path) -> None:
    threads = max(1, (os.cpu_count() or 1) // 2)  # what each of 2 local CPU workers uses
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        serial = encrypt_batch(env["manifest"], model=env["model"], key=env["key"], out=tmp_path / "serial",
                               device="cpu", slices="tumor")
    finally:
        torch.set_num_threads(before)
    parallel = encrypt_batch(env["manifest"], model=env["model"], key=env["key"], out=tmp_path / "ray", device="cpu",
                             slices="tumor", workers=2)
    assert serial["engine"]["engine"] == "serial"
    assert parallel["engine"]["engine"] == "ray" and parallel["engine"]["workers"] == 2
    assert parallel["engine"]["threads_per_worker"] == threads
    assert serial["encrypted"] == parallel["encrypted"] == 5 and parallel["failed"] == 0
    assert len({r["worker_pid"] for r in parallel["results"]}) == 2  # both workers took cases
    assert os.getpid() not in {r["worker_pid"] for r in parallel["results"]}
    for row in env["rows"]:
        a = json.loads((tmp_path / "serial" / row["case_id"] / "report.json").read_text())
        b = json.loads((tmp_path / "ray" / row["case_id"] / "report.json").read_text())
        assert comparable(a) == comparable(b)
        assert a["output"]["series_uid"] != b["output"]["series_uid"]  # new UIDs each run, the rest equal
        pa = _pixels(tmp_path / "serial" / row["case_id"] / "series")
        pb = _pixels(tmp_path / "ray" / row["case_id"] / "series")
        assert pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa)
    changed = [r for r in a["per_slice"] if r["psnr_db"] is not None]
    assert changed, "the encryption changed nothing"


def test_a_finished_batch_resumes_with_workers(env: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = encrypt_batch(env["manifest"], model=env["model"], key=env["key"], out=out, device="cpu", workers=2)
    assert first["encrypted"] == 5
    shutil.rmtree(out / env["rows"][1]["case_id"])
    again = encrypt_batch(env["manifest"], model=env["model"], key=env["key"], out=out, device="cpu", workers=2)
    statuses = {r["case_id"]: r["status"] for r in again["results"]}
    assert statuses == {row["case_id"]: "encrypted" if i == 1 else "skipped" for i, row in enumerate(env["rows"])}


def test_the_cli_runs_a_batch_on_ray_workers(env: dict[str, Any], tmp_path: Path) -> None:
    result = CliRunner().invoke(app, [str(a) for a in [
        "encrypt-study", "--batch", env["manifest"], "--model", env["model"], "--key", env["key"],
        "--out", tmp_path / "out", "--device", "cpu", "--workers", "2"]])
    assert result.exit_code == 0, result.output
    assert "5 encrypted, 0 skipped" in result.output and "on 2 Ray workers" in result.output
    summary = json.loads((tmp_path / "out" / "batch-summary.json").read_text())
    assert summary["engine"]["engine"] == "ray" and summary["engine"]["address"] == "local"


def test_a_worker_that_dies_fails_its_case_only(env: dict[str, Any], tmp_path: Path) -> None:
    """A worker killed mid-batch (SIGKILL to its process) fails one case; a new worker takes the rest."""
    import signal
    import subprocess

    killed: list[int] = []

    def kill_one_worker(case_id: str, status: str, error: str | None) -> None:
        if killed:
            return
        found = subprocess.run(["pgrep", "-f", "ray::CaseWorker"], capture_output=True, text=True).stdout.split()
        if found:
            killed.append(int(found[0]))
            os.kill(killed[0], signal.SIGKILL)  # a worker process of this test's own Ray instance

    out = tmp_path / "out"
    summary = encrypt_batch(env["manifest"], model=env["model"], key=env["key"], out=out, device="cpu", workers=2,
                            on_case=kill_one_worker)
    assert killed
    failed = [r for r in summary["results"] if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["error"].startswith("worker died"), summary["results"]
    assert summary["encrypted"] == 4 and not (out / failed[0]["case_id"]).exists()
    again = encrypt_batch(env["manifest"], model=env["model"], key=env["key"], out=out, device="cpu", workers=2)
    assert again["encrypted"] == 1 and again["skipped"] == 4
