"""Read a DICOM series (a folder, a file list, one file, or one multi-frame file) into a :class:`Volume`.

Slices are sorted by their position along the slice normal (``ImagePositionPatient`` projected on
the cross product of the ``ImageOrientationPatient`` vectors), never by ``InstanceNumber`` alone.
Each stored slice keeps its source header (without the pixel data) so that the writer can derive a
new series from it.
"""

from __future__ import annotations

import io
import logging
import struct
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medenc.errors import InputError
from medenc.io.dicom_header import DicomFrame, as_number, frames_of
from medenc.io.dicom_pixels import check_image, check_pixel_data, decode
from medenc.io.limits import check_declared, gunzip_limited, shown
from medenc.io.limits import max_voxels as _max_voxels
from medenc.io.modality_lut import ModalityLUT, modality_lut
from medenc.io.volume import PixelCodec, StoredLayout, Volume, canonical_affine, orientation_for

logger = logging.getLogger(__name__)

#: modalities that are never image series (skipped when grouping a folder)
NON_IMAGE_MODALITIES = frozenset({"SEG", "RTSTRUCT", "RTPLAN", "RTRECORD", "SR", "PR", "KO", "REG", "DOC"})
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class UnevenSpacingWarning(UserWarning):
    """The slices of a series are not evenly spaced (missing slices, or a gap)."""


class SkippedFilesWarning(UserWarning):
    """Files of a folder were skipped because they are not DICOM (or cannot be read as DICOM)."""


def _dcmread(path: Path, *, stop_before_pixels: bool = False, limit: int | None = None) -> Any:
    """Read one file as DICOM (gzip-compressed files too); a clear error if it is not DICOM."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with open(path, "rb") as handle:
            data: Any = handle
            if handle.read(2) == b"\x1f\x8b":
                handle.seek(0)
                data = io.BytesIO(gunzip_limited(handle.read(), path, _max_voxels(limit)))
            handle.seek(0)
            try:
                ds = pydicom.dcmread(data, stop_before_pixels=stop_before_pixels)
            except InvalidDicomError:
                data.seek(0)
                ds = pydicom.dcmread(data, stop_before_pixels=stop_before_pixels, force=True)
                if "SOPClassUID" not in ds and "PixelData" not in ds:
                    raise
            for _ in ds:  # parse every element now, so that a damaged one fails here, with a clear error
                pass
            return ds
    except InvalidDicomError as exc:
        raise InputError("not a DICOM file", shown(path), tip="pass a DICOM file or folder, or a .nii/.nii.gz") from exc
    except InputError:
        raise
    except struct.error as exc:  # a few bytes that are not DICOM: pydicom's forced read runs out of data
        raise InputError(
            "not a DICOM file (too short or no DICOM header)",
            shown(path),
            tip="pass a DICOM file or folder, or a .nii/.nii.gz",
        ) from exc
    except Exception as exc:  # pydicom raises many types on damaged headers (EOFError, ValueError, NotImplemented...)
        raise InputError(f"truncated or damaged DICOM header ({' '.join(str(exc).split())})", shown(path)) from exc


def _has_dicom_magic(path: Path) -> bool:
    """Whether a file carries the DICOM Part 10 marker ``DICM`` after its 128-byte preamble."""
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def list_series(paths: Sequence[Path], limit: int | None = None) -> tuple[dict[str, list[Path]], list[Path]]:
    """Group DICOM image files by ``SeriesInstanceUID``; non-image objects are left out.

    Returns:
        The series (UID -> files) and the files skipped as not DICOM.

    Raises:
        InputError: a file marked as DICOM (``DICM``) whose header is damaged, an image header cut
            before Rows, or a file over the size limit: those are refused, not skipped, since they
            may belong to the series.
    """
    series: dict[str, list[Path]] = defaultdict(list)
    skipped: list[Path] = []
    for path in paths:
        try:
            ds = _dcmread(path, stop_before_pixels=True, limit=limit)
        except InputError as exc:
            if _has_dicom_magic(path) or "limit" in exc.problem:
                raise
            skipped.append(path)
            continue
        meta = getattr(ds, "file_meta", None)
        if meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == DICOMDIR_SOP_CLASS:
            continue
        sop = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta is not None else None)
        if "Rows" not in ds and sop is not None and "Image Storage" in getattr(sop, "name", ""):
            raise InputError(f"truncated: a {sop.name} header that ends before Rows and the pixel data", shown(path))
        if str(ds.get("Modality", "")).upper() in NON_IMAGE_MODALITIES or "Rows" not in ds:
            continue
        series[str(ds.get("SeriesInstanceUID", f"no-series-uid:{path}"))].append(path)
    return dict(series), skipped


def _names(paths: Sequence[Path], source: Path, most: int = 5) -> str:
    def name(path: Path) -> str:
        try:
            return str(shown(path.relative_to(source)))
        except ValueError:
            return str(shown(path))

    text = ", ".join(name(p) for p in paths[:most])
    return text + (f" and {len(paths) - most} more" if len(paths) > most else "")


def _describe(series: dict[str, list[Path]]) -> str:
    return "; ".join(f"{uid} ({len(files)} files)" for uid, files in sorted(series.items(), key=lambda kv: -len(kv[1])))


def select_series(
    source: Path, files: Sequence[Path], series: str | None, folder: bool, limit: int | None = None
) -> list[Path]:
    """The files of one series: ``series`` (a UID), the only one, or the largest (folders only)."""
    groups, skipped = list_series(files, limit)
    if not groups:
        what = f"; skipped {len(skipped)} non-DICOM file(s): {_names(skipped, source)}" if skipped else ""
        tip = "pass a folder of DICOM files or a NIfTI file"
        raise InputError(f"no DICOM image found{what}", shown(source), tip=tip)
    if skipped:
        warnings.warn(
            f"{shown(source)}: skipped {len(skipped)} file(s) that are not DICOM: {_names(skipped, source)}",
            SkippedFilesWarning,
            stacklevel=3,
        )
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
    placed = [f.position is not None and f.orientation is not None for f in frames]
    geometric = all(placed)
    spacing = first.spacing or (1.0, 1.0)
    if any(placed) and not geometric:
        lost = [f for f, ok in zip(frames, placed) if not ok]
        raise InputError(
            f"{len(lost)} of {len(frames)} images have no ImagePositionPatient/ImageOrientationPatient, so the "
            "series cannot be ordered by position",
            shown(lost[0].path),
            tip="remove the images without geometry from the folder, or pass the files to read",
        )
    if not geometric:
        if len(frames) > 1:
            logger.warning("%s: no ImagePositionPatient/ImageOrientationPatient; slices kept in file order", source)
        frames = sorted(frames, key=lambda f: (as_number(f.header.get("InstanceNumber"), 0), f.frame or 0))
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
    owners: dict[str, Path] = {}
    for f in frames:
        uid = str(f.header.get("SOPInstanceUID", ""))
        if uid and owners.setdefault(uid, f.path) != f.path:
            raise InputError(
                f"SOPInstanceUID {uid} is also the UID of {shown(owners[uid]).name}: two files claim to be one "
                "image (a copy in the folder?)",
                shown(f.path),
                tip="remove the duplicate file",
            )
    want = [reference.header.get(k) for k in keys]
    for f in frames[1:]:
        got = [f.header.get(k) for k in keys]
        if got != want:
            bad = next(k for k, a, b in zip(keys, want, got) if a != b)
            raise InputError(
                f"{bad} differs within the series ({reference.header.get(bad)} in {shown(reference.path).name})",
                shown(f.path),
            )
        if f.spacing and reference.spacing and not np.allclose(f.spacing, reference.spacing, rtol=1e-4, atol=1e-4):
            raise InputError(
                f"PixelSpacing differs within the series ({reference.spacing} vs {f.spacing})", shown(f.path)
            )


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
    lut = _series_lut(frames)
    return PixelCodec(
        dtype=dtype,
        lo=float(lo),
        hi=float(hi),
        slope=np.ones(len(frames)) if lut else np.array([f.slope for f in frames], dtype=np.float64),
        intercept=np.zeros(len(frames)) if lut else np.array([f.intercept for f in frames], dtype=np.float64),
        lut=lut,
    )


def _series_lut(frames: list[DicomFrame]) -> ModalityLUT | None:
    """The series' Modality LUT (one table for every image), or ``None``; mixed tables are an error."""
    tables: dict[Path, ModalityLUT | None] = {}
    for f in frames:
        if f.path not in tables:
            tables[f.path] = modality_lut(f.path, f.header)
    first_path, first = next(iter(tables.items()))
    for path, lut in tables.items():
        if (first is None) != (lut is None) or (first is not None and not first.same_as(lut)):
            has = "has" if first is not None else "has no"
            raise InputError(
                f"the Modality LUT differs within the series ({shown(first_path).name} {has} one)",
                shown(path),
                tip="read the images with different LUTs as separate series",
            )
    return first


def read_dicom(
    path: str | Path | Sequence[str | Path],
    *,
    series: str | None = None,
    orientation: str = "auto",
    on_uneven_spacing: str = "warn",
    max_voxels: int | None = None,
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
        max_voxels: refuse a series declaring more voxels (default ``$MEDENC_MAX_VOXELS`` or
            :data:`medenc.io.limits.DEFAULT_MAX_VOXELS`), checked before decoding.

    Returns:
        The volume with per-slice source headers for writing.

    Raises:
        InputError: not DICOM, truncated, no pixel data, unsupported photometric interpretation, mixed
            series, inconsistent geometry, damaged pixel data, over the size limit.
    """
    if on_uneven_spacing not in ("warn", "error"):
        raise ValueError(f"on_uneven_spacing must be 'warn' or 'error', got {on_uneven_spacing!r}")
    limit = _max_voxels(max_voxels)
    if isinstance(path, (str, Path)):
        source = Path(path)
        if source.is_dir():
            candidates = sorted(p for p in source.rglob("*") if p.is_file() and not p.name.startswith("."))
            files = select_series(source, candidates, series, folder=True, limit=limit)
        elif source.is_file():
            files = [source]
        else:
            raise InputError("no such file or folder", shown(source))
    else:
        files = [Path(p) for p in path]
        if not files:
            raise ValueError("no files given")
        source = files[0].parent
        files = select_series(source, files, series, folder=False, limit=limit) if len(files) > 1 else files

    frames: list[DicomFrame] = []
    pixels: dict[tuple[Path, int | None], np.ndarray] = {}
    total = 0
    for file in files:
        ds = _dcmread(file, limit=limit)
        check_image(file, ds)
        file_frames = frames_of(file, ds)  # validate the header, then decode
        total += check_pixel_data(file, ds, limit)
        if total > limit:
            check_declared((total,), int(ds.BitsAllocated) // 8, source, limit, what="series (all its files together)")
        array = decode(file, ds)
        del ds.PixelData  # the header is kept for writing; the pixels live in the volume
        for frame in file_frames:
            frames.append(frame)
            pixels[(file, frame.frame)] = array[frame.frame or 0]
    _check_consistent(frames)
    frames, affine_lps = _sort_frames(source, frames, on_uneven_spacing)
    stored = np.stack([pixels[(f.path, f.frame)] for f in frames])
    header = frames[0].header
    codec = _codec(header, frames, stored)
    dtype = np.float64 if codec.dtype.itemsize >= 4 else np.float32
    native = codec.to_native(stored, dtype=dtype)
    codec = codec.with_floor(native)
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
