"""``encrypt-study`` against a real Orthanc (DICOMweb): run by ``tests/test_pacs.py`` inside a private network.

These tests need the Orthanc that ``scripts/orthanc-netns.sh`` starts in a network namespace of its
own (``MEDENC_TEST_DICOMWEB_URL`` and the credentials in the environment); run on their own they skip.

A synthetic study is uploaded (STOW-RS of the files' own bytes), then ``medenc encrypt-study URL
--to-pacs ROOT`` retrieves it, encrypts it and stores the derived series back; QIDO-RS shows both series
in the one study, the derived one with new Series and SOP Instance UIDs, and WADO-RS returns the
original instances byte for byte as uploaded. Refusal (wrong password), an unknown study, a PACS that
does not answer, a partial study (a proxy drops one instance from the WADO-RS answer) and a refused
store each give one line naming the study, exit status 2, no local output and nothing new on the PACS.
Credentials from a netrc file work; a URL with credentials is refused. A batch mixes study URLs and a
local study and is resumed without downloading anything again.
"""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import subprocess
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from typer.testing import CliRunner

from medenc.cli import app
from tests.support_cluster import make_env

ROOT = os.environ.get("MEDENC_TEST_DICOMWEB_URL")
pytestmark = pytest.mark.skipif(
    ROOT is None, reason="runs inside tests/test_pacs.py's private network namespace with Orthanc (orthanc-netns.sh)"
)
runner = CliRunner()


def _auth() -> tuple[str, str]:
    return os.environ["MEDENC_DICOMWEB_USER"], os.environ["MEDENC_DICOMWEB_PASSWORD"]


def _multipart(payloads: list[bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [b"--%s\r\nContent-Type: application/dicom\r\n\r\n%s\r\n" % (boundary.encode(), p) for p in payloads]
    return b"".join(parts) + b"--%s--\r\n" % boundary.encode(), boundary


def _parts(response: requests.Response) -> list[bytes]:
    """The payloads of a multipart/related answer."""
    boundary = response.headers["Content-Type"].split("boundary=")[1].split(";")[0].strip('"').encode()
    chunks = response.content.split(b"--" + boundary)[1:-1]
    return [chunk.split(b"\r\n\r\n", 1)[1][:-2] for chunk in chunks]


def _upload(files: list[Path]) -> None:
    body, boundary = _multipart([f.read_bytes() for f in files])
    answer = requests.post(f"{ROOT}/studies", data=body, auth=_auth(), timeout=30, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json"})
    assert answer.status_code == 200, answer.text[:500]


def _qido(path: str) -> list[dict[str, Any]]:
    answer = requests.get(f"{ROOT}/{path}", auth=_auth(), timeout=30, headers={"Accept": "application/dicom+json"})
    if answer.status_code == 204 or not answer.content:
        return []
    assert answer.status_code == 200, answer.text[:300]
    return answer.json()


def _uid(item: dict[str, Any], tag: str) -> str:
    return item[tag]["Value"][0]


def _sop(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _series_of(study: str) -> set[str]:
    return {_uid(s, "0020000E") for s in _qido(f"studies/{study}/series")}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three synthetic studies uploaded to the Orthanc, two kept local only; a model and key."""
    data = make_env(tmp_path_factory.mktemp("pacs"), cases=5)
    studies = []
    for index, row in enumerate(data["rows"]):
        files = sorted((data["data"] / row["image"]).iterdir())
        uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        if index < 3:
            _upload(files)
        studies.append({"uid": uid, "files": files, "label": row["label"], "mask": data["data"] / row["mask"],
                        "url": f"{ROOT}/studies/{uid}", "local": data["data"] / row["image"]})
    data["studies"] = studies
    return data


def _encrypt(env: dict[str, Any], study: str | Path, out: Path, *extra: Any, case: int = 0) -> Any:
    chosen = env["studies"][case]
    args = ["encrypt-study", study, "--model", env["model"], "--key", env["key"], "--label", chosen["label"],
            "--mask", chosen["mask"], "--out", out, "--device", "cpu", *extra]
    return runner.invoke(app, [str(a) for a in args])


def test_this_runs_in_a_private_network_with_orthanc_in_it() -> None:
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout.splitlines()
    assert [line.split(":")[1].strip() for line in links] == ["lo"]
    own = os.readlink("/proc/self/ns/net")
    assert own != os.environ.get("MEDENC_OUTER_NETNS")
    assert os.readlink(f"/proc/{os.environ['MEDENC_TEST_ORTHANC_PID']}/ns/net") == own


def test_round_trip_encrypt_from_the_pacs_and_store_back(env: dict[str, Any], tmp_path: Path) -> None:
    study = env["studies"][0]
    before = _series_of(study["uid"])
    assert len(before) == 1
    result = _encrypt(env, study["url"], tmp_path / "out", "--to-pacs", ROOT)
    assert result.exit_code == 0, result.output
    print(f"\n$ medenc encrypt-study {study['url']} --to-pacs {ROOT} ...\n{result.output}")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    stored = report["pacs"]["stored"]
    assert report["request"]["study"] == study["url"] and report["input"]["path"] == study["url"]
    assert report["pacs"]["source"]["instances"] == len(study["files"])
    assert report["pacs"]["source"]["auth"] == "environment" and stored["auth"] == "environment"
    assert stored["study_uid"] == study["uid"] and stored["series_uid"] == report["output"]["series_uid"]
    # QIDO-RS: one study, the original series and the derived one
    after = _series_of(study["uid"])
    assert after == before | {stored["series_uid"]} and stored["series_uid"] not in before
    derived = {_uid(i, "00080018") for i in _qido(f"studies/{study['uid']}/series/{stored['series_uid']}/instances")}
    originals = {_sop(f) for f in study["files"]}
    local = {_sop(f) for f in (tmp_path / "out/series").iterdir()}
    assert derived == set(stored["sop_uids"]) == local and not derived & originals
    assert len(derived) == len(study["files"])
    # WADO-RS: the original instances are byte for byte what was uploaded
    (series,) = before
    for file in study["files"]:
        sop = pydicom.dcmread(file, stop_before_pixels=True).SOPInstanceUID
        answer = requests.get(f"{ROOT}/studies/{study['uid']}/series/{series}/instances/{sop}", auth=_auth(),
                              timeout=30, headers={"Accept": 'multipart/related; type="application/dicom"; '
                                                             "transfer-syntax=*"})
        assert _parts(answer) == [file.read_bytes()]
    # the password is nowhere in what medenc printed or wrote
    password = os.environ["MEDENC_DICOMWEB_PASSWORD"]
    assert password not in result.output
    assert all(password not in p.read_text(errors="replace") for p in (tmp_path / "out").rglob("*.json"))


def test_credentials_from_a_netrc_file(env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medenc.io.dicomweb import connect, list_instances

    user, password = _auth()
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {user} password {password}\n")
    netrc.chmod(0o600)
    monkeypatch.delenv("MEDENC_DICOMWEB_USER")
    monkeypatch.delenv("MEDENC_DICOMWEB_PASSWORD")
    monkeypatch.setenv("MEDENC_NETRC", str(netrc))
    pacs = connect(ROOT)
    assert pacs.auth_source == "netrc"
    assert len(list_instances(pacs, env["studies"][1]["uid"])) == len(env["studies"][1]["files"])
    monkeypatch.setenv("MEDENC_NETRC", str(tmp_path / "none"))
    result = _encrypt(env, env["studies"][1]["url"], tmp_path / "out", case=1)
    assert result.exit_code == 2 and "HTTP 401" in result.output and not (tmp_path / "out").exists()


def test_credentials_in_the_url_are_refused(env: dict[str, Any], tmp_path: Path) -> None:
    user, password = _auth()
    url = env["studies"][0]["url"].replace("http://", f"http://{user}:{password}@")
    result = _encrypt(env, url, tmp_path / "out")
    assert result.exit_code == 2 and "holds credentials" in result.output
    assert password not in result.output and not (tmp_path / "out").exists()


def _one_line_error(result: Any, study: str, words: str) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    error = [line for line in lines if line.startswith("medenc: error:")]
    assert len(error) == 1 and study in error[0] and words in error[0], result.output
    return error[0]


def test_a_refusal_names_the_study_and_stores_nothing(
    env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = env["studies"][1]
    before = _series_of(study["uid"])
    monkeypatch.setenv("MEDENC_DICOMWEB_PASSWORD", "wrong")
    result = _encrypt(env, study["url"], tmp_path / "out", "--to-pacs", ROOT, case=1)
    _one_line_error(result, study["uid"], "refused")
    assert "HTTP 401" in result.output
    monkeypatch.undo()
    assert not (tmp_path / "out").exists() and _series_of(study["uid"]) == before


def test_an_unknown_study(env: dict[str, Any], tmp_path: Path) -> None:
    result = _encrypt(env, f"{ROOT}/studies/1.2.3.4.5.6", tmp_path / "out")
    _one_line_error(result, "1.2.3.4.5.6", "holds no instance")
    assert not (tmp_path / "out").exists()


class _Silent:
    """A server that accepts connections and never answers (a hung PACS)."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.held.append(connection)

    def close(self) -> None:
        for connection in self.held:
            connection.close()
        self.socket.close()


def test_a_pacs_that_does_not_answer_times_out(env: dict[str, Any], tmp_path: Path) -> None:
    silent = _Silent()
    try:
        url = f"http://127.0.0.1:{silent.port}/dicom-web/studies/{env['studies'][0]['uid']}"
        result = _encrypt(env, url, tmp_path / "out", "--pacs-timeout", "1")
    finally:
        silent.close()
    _one_line_error(result, env["studies"][0]["uid"], "did not answer within 1 s")
    assert not (tmp_path / "out").exists()


class _Proxy:
    """A DICOMweb proxy to the Orthanc: counts requests; may drop an instance from WADO-RS or refuse stores."""

    def __init__(self, *, drop_one: bool = False, refuse_store: bool = False) -> None:
        proxy = self
        self.requests: list[tuple[str, str]] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self, method: str) -> None:
                proxy.requests.append((method, self.path))
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0)) if method == "POST" else None
                if method == "POST" and refuse_store:
                    self.send_response(403)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "authorization",
                                                                                  "content-type")}
                answer = requests.request(method, ROOT.rsplit("/dicom-web", 1)[0] + self.path, data=body,
                                          headers=headers, timeout=30)
                content = answer.content
                kind = answer.headers.get("Content-Type", "")
                if drop_one and method == "GET" and kind.startswith("multipart/related"):
                    boundary = b"--" + kind.split("boundary=")[1].split(";")[0].strip('"').encode()
                    chunks = content.split(boundary)
                    if len(chunks) > 3:  # preamble, parts..., epilogue: drop the last part
                        content = boundary.join(chunks[:-2] + chunks[-1:])
                self.send_response(answer.status_code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def do_GET(self) -> None:
                self._forward("GET")

            def do_POST(self) -> None:
                self._forward("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.root = f"http://127.0.0.1:{self.server.server_address[1]}/dicom-web"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_partial_study_is_refused(env: dict[str, Any], tmp_path: Path) -> None:
    study = env["studies"][2]
    before = _series_of(study["uid"])
    proxy = _Proxy(drop_one=True)
    try:
        result = _encrypt(env, f"{proxy.root}/studies/{study['uid']}", tmp_path / "out", "--to-pacs", ROOT, case=2)
    finally:
        proxy.close()
    error = _one_line_error(result, study["uid"], "partial study")
    n = len(study["files"])
    assert f"returned {n - 1} instance(s), its listing holds {n}" in error
    assert not (tmp_path / "out").exists() and _series_of(study["uid"]) == before


def test_a_refused_store_leaves_no_local_output(env: dict[str, Any], tmp_path: Path) -> None:
    study = env["studies"][2]
    before = _series_of(study["uid"])
    proxy = _Proxy(refuse_store=True)
    try:
        result = _encrypt(env, study["url"], tmp_path / "out", "--to-pacs", proxy.root, case=2)
    finally:
        proxy.close()
    _one_line_error(result, study["uid"], "refused storing the derived series (STOW-RS) (HTTP 403")
    assert [m for m, _ in proxy.requests] == ["POST"]
    assert not (tmp_path / "out").exists() and _series_of(study["uid"]) == before


def _downloads(proxy: _Proxy) -> list[str]:
    """The WADO-RS retrieves (pixel data) the proxy passed on: GET .../series/<uid> itself."""
    return [path for method, path in proxy.requests if method == "GET" and re.search(r"/series/[0-9.]+$", path)]


def test_a_batch_of_study_urls_and_a_local_study_resumes_without_downloading(
    env: dict[str, Any], tmp_path: Path
) -> None:
    proxy = _Proxy()
    batch = tmp_path / "batch.csv"
    chosen = [env["studies"][1], env["studies"][2], env["studies"][3]]
    with batch.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case_id", "label", "image", "mask"])
        for index, study in enumerate(chosen):
            image = f"{proxy.root}/studies/{study['uid']}" if index < 2 else study["local"]
            writer.writerow([f"case{index}", study["label"], image, study["mask"]])
    args = ["encrypt-study", "--batch", batch, "--model", env["model"], "--key", env["key"], "--out",
            tmp_path / "out", "--device", "cpu", "--to-pacs", ROOT, "--allow-external-paths"]  # masks elsewhere
    try:
        first = runner.invoke(app, [str(a) for a in args])
        assert first.exit_code == 0, first.output
        assert "3 encrypted, 0 skipped" in first.output
        assert len(_downloads(proxy)) == 2  # one WADO-RS series retrieve per URL case
        proxy.requests.clear()
        again = runner.invoke(app, [str(a) for a in args])
        assert again.exit_code == 0 and "0 encrypted, 3 skipped" in again.output, again.output
        assert proxy.requests and not _downloads(proxy)  # QIDO-RS listings and metadata only, no pixel data
    finally:
        proxy.close()
    for index, study in enumerate(chosen):
        report = json.loads((tmp_path / "out" / f"case{index}" / "report.json").read_text())
        stored = report["pacs"]["stored"]
        assert stored["study_uid"] == study["uid"] and stored["series_uid"] in _series_of(study["uid"])


def test_a_pacs_that_cannot_be_reached(env: dict[str, Any], tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    result = _encrypt(env, f"http://127.0.0.1:{port}/dicom-web/studies/{env['studies'][0]['uid']}", tmp_path / "out")
    _one_line_error(result, env["studies"][0]["uid"], "cannot reach the PACS")
    assert "Connection refused" in result.output and not (tmp_path / "out").exists()


def test_study_urls_on_ray_workers(env: dict[str, Any], tmp_path: Path) -> None:
    """Workers retrieve from the PACS too (their credentials come from the environment they inherit)."""
    from medenc.study.batch import encrypt_batch

    batch = tmp_path / "batch.csv"
    rows = [f"case{i},{s['label']},{s['url']},{s['mask']}" for i, s in enumerate(env["studies"][:2])]
    batch.write_text("case_id,label,image,mask\n" + "\n".join(rows) + "\n")
    summary = encrypt_batch(batch, model=env["model"], key=env["key"], out=tmp_path / "out", device="cpu", workers=2,
                            allow_external_paths=True)  # the masks lie elsewhere
    assert summary["engine"]["engine"] == "ray" and summary["encrypted"] == 2, summary["results"]
    for index, study in enumerate(env["studies"][:2]):
        report = json.loads((tmp_path / "out" / f"case{index}" / "report.json").read_text())
        assert report["request"]["study"] == study["url"] and report["pacs"]["stored"] is None
