"""DICOMweb transfers with a PACS: find (QIDO-RS), retrieve (WADO-RS) and store (STOW-RS) a study's instances.

A study is named by a URL ``http(s)://HOST:PORT/<dicomweb-root>/studies/<StudyInstanceUID>``; the
derived series is stored under a DICOMweb root URL. The transfers go through ``dicomweb-client``.

Credentials never appear on a command line, in a URL or in a report. They come, in this order, from
the environment (``MEDENC_DICOMWEB_TOKEN``: a bearer token; or ``MEDENC_DICOMWEB_USER`` with
``MEDENC_DICOMWEB_PASSWORD``: HTTP basic) or from a netrc-style file (``MEDENC_NETRC``, default
``~/.netrc``; the ``machine`` entry of the PACS host). A URL holding ``user:password@`` is refused.

Every failure is an :class:`~medenc.errors.InputError` of one line naming the study: the PACS refuses
(HTTP 401/403, another error status), does not answer within the timeout, cannot be reached, does not
know the study, or returns fewer (or other) instances than its own QIDO-RS listing holds (a partial
study). Nothing is written locally by this module except the retrieved files into a caller's folder.
"""

from __future__ import annotations

import hashlib
import netrc
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from medenc.errors import InputError

#: environment variables holding the credentials (never command-line options)
TOKEN_ENV, USER_ENV, PASSWORD_ENV, NETRC_ENV = (
    "MEDENC_DICOMWEB_TOKEN",
    "MEDENC_DICOMWEB_USER",
    "MEDENC_DICOMWEB_PASSWORD",
    "MEDENC_NETRC",
)
DEFAULT_TIMEOUT = 60.0
_STUDY_PATH = re.compile(r"^(?P<root>.*)/studies/(?P<uid>[0-9.]+)/?$")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_SERIES_UID, _SOP_UID = "0020000E", "00080018"
T = TypeVar("T")


@dataclass(frozen=True)
class StudyURL:
    """A DICOMweb study: the service root and the StudyInstanceUID."""

    root: str
    study_uid: str

    def __str__(self) -> str:
        return f"{self.root}/studies/{self.study_uid}"


def is_dicomweb_url(text: str | Path) -> bool:
    """Whether ``text`` is an http(s) URL (a DICOMweb study) rather than a local path."""
    return str(text).startswith(("http://", "https://"))


def parse_root_url(text: str, what: str = "DICOMweb root") -> str:
    """``http(s)://HOST[:PORT]/<path>`` checked, without a trailing slash.

    Raises:
        InputError: not an http(s) URL, no host, credentials in it, or a query or fragment.
    """
    parts = urlsplit(str(text).strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"{what} {text!r} is not an http(s)://HOST:PORT/... URL")
    if parts.username is not None or parts.password is not None:
        raise InputError(
            f"{what} URL holds credentials (user:password@); they must not be on the command line",
            tip=f"set {USER_ENV} and {PASSWORD_ENV} (or {TOKEN_ENV}) in the environment, or use a netrc file",
        )
    if parts.query or parts.fragment:
        raise InputError(f"{what} URL {text!r} must have no query (?...) or fragment (#...)")
    try:
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        raise InputError(f"{what} URL {text!r} has an invalid port") from None
    return f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")


def parse_study_url(text: str | Path) -> StudyURL:
    """A study URL ``http(s)://HOST:PORT/<root>/studies/<StudyInstanceUID>`` split into root and UID.

    Raises:
        InputError: not such a URL (with the expected form).
    """
    url = parse_root_url(str(text), what="study")
    match = _STUDY_PATH.match(url)
    if match is None or not _UID.match(match["uid"]):
        raise InputError(
            f"study URL {text!r} is not of the form http(s)://HOST:PORT/<dicomweb-root>/studies/<StudyInstanceUID>"
        )
    return StudyURL(root=match["root"], study_uid=match["uid"])


def _netrc_path() -> Path:
    return Path(os.environ.get(NETRC_ENV) or Path.home() / ".netrc")


def credentials(root: str) -> tuple[str, Any]:
    """Where the credentials for ``root`` come from (``environment``, ``netrc``, ``none``) and a requests auth.

    Raises:
        InputError: only a user or only a password in the environment; an unreadable netrc file.
    """
    import requests

    token, user, password = (os.environ.get(k) for k in (TOKEN_ENV, USER_ENV, PASSWORD_ENV))
    if token:
        return "environment (bearer token)", _Bearer(token)
    if user or password:
        if not (user and password):
            raise InputError(f"set both {USER_ENV} and {PASSWORD_ENV} (only one of them is set)")
        return "environment", requests.auth.HTTPBasicAuth(user, password)
    path = _netrc_path()
    if path.is_file():
        try:
            entry = netrc.netrc(str(path)).authenticators(urlsplit(root).hostname or "")
        except (netrc.NetrcParseError, OSError) as error:
            raise InputError(f"cannot read the netrc file ({type(error).__name__})", path) from None
        if entry is not None and entry[0] and entry[2]:
            return "netrc", requests.auth.HTTPBasicAuth(entry[0], entry[2])
    return "none", None


class _Bearer:
    """requests auth adding ``Authorization: Bearer <token>``."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: Any) -> Any:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request


@dataclass
class Pacs:
    """A DICOMweb service and how medenc talks to it (no credentials are kept in reports)."""

    root: str
    client: Any
    auth_source: str
    timeout: float


def connect(root: str, *, timeout: float = DEFAULT_TIMEOUT) -> Pacs:
    """A client for the DICOMweb root ``root`` with the credentials of :func:`credentials`.

    Args:
        root: the DICOMweb root URL.
        timeout: seconds to wait for a connection and for each answer.

    Raises:
        InputError: a bad URL, bad credentials settings, or a timeout that is not positive.
    """
    import requests
    from dicomweb_client.api import DICOMwebClient

    root = parse_root_url(root)
    if not timeout > 0:
        raise InputError(f"the PACS timeout must be > 0 seconds, got {timeout}")
    source, auth = credentials(root)
    session = requests.Session()
    session.auth = auth
    client = DICOMwebClient(url=root, session=session, timeout=timeout)
    client.set_http_retry_params(retry=False)  # a refusal is reported at once, not retried for minutes
    return Pacs(root=root, client=client, auth_source=source, timeout=timeout)


def call(pacs: Pacs, study: str, action: str, function: Callable[[], T]) -> T:
    """Run one DICOMweb request; every failure becomes a one-line :class:`InputError` naming the study."""
    import requests

    where = f"DICOMweb study {pacs.root}/studies/{study}"
    try:
        return function()
    except requests.exceptions.Timeout:
        raise InputError(
            f"{where}: the PACS did not answer within {pacs.timeout:g} s while {action}",
            tip="check the PACS, or raise --pacs-timeout",
        ) from None
    except requests.exceptions.HTTPError as error:
        status = error.response.status_code if error.response is not None else 0
        reason = error.response.reason if error.response is not None else ""
        if status in (401, 403):
            tip = (f"the credentials come from {USER_ENV}/{PASSWORD_ENV}, {TOKEN_ENV} or the netrc file "
                   f"({NETRC_ENV}, default ~/.netrc)")
            raise InputError(f"{where}: the PACS refused {action} (HTTP {status} {reason})", tip=tip) from None
        if status == 404:
            raise InputError(f"{where}: not found on the PACS while {action} (HTTP 404)") from None
        raise InputError(f"{where}: the PACS answered HTTP {status} {reason} while {action}") from None
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as error:
        raise InputError(f"{where}: the PACS's answer broke off while {action} ({type(error).__name__})") from None
    except requests.exceptions.ConnectionError as error:
        text = str(error.args[0] if error.args else error)
        found = re.search(r"\[Errno -?\d+\] ([^'\"\)]+)", text)
        cause = found.group(1).strip() if found else text.split(":")[-1].strip(" )'\">")
        raise InputError(f"{where}: cannot reach the PACS while {action} ({cause})") from None
    except requests.exceptions.RequestException as error:
        raise InputError(f"{where}: the request failed while {action} ({type(error).__name__})") from None
    except ValueError as error:  # a malformed multipart or JSON answer
        raise InputError(f"{where}: the PACS's answer could not be read while {action} ({error})") from None


def _value(item: dict[str, Any], tag: str) -> str | None:
    values = item.get(tag, {}).get("Value")
    return str(values[0]) if values else None


def _medenc_series(pacs: Pacs, study: str, series: str) -> bool:
    """Whether a series on the PACS is one medenc derived (its DerivationDescription, per frame or top level,
    or an enhanced image's ImageComments, starts with :data:`~medenc.io.dicom_write.DERIVATION_PREFIX`)."""
    from medenc.io.dicom_write import DERIVATION_PREFIX

    metadata = call(pacs, study, "reading the series' metadata (WADO-RS)",
                    lambda: pacs.client.retrieve_series_metadata(study, series))
    return bool(metadata) and any(DERIVATION_PREFIX in text for text in _derivation_texts(metadata[0]))


def _derivation_texts(item: dict[str, Any]) -> list[str]:
    """DerivationDescription and ImageComments values of a DICOM JSON dataset, at every nesting level."""
    texts = []
    for tag, element in item.items():
        for value in element.get("Value", []) if isinstance(element, dict) else []:
            if isinstance(value, dict):
                texts.extend(_derivation_texts(value))
            elif tag in ("00082111", "00204000"):
                texts.append(str(value))
    return texts


def list_instances(pacs: Pacs, study: str, series: str | None = None) -> list[tuple[str, str]]:
    """QIDO-RS: ``(SeriesInstanceUID, SOPInstanceUID)`` of the instances to encrypt, sorted.

    With ``series``: that series' instances. Without: every instance of the study except the series
    medenc itself derived (stored there by an earlier ``--to-pacs``; never a source): so the study
    reads as it was before, and a finished batch case is recognised.

    Raises:
        InputError: the PACS refuses or fails (see :func:`call`), or holds no such study / series.
    """
    found = call(
        pacs,
        study,
        "listing the study's instances (QIDO-RS)",
        lambda: pacs.client.search_for_instances(
            study_instance_uid=study, series_instance_uid=series, fields=["SeriesInstanceUID"], get_remaining=True
        ),
    )
    instances = sorted({(_value(i, _SERIES_UID) or "", _value(i, _SOP_UID) or "") for i in found})
    if series is None:
        derived = {s for s in {s for s, _ in instances} if _medenc_series(pacs, study, s)}
        instances = [i for i in instances if i[0] not in derived]
    if not instances:
        what = f"series {series} of the study" if series else "the study"
        raise InputError(f"DICOMweb study {pacs.root}/studies/{study}: the PACS holds no instance of {what}")
    return instances


def identity(instances: Sequence[tuple[str, str]]) -> str:
    """SHA-256 over the sorted (series, SOP instance) UIDs: what a study on a PACS is, for resuming a batch."""
    digest = hashlib.sha256()
    for series, sop in sorted(instances):
        digest.update(f"{series}/{sop}\n".encode())
    return digest.hexdigest()


def retrieve_study(
    pacs: Pacs,
    study: str,
    folder: Path,
    series: str | None = None,
    expected: Sequence[tuple[str, str]] | None = None,
) -> list[tuple[str, str]]:
    """WADO-RS: write the instances :func:`list_instances` lists into ``folder`` as ``<series>/<sop>.dcm``.

    Each listed series is retrieved whole, in its stored transfer syntax; what arrives must be exactly
    the listed instances.

    Args:
        pacs: the PACS.
        study: the StudyInstanceUID.
        folder: where to write (created).
        series: one series to retrieve (default: every series but medenc's own).
        expected: the listing, if the caller has it already.

    Returns:
        The (series, SOP instance) UIDs retrieved, sorted.

    Raises:
        InputError: refused, timed out, unreachable, or a partial study (fewer or other instances than listed).
    """
    from pydicom import dcmwrite

    expected = sorted(expected) if expected is not None else list_instances(pacs, study, series)
    media = (("application/dicom", "*"),)  # as stored: no transcoding by the PACS
    action = "retrieving the study (WADO-RS)"
    got: dict[tuple[str, str], Any] = {}
    for series_uid in sorted({s for s, _ in expected}):
        datasets = call(pacs, study, action,
                        lambda s=series_uid: pacs.client.retrieve_series(study, s, media_types=media))
        for ds in datasets:
            got[(str(ds.get("SeriesInstanceUID", "")), str(ds.get("SOPInstanceUID", "")))] = ds
    if sorted(got) != expected:
        missing = len(set(expected) - set(got))
        raise InputError(
            f"DICOMweb study {pacs.root}/studies/{study}: partial study: the PACS returned {len(got)} instance(s), "
            f"its listing holds {len(expected)} ({missing} missing, {len(set(got) - set(expected))} unexpected)",
            tip="retry later; the study may still be arriving on the PACS",
        )
    for (series_uid, sop_uid), ds in got.items():
        target = folder / series_uid / f"{sop_uid}.dcm"
        target.parent.mkdir(parents=True, exist_ok=True)
        dcmwrite(target, ds, enforce_file_format=False)
    return expected


def store_series(pacs: Pacs, study: str, files: Sequence[Path]) -> dict[str, Any]:
    """STOW-RS: store the DICOM ``files`` (one derived series of ``study``) under the study on the PACS.

    Returns:
        What was stored: ``{"url", "study_uid", "series_uid", "instances", "sop_uids"}``; the URL has no
        credentials.

    Raises:
        InputError: the PACS refuses or fails (nothing is stored then), or accepts only some instances
            (the error says which were stored: DICOMweb has no transaction to undo them).
    """
    from pydicom import dcmread

    datasets = [dcmread(path) for path in files]
    series = sorted({str(ds.SeriesInstanceUID) for ds in datasets})
    wrong = [str(ds.StudyInstanceUID) for ds in datasets if str(ds.StudyInstanceUID) != study]
    if len(series) != 1 or wrong:
        raise ValueError(f"store_series stores one series of study {study}; got series {series}, studies {wrong}")
    response = call(
        pacs, study, "storing the derived series (STOW-RS)",
        lambda: pacs.client.store_instances(datasets, study_instance_uid=study),
    )
    failed = response.get("FailedSOPSequence", []) if response is not None else []
    stored = sorted(str(item.ReferencedSOPInstanceUID) for item in (response or {}).get("ReferencedSOPSequence", []))
    wanted = sorted(str(ds.SOPInstanceUID) for ds in datasets)
    if failed or stored != wanted:
        reasons = sorted({str(item.get("FailureReason", "?")) for item in failed})
        raise InputError(
            f"DICOMweb study {pacs.root}/studies/{study}: the PACS stored {len(stored)} of {len(wanted)} "
            f"instance(s) of the derived series {series[0]} (failure reasons {', '.join(reasons) or 'none given'}); "
            "those stored stay on the PACS",
            tip="DICOMweb cannot undo a store; remove the stored instances on the PACS before retrying",
        )
    return {"url": pacs.root, "study_uid": study, "series_uid": series[0], "instances": len(stored),
            "sop_uids": stored}
