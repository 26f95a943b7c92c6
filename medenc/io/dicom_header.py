"""The header side of a DICOM image: per stored slice its geometry and rescale, validated.

Every number medenc relies on is checked here, before any pixel is decoded: RescaleSlope and
RescaleIntercept finite (a slope of 0 is an error, not "1"), PixelSpacing positive,
ImagePositionPatient finite, ImageOrientationPatient two perpendicular unit vectors (tolerance 0.01),
NumberOfFrames a positive whole number. Each failure is a one-line :class:`InputError` naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medenc.errors import InputError
from medenc.io.dicom_pixels import frame_count
from medenc.io.limits import shown


@dataclass(frozen=True)
class DicomFrame:
    """One stored slice of a DICOM volume.

    Attributes:
        path: the source file.
        header: the source dataset without its pixel data (shared by the frames of one file).
        frame: 0-based frame index in a multi-frame file, ``None`` for a single-frame file.
        position: ``ImagePositionPatient`` (LPS mm) or ``None`` without geometry.
        orientation: ``ImageOrientationPatient`` (6 direction cosines) or ``None``.
        spacing: ``PixelSpacing`` (row spacing, column spacing) in mm, or ``None``.
        slope: rescale slope.
        intercept: rescale intercept.
        thickness: slice thickness or spacing between slices in mm, if given.
    """

    path: Path
    header: Any
    frame: int | None
    position: np.ndarray | None
    orientation: np.ndarray | None
    spacing: tuple[float, float] | None
    slope: float
    intercept: float
    thickness: float | None


def as_number(value: Any, default: float | None) -> float | None:
    try:
        return float(value) if value is not None and value != "" else default
    except (TypeError, ValueError):
        return default


def _finite(value: Any, name: str, path: Path, default: float) -> float:
    """A header number that must be finite when present (RescaleSlope, RescaleIntercept)."""
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number):
        raise InputError(f"{name} {value!s} is not a finite number", shown(path), tip=f"fix or remove {name}")
    return number


def _vector(value: Any, size: int, name: str, path: Path) -> np.ndarray | None:
    """A numeric multi-value (ImagePositionPatient, ImageOrientationPatient) or ``None`` if absent."""
    if value is None:
        return None
    try:
        vector = np.array([float(v) for v in (value if len(value) != 0 else [])], dtype=np.float64)
    except (TypeError, ValueError):
        vector = np.full(size, np.nan)
    if len(vector) == 0:
        return None
    if len(vector) != size or not np.isfinite(vector).all():
        raise InputError(f"{name} must be {size} finite numbers, got {value!s}", shown(path))
    return vector


def _spacing(value: Any, path: Path) -> tuple[float, float] | None:
    vector = _vector(value, 2, "PixelSpacing", path)
    if vector is None:
        return None
    if (vector <= 0).any():
        raise InputError(f"PixelSpacing must be two positive numbers (mm), got {value!s}", shown(path))
    return float(vector[0]), float(vector[1])


def _orientation(value: Any, path: Path) -> np.ndarray | None:
    """ImageOrientationPatient, checked: two unit vectors at a right angle (tolerance 0.01)."""
    vector = _vector(value, 6, "ImageOrientationPatient", path)
    if vector is None:
        return None
    row, col = vector[:3], vector[3:]
    if abs(np.linalg.norm(row) - 1) > 0.01 or abs(np.linalg.norm(col) - 1) > 0.01 or abs(row @ col) > 0.01:
        raise InputError(
            f"ImageOrientationPatient {value!s} is not two perpendicular unit vectors "
            f"(lengths {np.linalg.norm(row):.3g}, {np.linalg.norm(col):.3g}; cosine {row @ col:.3g})",
            shown(path),
        )
    return vector


def _thickness(value: Any) -> float | None:
    number = as_number(value, None)
    return number if number is not None and np.isfinite(number) and number > 0 else None


def _functional(ds: Any, frame: int, sequence: str, attribute: str) -> Any:
    """An attribute of a multi-frame functional group: per-frame item first, then the shared one."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if items is None or len(items) <= index:
            continue
        inner = items[index].get(sequence)
        if inner and attribute in inner[0]:
            return inner[0][attribute].value
    return None


def frames_of(path: Path, ds: Any) -> list[DicomFrame]:
    """The stored slices one dataset holds, with their geometry and rescale."""
    count = frame_count(path, ds)
    multi = "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds or count > 1
    frames = []
    for index in range(count):
        if multi:
            pos = _functional(ds, index, "PlanePositionSequence", "ImagePositionPatient")
            ori = _functional(ds, index, "PlaneOrientationSequence", "ImageOrientationPatient")
            spacing = _functional(ds, index, "PixelMeasuresSequence", "PixelSpacing")
            thick = _functional(ds, index, "PixelMeasuresSequence", "SpacingBetweenSlices")
            thick = thick or _functional(ds, index, "PixelMeasuresSequence", "SliceThickness")
            slope = _functional(ds, index, "PixelValueTransformationSequence", "RescaleSlope")
            intercept = _functional(ds, index, "PixelValueTransformationSequence", "RescaleIntercept")
            pos = pos if pos is not None else ds.get("ImagePositionPatient")
            ori = ori if ori is not None else ds.get("ImageOrientationPatient")
            spacing = spacing if spacing is not None else ds.get("PixelSpacing")
            slope = slope if slope is not None else ds.get("RescaleSlope")
            intercept = intercept if intercept is not None else ds.get("RescaleIntercept")
        else:
            pos, ori, spacing = (
                ds.get("ImagePositionPatient"),
                ds.get("ImageOrientationPatient"),
                ds.get("PixelSpacing"),
            )
            thick = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")
            slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
        slope = _finite(slope, "RescaleSlope", path, 1.0)
        if slope == 0:
            raise InputError(
                "RescaleSlope is 0: every pixel would have the same value", shown(path), tip="fix RescaleSlope"
            )
        frames.append(
            DicomFrame(
                path=path,
                header=ds,
                frame=index if multi else None,
                position=_vector(pos, 3, "ImagePositionPatient", path),
                orientation=_orientation(ori, path),
                spacing=_spacing(spacing, path),
                slope=slope,
                intercept=_finite(intercept, "RescaleIntercept", path, 0.0),
                thickness=_thickness(thick),
            )
        )
    return frames
