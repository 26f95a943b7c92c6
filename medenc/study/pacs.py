"""``medenc encrypt-study URL [--to-pacs ROOT]``: encrypt a study that lives on a PACS, and store the result back.

The study is retrieved with WADO-RS into a private temporary folder (checked complete against the
PACS's own QIDO-RS listing), encrypted exactly as a local study (:func:`medenc.study.encrypt.run_study`),
and, with ``to_pacs``, the derived series is stored with STOW-RS into the same study on the PACS
*before* the local output is committed: if the PACS refuses, times out or fails, the error names the
study and neither the PACS nor ``OUT`` holds anything new. The temporary copy is removed either way.
``report.json`` gets a ``pacs`` section: where the study came from (URL, instances, where the
credentials came from, never the credentials) and what was stored (series UID, SOP instance UIDs).
A batch may mix local studies and study URLs (:mod:`medenc.study.batch`); a study URL's identity for
resuming is its URL plus its instances' UIDs (no download is needed to skip a finished case).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from medenc.errors import InputError
from medenc.io.dicomweb import (
    DEFAULT_TIMEOUT,
    connect,
    identity,
    is_dicomweb_url,
    list_instances,
    parse_root_url,
    parse_study_url,
    retrieve_study,
    store_series,
)
from medenc.study.encrypt import SERIES_DIR, Progress, Session, describe_request, open_study, run_study
from medenc.study.request import StudyRequest, check_request


def store_hook(request: StudyRequest, timeout: float, source: dict[str, Any] | None = None) -> Callable[..., None]:
    """The ``before_commit`` of :func:`run_study` for a PACS: record the source, STOW the series if asked.

    Args:
        request: the study request (``to_pacs``: the DICOMweb root to store into, or ``None``).
        timeout: seconds to wait for the PACS.
        source: the ``pacs.source`` report entry of a study retrieved from a PACS, else ``None``.
    """
    target = connect(request.to_pacs, timeout=timeout) if request.to_pacs is not None else None

    def before_commit(folder: Path, report: dict[str, Any]) -> None:
        section: dict[str, Any] = {"source": source, "stored": None}
        if source is not None:  # name the study by its URL, not by the private temporary copy
            temporary = str(request.study)
            report["input"]["path"] = source["url"]
            report["warnings"] = [w.replace(temporary, source["url"]) for w in report["warnings"]]
        if target is not None:
            if report["output"]["format"] != "dicom":
                raise InputError("--to-pacs stores DICOM series; this study was written as NIfTI", request.study)
            started = time.perf_counter()
            files = sorted((folder / SERIES_DIR).iterdir())
            section["stored"] = store_series(target, report["output"]["study_uid"], files)
            section["stored"]["auth"] = target.auth_source
            section["stored"]["seconds"] = round(time.perf_counter() - started, 4)
        report["pacs"] = section

    return before_commit


def study_request(
    url: str,
    template: StudyRequest,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[StudyRequest, Any, list[tuple[str, str]]]:
    """The request of a study URL (its identity from QIDO-RS, nothing downloaded), the PACS and its instances.

    ``template`` holds everything else (label, out, mask, slices, series, sharing options, to_pacs).
    """
    where = parse_study_url(url)
    pacs = connect(where.root, timeout=timeout)
    instances = list_instances(pacs, where.study_uid, template.series)
    request = replace(template, source=str(where), source_sha256=identity(instances))
    return request, pacs, instances


def run_dicomweb_study(
    url: str,
    template: StudyRequest,
    session: Session,
    *,
    force: bool = False,
    count_loading: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    prepared: tuple[StudyRequest, Any, list[tuple[str, str]]] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Retrieve the study at ``url`` (WADO-RS), encrypt it like a local one into ``template.out``, store it back.

    Args:
        url: ``http(s)://HOST:PORT/<root>/studies/<StudyInstanceUID>``.
        template: the request's other fields (``study`` is replaced by the retrieved copy).
        session: the loaded model, key and encryptor.
        force: replace an existing output.
        count_loading: add the session's loading time to the report's timing.
        timeout: seconds to wait for the PACS (each connection and answer).
        prepared: the result of :func:`study_request` when the caller has it already.
        progress: called with ``(phase, done, total)`` as the work goes (see :data:`Progress`).

    Returns:
        The report (also ``template.out / "report.json"``), with its ``pacs`` section.

    Raises:
        InputError: a bad URL, the PACS refuses / times out / returns a partial study, or any local
            problem (then nothing is stored on the PACS and nothing is written locally).
    """
    request, pacs, instances = prepared or study_request(url, template, timeout=timeout)
    protected = (session.base.path, session.key_path)
    # the checks that need no pixels, before any download; the study is not on disk yet, so the model
    # (an existing input, protected anyway) stands in for it
    check_request(replace(request, study=session.base.path), tuple(session.base.info.classes), force=force,
                  protected=protected)
    hook_source = {"url": request.source, "instances": len(instances), "series": sorted({s for s, _ in instances}),
                   "auth": pacs.auth_source}
    with tempfile.TemporaryDirectory(prefix="medenc-pacs-") as tmp:
        folder = Path(tmp) / "study"
        started = time.perf_counter()
        study_uid = request.source.rsplit("/studies/", 1)[1]  # type: ignore[union-attr]
        retrieve_study(pacs, study_uid, folder, request.series, expected=instances)
        hook_source["retrieve_s"] = round(time.perf_counter() - started, 4)
        local = replace(request, study=folder)
        hook = store_hook(local, timeout, hook_source)
        return run_study(local, session, force=force, count_loading=count_loading, before_commit=hook,
                         progress=progress)


def run_any_study(
    study: str | Path,
    template: StudyRequest,
    session: Session,
    *,
    force: bool = False,
    count_loading: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """A local study (folder, file) or a study URL, with ``template.to_pacs`` honoured for both."""
    if is_dicomweb_url(study):
        return run_dicomweb_study(str(study), template, session, force=force, count_loading=count_loading,
                                  timeout=timeout, progress=progress)
    request = replace(template, study=Path(study))
    hook = store_hook(request, timeout) if request.to_pacs is not None else None
    return run_study(request, session, force=force, count_loading=count_loading, before_commit=hook,
                     progress=progress)


def describe_any(study: str | Path, template: StudyRequest, session: Session, *, timeout: float) -> tuple[Any, ...]:
    """The request description a resumed batch compares, for a local study or a study URL (QIDO only).

    Returns:
        ``(description, prepared)``: ``prepared`` is :func:`study_request`'s result for a URL (reused
        to run the case), ``None`` for a local study.
    """
    if is_dicomweb_url(study):
        prepared = study_request(str(study), template, timeout=timeout)
        return describe_request(prepared[0], session), prepared
    return describe_request(replace(template, study=Path(study)), session), None


def check_to_pacs(url: str | None) -> str | None:
    """``--to-pacs`` checked (an http(s) DICOMweb root without credentials), or ``None``."""
    return None if url is None else parse_root_url(url, what="--to-pacs")


def encrypt_pacs_study(
    study: str | Path,
    *,
    to_pacs: str | None = None,
    pacs_timeout: float = DEFAULT_TIMEOUT,
    progress: Progress | None = None,
    **options: Any,
) -> dict[str, Any]:
    """:func:`medenc.study.encrypt.encrypt_study` for a study URL and/or with ``to_pacs``.

    Args:
        study: a DICOMweb study URL ``http(s)://HOST:PORT/<root>/studies/<StudyInstanceUID>``, or a local
            DICOM folder or file (then with ``to_pacs``).
        to_pacs: a DICOMweb root: the derived series is also stored into its study there (STOW-RS).
        pacs_timeout: seconds to wait for the PACS (each connection and answer).
        progress: called with ``(phase, done, total)`` as the work goes (see :data:`Progress`).
        options: the keyword arguments of ``encrypt_study`` (model, key, label, out, mask, slices, ...).

    Raises:
        InputError: as ``encrypt_study``, and a PACS that refuses, times out or returns a partial study
            (the message names the study; nothing is stored on the PACS or written locally).
    """
    url = is_dicomweb_url(study)
    if url:
        parse_study_url(str(study))  # a bad URL before loading anything
    stand_in = Path(options["model"]) if url else Path(study)  # a URL's study is retrieved after loading
    request, session = open_study(stand_in, to_pacs=check_to_pacs(to_pacs), **options)
    return run_any_study(study, request, session, force=options.get("force", False), count_loading=True,
                         timeout=pacs_timeout, progress=progress)
