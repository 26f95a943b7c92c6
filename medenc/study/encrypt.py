"""``medenc encrypt-study``: one study with its diagnosis -> a shareable encrypted copy beside it.

A DICOM series (folder or file) or a NIfTI volume is read on its stored grid, the chosen axial slices
(the largest-tumor one, every tumor slice, or all) go through PGD in batched calls, and the volume is
written back as a derived DICOM series of the same study (or a NIfTI file with the source header):
unselected slices keep their values, so the copy stays a complete volume. ``OUT_DIR`` is built in a
temporary folder and renamed into place only when complete; the written files are re-read and checked
before that. ``OUT_DIR/report.json`` records what was done, measured on what was written; it names the
key by its fingerprint only. See ``docs/encrypt-study.md``; batches are in :mod:`medenc.study.batch`.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medenc.atomic import atomic_directory
from medenc.core.key import load_key_for
from medenc.errors import InputError
from medenc.files import files_under, sha256_files
from medenc.learn.checkpoint import BaseModel, load_base_model
from medenc.study.report import (
    REPORT_NAME,
    add_uids,
    build_report,
    slice_metrics,
    verify_output,
)
from medenc.study.request import DEFAULT_SLICES, StudyRequest, check_request
from medenc.study.sharing import plan_sharing

if TYPE_CHECKING:  # pragma: no cover
    from medenc.io import Volume

SERIES_DIR = "series"
#: PGD samples (slices x targets) per call on a CPU: as many as keep samples x pixels under this
#: (a whole 64x64 study of 256 slices, 64 slices at 128x128, 8 samples at 512x512)
CPU_BATCH_PIXELS = 1 << 21
#: ``progress(phase, done, total)``: phase ``"read"``, ``"pgd"``, ``"measure"`` or ``"write"``; PGD and
#: measuring count slices (PGD in fractions of a slice, step by step), the others count 0 then 1
Progress = Callable[[str, float, float], None]


@dataclass
class Session:
    """What the studies of one run share: the base model, the key and the encryptor."""

    base: BaseModel
    key: Any
    key_path: Path
    encryptor: Any
    model_sha256: str
    auto_batch: bool
    seconds: float
    uid_root: str | None = None


def open_session(
    model: str | Path,
    key: str | Path,
    *,
    device: str | None = None,
    batch_size: int | None = None,
    precision: str = "auto",
    uid_root: str | None = None,
) -> Session:
    """Load the base model and the key (checked against each other) and build the encryptor.

    Args:
        model: base model checkpoint (must carry its ``Preprocess``).
        key: key file; read only; a warning if group or others may read it.
        device: PGD device (default: CUDA if available).
        batch_size: PGD samples (slices x targets) per call; None: all slices of a study in one call
            (on CUDA, halved on out-of-memory; on a CPU, up to :data:`CPU_BATCH_PIXELS` pixels per call).
        precision: ``fp32``, ``bf16`` or ``auto``.
        uid_root: the organisation's UID root of the derived series' new UIDs (default: pydicom's).

    Raises:
        InputError: a bad model, key or UID root.
    """
    from medenc.core.encrypt import Encryptor

    uid_root = checked_uid_root(uid_root)
    started = time.perf_counter()
    base = load_base_model(model)
    the_key = load_key_for(key, tuple(base.info.classes))
    encryptor = Encryptor(base.model, the_key, device=device, batch_size=batch_size or 64, precision=precision)
    return Session(
        base=base,
        key=the_key,
        key_path=Path(key),
        encryptor=encryptor,
        model_sha256=sha256_files([Path(model)]),
        auto_batch=batch_size is None,
        seconds=time.perf_counter() - started,
        uid_root=uid_root,
    )


def checked_uid_root(uid_root: str | None) -> str | None:
    """``uid_root`` checked (:func:`medenc.io.uids.check_uid_root`); ``None`` stays ``None``.

    Raises:
        InputError: not a UID root.
    """
    from medenc.io.uids import check_uid_root

    try:
        return None if uid_root is None else check_uid_root(uid_root)
    except ValueError as error:
        raise InputError(str(error), tip="use your organisation's registered UID root (--uid-root)") from None


def encrypt_study(
    study: str | Path,
    *,
    model: str | Path,
    key: str | Path,
    label: str,
    out: str | Path,
    mask: str | Path | None = None,
    slices: str = DEFAULT_SLICES,
    series: str | None = None,
    allow_original_slices: bool = False,
    coherent_slices: int = 1,
    device: str | None = None,
    batch_size: int | None = None,
    precision: str = "auto",
    force: bool = False,
    progress: Progress | None = None,
    uid_root: str | None = None,
) -> dict[str, Any]:
    """Encrypt one study into ``out`` (atomically) and return its report (also ``out/report.json``).

    ``progress(phase, done, total)`` is called as the work goes (see :data:`Progress`). A study on a PACS
    (a DICOMweb URL), or storing the result into one: :func:`medenc.study.pacs.encrypt_pacs_study`.

    Raises:
        InputError: a bad study, mask, model, key, label or output path (checked before any PGD).
        OutputExistsError: ``out`` exists and ``force`` is False.
    """
    request, session = open_study(
        Path(study), model=model, key=key, label=label, out=out, mask=mask, slices=slices, series=series,
        allow_original_slices=allow_original_slices, coherent_slices=coherent_slices, device=device,
        batch_size=batch_size, precision=precision, force=force, uid_root=uid_root,
    )  # fmt: skip
    return run_study(request, session, force=force, count_loading=True, progress=progress)


def open_study(study: Path, *, to_pacs: str | None = None, **options: Any) -> tuple[StudyRequest, Session]:
    """The request of one study, checked (no pixels read), and the loaded session.

    Args:
        study: the study's path (for a study URL: a stand-in, the model file; see :mod:`medenc.study.pacs`).
        to_pacs: the DICOMweb root to store into, checked by the caller.
        options: :func:`encrypt_study`'s keyword arguments.
    """
    mask = options.get("mask")
    request = StudyRequest(
        study=study,
        label=options["label"],
        out=Path(options["out"]),
        mask=None if mask is None else Path(mask),
        slices=options.get("slices", DEFAULT_SLICES),
        series=options.get("series"),
        allow_original_slices=options.get("allow_original_slices", False),
        coherent_slices=options.get("coherent_slices", 1),
        to_pacs=to_pacs,
    )
    model, key = Path(options["model"]), Path(options["key"])
    check_request(request, force=options.get("force", False), protected=(model, key))  # before loading
    uid_root = checked_uid_root(options.get("uid_root"))
    session = open_session(model, key, device=options.get("device"), batch_size=options.get("batch_size"),
                           precision=options.get("precision", "auto"), uid_root=uid_root)
    return request, session


def describe_request(request: StudyRequest, session: Session) -> dict[str, Any]:
    """Everything that decides the output, with checksums of the inputs (a resumed batch compares it)."""
    if request.source is not None:  # a study retrieved from a PACS: its URL and its instances identify it
        study, study_sha256 = request.source, request.source_sha256
    else:
        study = str(request.study.resolve())
        study_sha256 = sha256_files(files_under(request.study), request.study if request.study.is_dir() else None)
    described = {
        "study": study,
        "study_sha256": study_sha256,
        "mask": None if request.mask is None else str(request.mask.resolve()),
        "mask_sha256": None if request.mask is None else sha256_files([request.mask]),
        "label": request.label,
        "slices": request.slices,
        "series": request.series,
        "allow_original_slices": request.allow_original_slices,
        "coherent_slices": request.coherent_slices,
        "model_sha256": session.model_sha256,
        "key_fingerprint": session.key.fingerprint(),
    }
    if request.to_pacs is not None:
        described["to_pacs"] = request.to_pacs
    return described


def run_study(
    request: StudyRequest,
    session: Session,
    *,
    force: bool = False,
    count_loading: bool = False,
    progress: Progress | None = None,
    before_commit: Callable[[Path, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Encrypt one study with a loaded session; validate everything before any PGD or write.

    Args:
        request: the study and how to encrypt it.
        session: the loaded model, key and encryptor.
        force: replace an existing ``request.out``.
        count_loading: add the session's loading time to the report's timing (single-study runs).
        progress: called with ``(phase, done, total)`` as the work goes (see :data:`Progress`).
        before_commit: called with the output's temporary folder and the report, after everything is
            written and verified and before report.json and the rename (e.g. to store the series on a
            PACS, :mod:`medenc.study.pacs`); it may add to the report; if it raises, nothing is output.

    Returns:
        The report, also written to ``request.out / "report.json"``.
    """
    from medenc.core.slices import select_slices
    from medenc.io import read_image, read_mask, write_like

    started = time.perf_counter()
    report_progress: Progress = progress or (lambda phase, done, total: None)
    report_progress("read", 0, 1)
    timing: dict[str, float] = {}
    classes = tuple(session.base.info.classes)
    check_request(request, classes, force=force, protected=(session.base.path, session.key_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        requested = describe_request(request, session)
        volume = read_image(request.study, series=request.series)
        tumor = None if request.mask is None else read_mask(request.mask, like=volume)
    if request.slices == "all":
        selected = list(range(volume.shape[0]))
    else:
        try:
            selected = select_slices(tumor, request.slices)
        except InputError as error:
            raise InputError(error.problem, request.mask, error.tip) from None
    sharing = plan_sharing(
        volume, selected, tumor, allow_original_slices=request.allow_original_slices, source=request.study
    )
    timing["read"] = time.perf_counter() - started

    mark = time.perf_counter()
    n = len(selected)
    report_progress("pgd", 0, n)
    encrypted, pgd = _encrypt(
        volume, session, request, selected, lambda done: report_progress("pgd", done, n)
    )
    timing["pgd"] = time.perf_counter() - mark
    mark = time.perf_counter()
    written = volume.quantize(encrypted)
    per_slice = slice_metrics(
        volume, written, selected, session, tumor, progress=lambda done: report_progress("measure", done, n)
    )
    timing["evaluate"] = time.perf_counter() - mark

    with atomic_directory(request.out, force=force) as tmp:
        report_progress("write", 0, 1)
        mark = time.perf_counter()
        name = SERIES_DIR if volume.format == "dicom" else _nifti_name(volume.source)
        write_like(volume, encrypted, tmp / name, slices=sharing.write, uid_root=session.uid_root)
        timing["write"] = time.perf_counter() - mark
        mark = time.perf_counter()
        output = verify_output(volume, written, tmp / name, sharing.write)
        timing["verify"] = time.perf_counter() - mark
        written_files = files_under(tmp / name)
        output.update(
            path=str(request.out / name),
            files=len(written_files),
            sha256=sha256_files(written_files, tmp / name if (tmp / name).is_dir() else None),
        )
        add_uids(volume, selected, per_slice, output.pop("uid_map", {}))
        timing["total"] = time.perf_counter() - started
        if count_loading:
            timing["load_model_and_key"] = session.seconds
            timing["total"] += session.seconds
        report = build_report(request, session, volume, selected, per_slice, output, requested, pgd, timing)
        report["sharing"] = sharing.summary(request.allow_original_slices)
        report["warnings"] = [str(w.message) for w in caught]
        if sharing.warning():
            report["warnings"].append(sharing.warning())
        if before_commit is not None:
            before_commit(tmp, report)
        report_progress("write", 1, 1)
        (tmp / REPORT_NAME).write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    for w in caught:  # pass them on to the caller (the CLI prints them)
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if sharing.warning():
        warnings.warn(sharing.warning(), stacklevel=2)
    return report


def encrypt_volume(
    volume: Volume,
    encryptor: Any,
    labels: Any,
    *,
    slices: Sequence[int],
    preprocess: Any,
    progress: Callable[[float], None] | None = None,
    coherent_slices: int = 1,
) -> np.ndarray:
    """Encrypt axial slices of a volume on its native grid, within its stored range.

    Args:
        volume: the source volume.
        encryptor: a :class:`medenc.core.encrypt.Encryptor`.
        labels: the true class (index or name) of the volume, or one per slice.
        slices: canonical axial indices to encrypt.
        preprocess: the model's :class:`medenc.core.mapping.Preprocess` (native -> model input).
        progress: called with the number of slices done (fractional, after every PGD step).
        coherent_slices: > 1: perturbations coherent through the plane, knots every that many slices, all
            slices in one PGD call (one label for all; :meth:`Encryptor.encrypt_coherent`).

    Returns:
        A copy of ``volume.voxels`` with the slices encrypted (not yet quantized: :meth:`Volume.quantize`
        or writing rounds to the stored values).

    Shape:
        result: (Z, Y, X).
    """
    import torch

    slices = [int(s) for s in np.atleast_1d(np.asarray(slices))]
    if isinstance(labels, (str, int, np.integer)):
        labels = [labels] * len(slices)
    x = torch.from_numpy(volume.slice_batch(slices).astype(np.float32))
    lo, hi = (torch.from_numpy(b.astype(np.float32)[:, None]) for b in volume.bounds(slices))
    options = {"mapping": preprocess.mapping(x), "bounds": (lo, hi), "progress": progress}
    if coherent_slices > 1:
        encrypted = encryptor.encrypt_coherent(
            x, list(labels), positions=slices, spacing=coherent_slices, **options
        ).encrypted
    else:
        encrypted = encryptor.encrypt(x, list(labels), **options)
    return volume.with_slices(slices, encrypted.detach().cpu().numpy().astype(volume.voxels.dtype))


def _nifti_name(source: Path) -> str:
    return "image.nii" if source.name.lower().endswith(".nii") else "image.nii.gz"


def _encrypt(
    volume: Any,
    session: Session,
    request: StudyRequest,
    selected: list[int],
    progress: Callable[[float], None] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """PGD over the selected slices in as few calls as memory allows (on CUDA: halving on out-of-memory).

    With ``request.coherent_slices > 1`` all slices go in one call (they are optimised jointly).
    """
    import torch

    encryptor = session.encryptor
    k = session.key.num_targets
    cuda = encryptor.device.type == "cuda"
    if session.auto_batch:
        encryptor.batch_size = len(selected) * k if cuda else cpu_batch_size(volume, session, len(selected))
    while True:
        try:
            result = encrypt_volume(
                volume,
                encryptor,
                request.label,
                slices=selected,
                preprocess=session.base.preprocess,
                progress=progress,
                coherent_slices=request.coherent_slices,
            )
            break
        except torch.cuda.OutOfMemoryError:
            if not (cuda and session.auto_batch) or encryptor.batch_size <= k:
                raise
            encryptor.batch_size = max(k, encryptor.batch_size // 2)
            torch.cuda.empty_cache()
    per_call = len(selected) if request.coherent_slices > 1 else max(1, encryptor.batch_size // k)
    return result, {
        "calls": math.ceil(len(selected) / per_call),
        "slices_per_call": min(per_call, len(selected)),
        "samples": len(selected) * k,
    }


def cpu_batch_size(volume: Any, session: Session, slices: int) -> int:
    """PGD samples per call on a CPU: every slice x target of the study, up to :data:`CPU_BATCH_PIXELS` pixels."""
    k = session.key.num_targets
    pixels = max(volume.shape[1] * volume.shape[2], math.prod(session.base.preprocess.size))
    return max(k, min(slices * k, (CPU_BATCH_PIXELS // pixels) // k * k))
