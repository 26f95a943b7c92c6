"""DICOMweb study URLs, credentials and the batch file's URL column (no PACS needed: tests/test_pacs.py has one)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from medenc.cli import app
from medenc.errors import InputError
from medenc.io.dicomweb import credentials, identity, is_dicomweb_url, parse_root_url, parse_study_url
from medenc.study.batch import read_batch


def test_a_study_url_is_split_into_root_and_uid() -> None:
    url = parse_study_url("https://pacs.example.org:8443/dicom-web/studies/1.2.840.1234.5/")
    assert url.root == "https://pacs.example.org:8443/dicom-web" and url.study_uid == "1.2.840.1234.5"
    assert str(url) == "https://pacs.example.org:8443/dicom-web/studies/1.2.840.1234.5"
    assert parse_study_url("http://h:80/studies/1.2").root == "http://h:80"
    assert is_dicomweb_url("http://h/x") and not is_dicomweb_url("/data/http://x") and not is_dicomweb_url("study")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://h/dicom-web/studies/1.2", "not an http"),
        ("http:///dicom-web/studies/1.2", "not an http"),
        ("http://h:8042/dicom-web/series/1.2", "not of the form"),
        ("http://h:8042/dicom-web/studies/1.2.x", "not of the form"),
        ("http://h:8042/dicom-web/studies/1.2?x=1", "no query"),
        ("http://h:99999/dicom-web/studies/1.2", "invalid port"),
        ("http://user:secret@h:8042/dicom-web/studies/1.2", "holds credentials"),
    ],
)
def test_bad_study_urls(url: str, why: str) -> None:
    with pytest.raises(InputError, match=why) as caught:
        parse_study_url(url)
    assert "secret" not in str(caught.value)


def test_credentials_come_from_the_environment_then_netrc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MEDENC_DICOMWEB_TOKEN", "MEDENC_DICOMWEB_USER", "MEDENC_DICOMWEB_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine pacs.example.org login alice password from-netrc\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("MEDENC_NETRC", str(netrc))
    source, auth = credentials("https://pacs.example.org/dicom-web")
    assert source == "netrc" and (auth.username, auth.password) == ("alice", "from-netrc")
    assert credentials("https://other.example.org/dicom-web") == ("none", None)
    monkeypatch.setenv("MEDENC_DICOMWEB_USER", "bob")
    with pytest.raises(InputError, match="set both"):
        credentials("https://pacs.example.org/dicom-web")
    monkeypatch.setenv("MEDENC_DICOMWEB_PASSWORD", "from-env")
    source, auth = credentials("https://pacs.example.org/dicom-web")
    assert source == "environment" and (auth.username, auth.password) == ("bob", "from-env")
    monkeypatch.setenv("MEDENC_DICOMWEB_TOKEN", "tok")
    source, auth = credentials("https://pacs.example.org/dicom-web")

    request = type("Request", (), {})()
    request.headers = {}
    assert source.startswith("environment (bearer") and auth(request).headers["Authorization"] == "Bearer tok"


def test_the_identity_of_a_pacs_study_is_its_instances() -> None:
    a = identity([("1.2", "1.2.3"), ("1.2", "1.2.4")])
    assert a == identity([("1.2", "1.2.4"), ("1.2", "1.2.3")])  # order does not matter
    assert a != identity([("1.2", "1.2.3")]) and len(a) == 64


def test_a_batch_file_keeps_study_urls(tmp_path: Path) -> None:
    batch = tmp_path / "b.csv"
    batch.write_text("case_id,label,image\na,x,http://h:8042/dicom-web/studies/1.2\nb,x,local/dicom\n")
    cases = read_batch(batch)
    assert cases[0].image == "http://h:8042/dicom-web/studies/1.2"
    assert cases[1].image == tmp_path / "local" / "dicom"


def test_the_cli_refuses_bad_urls_before_loading_anything(tmp_path: Path) -> None:
    runner = CliRunner()
    common = ["--model", tmp_path / "missing.pt", "--key", tmp_path / "missing.json", "--label", "a", "--out",
              tmp_path / "out", "--slices", "all"]
    result = runner.invoke(app, [str(a) for a in ["encrypt-study", "http://h/dicom-web/series/1.2", *common]])
    assert result.exit_code == 2 and "not of the form" in result.output
    result = runner.invoke(app, [str(a) for a in ["encrypt-study", "http://h/dicom-web/studies/1.2", *common,
                                                  "--to-pacs", "http://u:pw@h/dicom-web"]])
    assert result.exit_code == 2 and "holds credentials" in result.output and "pw" not in result.output
    assert parse_root_url("http://h:1/dicom-web/") == "http://h:1/dicom-web"
    assert not (tmp_path / "out").exists()
