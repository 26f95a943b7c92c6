"""What one study's encryption is asked to do, and the checks that need no pixels.

:class:`StudyRequest` is built by ``medenc encrypt-study`` (one study) and by the batch runner (one per
CSV row); :func:`check_request` runs before any model is loaded or any pixel is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medenc.errors import InputError
from medenc.files import check_output

SLICE_MODES = ("all", "largest", "tumor")
#: every slice encrypted: the output holds no original slice, with or without a mask
DEFAULT_SLICES = "all"


@dataclass(frozen=True)
class StudyRequest:
    """One study to encrypt and how.

    Attributes:
        study: DICOM folder or file, or a NIfTI file.
        label: the study's true class (a class name of the model).
        out: the output folder (created).
        mask: tumor mask (NIfTI or DICOM SEG on the image grid); needed for ``largest`` and ``tumor``.
        slices: ``"all"`` (the default), ``"largest"`` or ``"tumor"``: the slices to encrypt.
        series: SeriesInstanceUID to read from a folder holding several series.
        allow_original_slices: also write the slices that are not encrypted, with their original pixels
            (a complete volume). Off by default: only encrypted slices are written, so the output
            never carries an original slice (see ``docs/encrypt-study.md``, "Sharing modes").
        coherent_slices: hardening against through-plane averaging: the perturbations of adjacent slices
            form one smooth field, optimised jointly, with knots every ``coherent_slices`` slices
            (:mod:`medenc.core.coherent`); 1 (the default) perturbs each slice on its own.
        source: the DICOMweb study URL ``study`` was retrieved from (it names the study in the report).
        source_sha256: what identifies that study (:func:`medenc.io.dicomweb.identity` of its instances).
        to_pacs: the DICOMweb root the derived series is stored into (STOW-RS), if any.
    """

    study: Path
    label: str
    out: Path
    mask: Path | None = None
    slices: str = DEFAULT_SLICES
    series: str | None = None
    allow_original_slices: bool = False
    coherent_slices: int = 1
    source: str | None = None
    source_sha256: str | None = None
    to_pacs: str | None = None


def check_request(
    request: StudyRequest,
    classes: tuple[str, ...] | None = None,
    *,
    force: bool = False,
    protected: tuple[Path, ...] = (),
) -> None:
    """Checks that need no pixels: slice mode, mask, label (given the classes), paths, existing output.

    ``protected`` files (the model, the key) must not lie inside the output folder either: replacing
    it with ``force`` would delete them.

    Raises:
        InputError: the request cannot be carried out as given.
        OutputExistsError: ``request.out`` exists and ``force`` is False.
    """
    if request.slices not in SLICE_MODES:
        raise InputError(f"--slices must be one of {', '.join(SLICE_MODES)}, got {request.slices!r}")
    if request.coherent_slices < 1:
        raise InputError(f"--coherent-slices must be >= 1, got {request.coherent_slices}")
    if request.mask is None and request.slices != "all":
        raise InputError(
            f"--slices {request.slices} needs a tumor mask", request.study, tip="pass --mask MASK, or use --slices all"
        )
    if classes is not None and request.label not in classes:
        raise InputError(
            f"label {request.label!r} is not one of the model's classes ({', '.join(classes)})",
            tip="use the class name exactly as the model and key spell it",
        )
    if not request.study.exists():
        raise InputError("study not found", request.study)
    if request.mask is not None and not request.mask.is_file():
        raise InputError("mask file not found", request.mask)
    check_output(request.out, inputs=[request.study, request.mask, *protected], force=force, what="output folder")
