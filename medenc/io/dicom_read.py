"""Read a DICOM series (a folder, a file list, one file, or one multi-frame file) into a :class:`Volume`.

Slices are sorted by their position along the slice normal (``ImagePositionPatient`` projected on
the cross product of the ``ImageOrientationPatient`` vectors), never by ``InstanceNumber`` alone.
Each stored slice keeps its source header (without the pixel data) so that the writer can derive a
new series from it.
"""

from __future__ import annotations

import gzip
import io
import logging
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medenc.errors import InputError
from medenc.io.volume import PixelCodec, StoredLayout, Volume, canonical_affine, orientation_for

logger = logging.getLogger(__name__)

#: modalities that are never image series (skipped when grouping a folder)
NON_IMAGE_MODALITIES = frozenset({"SEG", "RTSTRUCT", "RTPLAN", "RTRECORD", "SR", "PR", "KO", "REG", "DOC"})
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class UnevenSpacingWarning(UserWarning):
    """The slices of a series are not evenly spaced (missing slices, or a gap)."""


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


def _dcmread(path: Path, *, stop_before_pixels: bool = False) -> Any:
    """Read one file as DICOM (gzip-compressed files too); a clear error if it is not DICOM."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with open(path, "rb") as handle:
            data: Any = handle
            if handle.read(2) == b"\x1f\x8b":
                handle.seek(0)
                data = io.BytesIO(gzip.decompress(handle.read()))
            handle.seek(0)
            try:
                return pydicom.dcmread(data, stop_before_pixels=stop_before_pixels)
            except InvalidDicomError:
                data.seek(0)
                ds = pydicom.dcmread(data, stop_before_pixels=stop_before_pixels, force=True)
                if "SOPClassUID" not in ds and "PixelData" not in ds:
                    raise
                return ds
    except InvalidDicomError as exc:
        raise InputError("not a DICOM file", path, tip="pass a DICOM file or folder, or a .nii/.nii.gz") from exc
    except (EOFError, OSError, ValueError, KeyError, TypeError, gzip.BadGzipFile) as exc:
        raise InputError(f"truncated or damaged DICOM file ({exc})", path) from exc


def _number(value: Any, default: float | None) -> float | None:
    try:
        return float(value) if value is not None and value != "" else default
    except (TypeError, ValueError):
        return default


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


def _frames_of(path: Path, ds: Any) -> list[DicomFrame]:
    """The stored slices one dataset holds, with their geometry and rescale."""
    count = int(_number(ds.get("NumberOfFrames"), 1) or 1)
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
        frames.append(
            DicomFrame(
                path=path,
                header=ds,
                frame=index if multi else None,
                position=None if pos is None or len(pos) != 3 else np.array([float(v) for v in pos]),
                orientation=None if ori is None or len(ori) != 6 else np.array([float(v) for v in ori]),
                spacing=None if spacing is None or len(spacing) != 2 else (float(spacing[0]), float(spacing[1])),
                slope=_number(slope, 1.0) or 1.0,
                intercept=_number(intercept, 0.0) or 0.0,
                thickness=_number(thick, None),
            )
        )
    return frames


def _check_image(path: Path, ds: Any) -> None:
    """Raise a clear error for datasets medenc cannot treat as a grayscale image."""
    if "PixelData" not in ds:
        extra = " (float pixel data is not supported)" if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds else ""
        hint = " (the file may be truncated)" if ("Rows" in ds or len(ds) == 0) and not extra else ""
        raise InputError(f"no PixelData: this DICOM object is not an image{extra}{hint}", path)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if photometric not in MONOCHROME or samples != 1:
        raise InputError(
            f"unsupported photometric interpretation {photometric or 'missing'} with {samples} sample(s) per "
            "pixel; medenc encrypts grayscale MR/CT images",
            path,
            tip="convert colour or palette images to grayscale MONOCHROME2 first (e.g. dcmj2pnm/gdcmconv), "
            "or pick the grayscale series",
        )
    if int(ds.get("BitsAllocated", 0)) not in (8, 16, 32):
        raise InputError(f"unsupported BitsAllocated {ds.get('BitsAllocated')} (expected 8, 16 or 32)", path)
    if "ModalityLUTSequence" in ds:
        warnings.warn(f"{path}: a Modality LUT is present and ignored; native values = stored values", stacklevel=3)


def _decode(path: Path, ds: Any) -> np.ndarray:
    """The stored pixel values as ``(frames, rows, columns)``."""
    try:
        array = ds.pixel_array
    except Exception as exc:  # decoders raise many types; the user gets one clear line
        syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        name = getattr(syntax, "name", str(syntax))
        raise InputError(
            f"cannot decode the pixel data ({name}): {exc}",
            path,
            tip="the file may be truncated; compressed data needs pylibjpeg, pylibjpeg-openjpeg, pyjpegls, python-gdcm",
        ) from exc
    rows, columns = int(ds.Rows), int(ds.Columns)
    return np.asarray(array).reshape(-1, rows, columns)


def list_series(paths: Sequence[Path]) -> dict[str, list[Path]]:
    """Group DICOM image files by ``SeriesInstanceUID`` (non-DICOM and non-image files are skipped)."""
    series: dict[str, list[Path]] = defaultdict(list)
    skipped = 0
    for path in paths:
        try:
            ds = _dcmread(path, stop_before_pixels=True)
        except InputError:
            skipped += 1
            continue
        meta = getattr(ds, "file_meta", None)
        if meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == DICOMDIR_SOP_CLASS:
            continue
        if str(ds.get("Modality", "")).upper() in NON_IMAGE_MODALITIES or "Rows" not in ds:
            continue
        series[str(ds.get("SeriesInstanceUID", f"no-series-uid:{path}"))].append(path)
    if skipped:
        logger.debug("skipped %d non-DICOM files", skipped)
    return dict(series)


def _describe(series: dict[str, list[Path]]) -> str:
    return "; ".join(f"{uid} ({len(files)} files)" for uid, files in sorted(series.items(), key=lambda kv: -len(kv[1])))


def select_series(source: Path, files: Sequence[Path], series: str | None, folder: bool) -> list[Path]:
    """The files of one series: ``series`` (a UID), the only one, or the largest (folders only)."""
    groups = list_series(files)
    if not groups:
        raise InputError("no DICOM image found", source, tip="pass a folder of DICOM files or a NIfTI file")
    if series is not None:
        if series not in groups:
            raise InputError(f"series {series} is not here; found: {_describe(groups)}", source)
        return sorted(groups[series])
    if len(groups) == 1:
        return sorted(next(iter(groups.values())))
    sizes = sorted((len(v) for v in groups.values()), reverse=True)
    if not folder or sizes[0] == sizes[1]:
        raise InputError(
            f"mixed series and no choice: {_describe(groups)}",
            source,
            tip="pass series=<SeriesInstanceUID> (CLI: --series)",
        )
    uid = max(groups, key=lambda k: len(groups[k]))
    logger.warning("%s holds %d series (%s); reading the largest, %s", source, len(groups), _describe(groups), uid)
    return sorted(groups[uid])


def _sort_frames(source: Path, frames: list[DicomFrame], on_uneven_spacing: str) -> tuple[list[DicomFrame], np.ndarray]:
    """Frames sorted along the slice normal, and the stored grid's LPS affine in (x, y, z) order."""
    first = frames[0]
    geometric = all(f.position is not None and f.orientation is not None for f in frames)
    spacing = first.spacing or (1.0, 1.0)
    if not geometric:
        if len(frames) > 1:
            logger.warning("%s: no ImagePositionPatient/ImageOrientationPatient; slices kept in file order", source)
        frames = sorted(frames, key=lambda f: (_number(f.header.get("InstanceNumber"), 0), f.frame or 0))
        affine = np.diag([spacing[1], spacing[0], first.thickness or 1.0, 1.0])
        return frames, affine
    orientation = first.orientation
    for f in frames:
        if not np.allclose(f.orientation, orientation, atol=1e-3):
            raise InputError(
                "the images of this series have different orientations (a localizer or radial series), "
                "they do not form one volume",
                f.path,
                tip="read the files one by one, or pick another series",
            )
    row, col = orientation[:3], orientation[3:]
    normal = np.cross(row, col)
    frames = sorted(frames, key=lambda f: float(f.position @ normal))
    depth = np.array([float(f.position @ normal) for f in frames])
    if len(frames) > 1:
        gaps = np.diff(depth)
        if gaps.min() < 1e-3:
            dup = frames[int(np.argmin(gaps)) + 1]
            raise InputError(
                "two images share one slice position (several echoes, phases or stacks in one series)",
                dup.path,
                tip="split the series or read the files one by one",
            )
        median = float(np.median(gaps))
        if np.abs(gaps - median).max() > max(1e-3, 0.01 * median):
            message = (
                f"uneven slice spacing (from {gaps.min():.4g} to {gaps.max():.4g} mm): missing slices or a gap; "
                "the volume's affine uses the mean spacing, the written files keep each slice's own position"
            )
            if on_uneven_spacing == "error":
                raise InputError(message, source, tip="pass on_uneven_spacing='warn' to read it anyway")
            warnings.warn(f"{source}: {message}", UnevenSpacingWarning, stacklevel=3)
        step = (frames[-1].position - frames[0].position) / (len(frames) - 1)
    else:
        step = normal * (first.thickness or 1.0)
    affine = np.eye(4)
    affine[:3, 0] = row * spacing[1]
    affine[:3, 1] = col * spacing[0]
    affine[:3, 2] = step
    affine[:3, 3] = frames[0].position
    return frames, affine


def _check_consistent(frames: list[DicomFrame]) -> None:
    keys = ("Rows", "Columns", "BitsAllocated", "PixelRepresentation", "PhotometricInterpretation", "SamplesPerPixel")
    reference = frames[0]
    want = [reference.header.get(k) for k in keys]
    for f in frames[1:]:
        got = [f.header.get(k) for k in keys]
        if got != want:
            bad = next(k for k, a, b in zip(keys, want, got) if a != b)
            raise InputError(
                f"{bad} differs within the series ({reference.header.get(bad)} in {reference.path.name})", f.path
            )
        if f.spacing and reference.spacing and not np.allclose(f.spacing, reference.spacing, rtol=1e-4, atol=1e-4):
            raise InputError(f"PixelSpacing differs within the series ({reference.spacing} vs {f.spacing})", f.path)


def _codec(ds: Any, frames: list[DicomFrame], stored: np.ndarray) -> PixelCodec:
    bits_allocated = int(ds.BitsAllocated)
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    dtype = np.dtype(f"{'i' if signed else 'u'}{bits_allocated // 8}")
    bits = int(ds.get("BitsStored", bits_allocated) or bits_allocated)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if stored.size:
        observed_lo, observed_hi = float(stored.min()), float(stored.max())
        if observed_lo < lo or observed_hi > hi:
            logger.warning("%s: stored values exceed BitsStored=%d; using the observed range", frames[0].path, bits)
            info = np.iinfo(dtype)
            lo, hi = max(min(lo, observed_lo), info.min), min(max(hi, observed_hi), info.max)
    return PixelCodec(
        dtype=dtype,
        lo=float(lo),
        hi=float(hi),
        slope=np.array([f.slope for f in frames], dtype=np.float64),
        intercept=np.array([f.intercept for f in frames], dtype=np.float64),
    )


def read_dicom(
    path: str | Path | Sequence[str | Path],
    *,
    series: str | None = None,
    orientation: str = "auto",
    on_uneven_spacing: str = "warn",
) -> Volume:
    """Read a DICOM series into a :class:`Volume`.

    Args:
        path: a folder (searched recursively), one file (single- or multi-frame, may be gzipped) or a
            list of files.
        series: ``SeriesInstanceUID`` to read when several series are present. A folder holding several
            defaults to the one with the most files (logged); a tie or a file list of mixed series is an
            error.
        orientation: ``"axial"`` (canonical LPS), ``"stored"`` (slices as stored, sorted along their
            normal) or ``"auto"`` (axial, except a single non-axial image stays in its plane).
        on_uneven_spacing: ``"warn"`` (:class:`UnevenSpacingWarning`) or ``"error"``.

    Returns:
        The volume with per-slice source headers for writing.

    Raises:
        InputError: not DICOM, truncated, no pixel data, unsupported photometric interpretation, mixed
            series, inconsistent geometry.
    """
    if on_uneven_spacing not in ("warn", "error"):
        raise ValueError(f"on_uneven_spacing must be 'warn' or 'error', got {on_uneven_spacing!r}")
    if isinstance(path, (str, Path)):
        source = Path(path)
        if source.is_dir():
            candidates = sorted(p for p in source.rglob("*") if p.is_file() and not p.name.startswith("."))
            files = select_series(source, candidates, series, folder=True)
        elif source.is_file():
            files = [source]
        else:
            raise InputError("no such file or folder", source)
    else:
        files = [Path(p) for p in path]
        if not files:
            raise ValueError("no files given")
        source = files[0].parent
        files = select_series(source, files, series, folder=False) if len(files) > 1 else files

    frames: list[DicomFrame] = []
    pixels: dict[tuple[Path, int | None], np.ndarray] = {}
    for file in files:
        ds = _dcmread(file)
        _check_image(file, ds)
        array = _decode(file, ds)
        del ds.PixelData  # the header is kept for writing; the pixels live in the volume
        for frame in _frames_of(file, ds):
            frames.append(frame)
            pixels[(file, frame.frame)] = array[frame.frame or 0]
    _check_consistent(frames)
    frames, affine_lps = _sort_frames(source, frames, on_uneven_spacing)
    stored = np.stack([pixels[(f.path, f.frame)] for f in frames])
    header = frames[0].header
    codec = _codec(header, frames, stored)
    dtype = np.float64 if codec.dtype.itemsize >= 4 else np.float32
    native = codec.to_native(stored, dtype=dtype)
    affine_ras = LPS_TO_RAS @ affine_lps
    ornt = orientation_for(affine_ras, orientation, len(frames))
    layout = StoredLayout(shape=tuple(stored.shape), ornt=ornt)  # type: ignore[arg-type]
    return Volume(
        voxels=np.ascontiguousarray(layout.to_canonical(native)),
        affine=canonical_affine(affine_ras, layout.ornt, layout.shape),
        source=source if len(files) > 1 else files[0],
        format="dicom",
        codec=codec,
        layout=layout,
        frames=tuple(frames),
        info={
            "series_uid": str(header.get("SeriesInstanceUID", "")),
            "series_description": str(header.get("SeriesDescription", "")),
            "study_uid": str(header.get("StudyInstanceUID", "")),
            "modality": str(header.get("Modality", "")),
            "files": [str(f) for f in files],
        },
    )
