"""One case of a batch: what it is (:class:`BatchCase`), what all cases share (:class:`BatchOptions`), and
:func:`run_case`, which encrypts it or skips it when its finished output is there.

The serial batch (:mod:`medenc.study.batch`) and the Ray workers (:mod:`medenc.study.parallel`) both
run every case through :func:`run_case`, so their outputs are the same.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medenc.errors import MedencError
from medenc.files import safe_name
from medenc.study.request import DEFAULT_SLICES

if TYPE_CHECKING:  # pragma: no cover
    from medenc.study.encrypt import Progress

logger = logging.getLogger(__name__)

TIMED = ("pgd", "io", "evaluate")  # the time split of an encrypted case, summed over a batch


@dataclass(frozen=True)
class BatchCase:
    """One row of a batch file (paths resolved against the file's folder; a study URL kept as text)."""

    case_id: str
    label: str
    image: Path | str
    mask: Path | None = None
    series: str | None = None


@dataclass(frozen=True)
class BatchOptions:
    """What every case of a batch shares besides the session (picklable: parallel workers get it too)."""

    out: Path
    slices: str = DEFAULT_SLICES
    allow_original_slices: bool = False
    coherent_slices: int = 1
    force: bool = False
    to_pacs: str | None = None
    pacs_timeout: float = 60.0


def run_case(
    case: BatchCase, session: Any, options: BatchOptions, progress: Progress | None = None
) -> dict[str, Any]:
    """Encrypt one case into ``options.out/<case_id>/``, or skip it when its finished output is there.

    Args:
        case: the batch row.
        session: the loaded model, key and encryptor (:class:`medenc.study.encrypt.Session`).
        options: what every case shares.
        progress: called with ``(phase, done, total)`` while the case is encrypted.

    Returns:
        The case's summary entry: ``case_id``, ``out``, ``status`` (``encrypted``, ``skipped`` or
        ``failed``), ``error``, ``warnings``, ``seconds``, and for an encrypted case ``timing_s``
        (:data:`TIMED`). Errors are caught (a failing case does not stop a batch).
    """
    from medenc.study.encrypt import describe_request, run_study
    from medenc.study.pacs import describe_any, run_dicomweb_study, store_hook
    from medenc.study.report import report_state
    from medenc.study.request import StudyRequest, check_request

    case_started = time.perf_counter()
    url = isinstance(case.image, str)
    request = StudyRequest(
        study=session.base.path if url else Path(case.image),  # a URL's study is retrieved later
        label=case.label,
        out=options.out / safe_name(case.case_id),
        mask=case.mask,
        slices=options.slices,
        series=case.series,
        allow_original_slices=options.allow_original_slices,
        coherent_slices=options.coherent_slices,
        to_pacs=options.to_pacs,
    )
    classes = tuple(session.base.info.classes)
    entry: dict[str, Any] = {"case_id": case.case_id, "out": str(request.out), "error": None, "warnings": []}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_request(request, classes, force=True, protected=(session.base.path, session.key_path))
            prepared = None
            if url:  # the PACS's listing identifies the study: nothing is downloaded for a finished case
                description, prepared = describe_any(case.image, request, session, timeout=options.pacs_timeout)
            state = None
            if request.out.exists():
                state = report_state(request.out, description if url else describe_request(request, session))
            if state == "done":
                entry["status"] = "skipped"
            else:
                if state == "damaged":
                    warnings.warn(
                        f"{request.out}: the output no longer matches its report (files changed, added or "
                        "missing since it was written); encrypting the case again",
                        stacklevel=1,
                    )
                force = options.force or state == "damaged"
                if url:
                    report = run_dicomweb_study(str(case.image), request, session, force=force,
                                                timeout=options.pacs_timeout, prepared=prepared, progress=progress)
                else:
                    hook = store_hook(request, options.pacs_timeout) if request.to_pacs else None
                    report = run_study(request, session, force=force, before_commit=hook, progress=progress)
                entry["status"] = "encrypted"
                entry["timing_s"] = {name: report["timing_s"][name] for name in TIMED}
        entry["warnings"] = [str(w.message) for w in caught]
    except MedencError as error:
        entry.update(status="failed", error=str(error))
    except Exception as error:  # a bug in one case must not stop the batch; the summary names it
        logger.debug("case %s failed", case.case_id, exc_info=True)
        entry.update(status="failed", error=f"internal error ({type(error).__name__}: {error})")
    entry["seconds"] = round(time.perf_counter() - case_started, 3)
    return entry
