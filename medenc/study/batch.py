"""``medenc encrypt-study --batch``: many studies, one output folder each, resumable.

The base model and key are loaded once. Each case goes to ``OUT/<case_id>/`` exactly as a single
``encrypt-study`` would write it. A case whose ``report.json`` exists and records the same request
(same input checksums, label, mask, slice mode, model and key) is skipped, so an interrupted batch is
resumed by running it again. A failing case is recorded and the others go on; ``OUT/batch-summary.json``
lists every case's status.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medenc.atomic import atomic_write_text
from medenc.errors import InputError
from medenc.files import safe_name
from medenc.io.dicomweb import is_dicomweb_url
from medenc.io.tables import read_table
from medenc.study.cases import TIMED, BatchCase, BatchOptions, run_case
from medenc.study.request import DEFAULT_SLICES

logger = logging.getLogger(__name__)

BATCH_COLUMNS = ("case_id", "label", "image")
OPTIONAL_COLUMNS = ("mask", "series")
SUMMARY_NAME = "batch-summary.json"


def _outside(raw: str, root: Path) -> str | None:
    """Why the batch path ``raw`` (relative to ``root``) leads outside ``root``, or None if it stays inside."""
    given = Path(raw)
    if given.is_absolute():
        return "is absolute"
    if ".." in given.parts:
        return "climbs out with '..'"
    top = root.resolve()
    target = root / given
    if not target.resolve().is_relative_to(top):
        return "is a link leading out"
    if target.is_dir():
        for inner in target.rglob("*"):
            if inner.is_symlink() and not inner.resolve().is_relative_to(top):
                return f"holds a link leading out ({inner.relative_to(target)})"
    return None


def read_batch(path: str | Path, *, allow_external_paths: bool = False) -> list[BatchCase]:
    """Rows of a batch file ``case_id,label,image[,mask][,series]``; other columns are ignored.

    Image and mask paths are relative to the batch file's folder and must stay inside it: a path that is
    absolute, climbs out with ``..``, or is (or holds) a link leading out is refused unless
    ``allow_external_paths`` (a batch file from elsewhere must not make medenc read arbitrary files).

    Raises:
        InputError: unreadable file, missing columns, empty fields, case ids that clash, or a path
            leading outside the batch file's folder.
    """
    path = Path(path)
    table = read_table(path, required=BATCH_COLUMNS, optional=OPTIONAL_COLUMNS, what="batch file",
                       tip="the header must be case_id,label,image[,mask][,series]")
    cases: list[BatchCase] = []
    folders: dict[str, str] = {}
    for record in table:
        line, row = record.line, record.values
        case_id = row["case_id"]
        folder = safe_name(case_id)
        if folder in folders:
            raise InputError(f"line {line}: case id {case_id!r} clashes with {folders[folder]!r}", path)
        folders[folder] = case_id
        for column in ("image", "mask"):
            local = row[column] and not (column == "image" and is_dicomweb_url(row[column]))
            why = _outside(row[column], path.parent) if local and not allow_external_paths else None
            if why is not None:
                raise InputError(
                    f"line {line}: {column} {row[column]!r} {why} of the batch file's folder",
                    path,
                    tip="put the studies under the batch file's folder, or pass --allow-external-paths "
                    "if you trust every path in the file",
                )
        cases.append(
            BatchCase(
                case_id=case_id,
                label=row["label"],
                image=row["image"] if is_dicomweb_url(row["image"]) else path.parent / row["image"],
                mask=path.parent / row["mask"] if row["mask"] else None,
                series=row["series"] or None,
            )
        )
    if not cases:
        raise InputError("batch file has no rows", path)
    return cases


def encrypt_batch(
    batch: str | Path,
    *,
    model: str | Path,
    key: str | Path,
    out: str | Path,
    slices: str = DEFAULT_SLICES,
    allow_original_slices: bool = False,
    coherent_slices: int = 1,
    device: str | None = None,
    batch_size: int | None = None,
    precision: str = "auto",
    force: bool = False,
    allow_external_paths: bool = False,
    on_case: Callable[[str, str, str | None], None] | None = None,
    on_progress: Callable[[str, str, float, float], None] | None = None,
    uid_root: str | None = None,
    to_pacs: str | None = None,
    pacs_timeout: float = 60.0,
    workers: int = 1,
    ray_address: str | None = None,
    engine: str = "auto",
) -> dict[str, Any]:
    """Encrypt every case of ``batch`` into ``out/<case_id>/``; return the summary (also written).

    Args:
        batch: the batch file.
        model: base model checkpoint.
        key: key file.
        out: the batch output folder (may exist: finished cases are skipped).
        slices: ``all`` (default), ``largest`` or ``tumor`` for every case.
        allow_original_slices: also write the slices that are not encrypted, with their original pixels.
        coherent_slices: hardening: perturbations coherent through the plane, knots every that many slices.
        device: PGD device.
        batch_size: PGD samples per call (None: automatic, see :func:`medenc.study.encrypt.open_session`).
        precision: ``fp32``, ``bf16`` or ``auto``.
        force: replace a case's existing output that does not match its request (a matching one is
            skipped either way).
        allow_external_paths: accept image/mask paths leading outside the batch file's folder.
        on_case: called after each case with ``(case_id, status, message)``; status is ``encrypted``,
            ``skipped`` or ``failed``.
        on_progress: called with ``(case_id, phase, done, total)`` while a case is encrypted (see
            :data:`medenc.study.encrypt.Progress`).
        uid_root: the organisation's UID root of the new UIDs (default: pydicom's).
        to_pacs: a DICOMweb root: each case's derived series is also stored there (STOW-RS), into its study.
        pacs_timeout: seconds to wait for a PACS (study URLs in the ``image`` column, ``to_pacs``).
        workers: processes encrypting cases at once; more than 1 (or ``ray_address``) runs the cases on
            Ray actors, one model load each (:mod:`medenc.study.parallel`).
        ray_address: an existing Ray cluster (``auto`` or ``HOST:PORT``) instead of a local Ray instance.
        engine: ``auto`` (Ray when ``workers`` > 1 or ``ray_address`` is given, else this process),
            ``serial`` or ``ray`` (e.g. one Ray worker, to measure Ray's own cost).

    Returns:
        The summary: counts, and per case its status, output folder, error and seconds.

    Raises:
        InputError: a bad batch file, model or key (nothing is encrypted then).
    """
    from medenc.study.encrypt import open_session
    from medenc.study.pacs import check_to_pacs
    from medenc.study.request import SLICE_MODES

    started = time.perf_counter()
    if slices not in SLICE_MODES:
        raise InputError(f"--slices must be one of {', '.join(SLICE_MODES)}, got {slices!r}")
    options = BatchOptions(out=Path(out), slices=slices, allow_original_slices=allow_original_slices,
                           coherent_slices=coherent_slices, force=force, to_pacs=check_to_pacs(to_pacs),
                           pacs_timeout=pacs_timeout)
    if workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    if engine not in ("auto", "serial", "ray") or (engine == "serial" and (workers > 1 or ray_address)):
        raise InputError(f"engine must be auto, serial or ray (serial: one worker, no Ray address), got {engine!r}")
    cases = read_batch(batch, allow_external_paths=allow_external_paths)
    out = Path(out)
    session_args = {"model": model, "key": key, "device": device, "batch_size": batch_size, "precision": precision,
                    "uid_root": uid_root}
    if engine == "serial" or (engine == "auto" and workers == 1 and ray_address is None):
        session = open_session(**session_args)
        engine: dict[str, Any] = {"engine": "serial", "workers": 1, "devices": [str(session.encryptor.device)]}
        results = []
        for case in cases:
            progress = None if on_progress is None else functools.partial(on_progress, case.case_id)
            entry = run_case(case, session, options, progress)
            results.append(entry)
            if on_case is not None:
                on_case(case.case_id, entry["status"], entry["error"])
    else:
        from medenc.study.parallel import run_parallel

        session = open_session(**{**session_args, "device": "cpu"})  # checks model and key before any worker
        results, engine = run_parallel(cases, options, session_args, workers=workers, ray_address=ray_address,
                                       on_case=on_case)
    summary = {
        "format": "medenc.encrypt-study-batch/1",
        "batch": str(batch),
        "cases": len(results),
        "encrypted": sum(r["status"] == "encrypted" for r in results),
        "skipped": sum(r["status"] == "skipped" for r in results),
        "failed": sum(r["status"] == "failed" for r in results),
        "slices": slices,
        "allow_original_slices": allow_original_slices,
        "key_fingerprint": session.key.fingerprint(),
        "device": engine["devices"][0] if len(engine["devices"]) == 1 else ",".join(engine["devices"]),
        "engine": engine,
        "seconds": round(time.perf_counter() - started, 3),
        "timing_s": {name: round(sum(r.get("timing_s", {}).get(name, 0.0) for r in results), 3) for name in TIMED},
        "results": results,
    }
    atomic_write_text(out / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n")
    return summary
