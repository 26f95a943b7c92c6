"""Medical image I/O: DICOM series and NIfTI volumes in, derived series and volumes out.

The library API used by the CLI::

    from medenc.io import read_image, read_mask, write_like
    from medenc.study.encrypt import encrypt_volume
    from medenc.core.slices import largest_tumor_slice

    volume = read_image("study/T1")                         # DICOM folder, file, or .nii(.gz)
    mask = read_mask("tumor.nii.gz", like=volume)            # bool (Z, Y, X) on the same grid
    k = largest_tumor_slice(mask)
    voxels = encrypt_volume(volume, encryptor, "glioma", slices=[k], preprocess=preprocess)
    write_like(volume, voxels, "out/T1-encrypted", slices=[k])

See ``docs/io.md`` for the conventions (canonical LPS axial order, native values, what a derived
DICOM instance changes).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medenc.io.dicom_read import DicomFrame, SkippedFilesWarning, UnevenSpacingWarning, read_dicom
from medenc.io.dicom_write import DERIVED_CHANGES, write_dicom
from medenc.io.mask import read_mask
from medenc.io.nifti import is_nifti, read_nifti, write_nifti
from medenc.io.volume import PixelCodec, StoredLayout, Volume

__all__ = [
    "DERIVED_CHANGES",
    "DicomFrame",
    "PixelCodec",
    "SkippedFilesWarning",
    "StoredLayout",
    "UnevenSpacingWarning",
    "Volume",
    "read_image",
    "read_mask",
    "write_like",
]


def read_image(
    path: str | Path | Sequence[str | Path],
    *,
    series: str | None = None,
    volume: int | None = None,
    orientation: str = "auto",
    on_uneven_spacing: str = "warn",
    max_voxels: int | None = None,
) -> Volume:
    """Read a DICOM series (folder, file, file list) or a NIfTI file into a :class:`Volume`.

    Args:
        path: DICOM folder / file / list of files, or a ``.nii`` / ``.nii.gz`` file.
        series: DICOM ``SeriesInstanceUID`` when several series are present.
        volume: NIfTI: index of the volume of a 4D image.
        orientation: ``"auto"`` (canonical axial, except that a single non-axial image stays in its
            plane), ``"axial"`` or ``"stored"``.
        on_uneven_spacing: DICOM: ``"warn"`` or ``"error"`` on unevenly spaced slices.
        max_voxels: refuse images declaring more voxels, checked before decoding (default: the
            environment variable ``MEDENC_MAX_VOXELS``, else :data:`medenc.io.limits.DEFAULT_MAX_VOXELS`).

    Raises:
        InputError: the file cannot be used (the message names it and says why).
    """
    options = {"series": series, "orientation": orientation, "on_uneven_spacing": on_uneven_spacing}
    if not isinstance(path, (str, Path)):
        return read_dicom(path, **options, max_voxels=max_voxels)  # type: ignore[arg-type]
    if is_nifti(path):
        return read_nifti(path, volume=volume, orientation=orientation, max_voxels=max_voxels)
    return read_dicom(path, **options, max_voxels=max_voxels)  # type: ignore[arg-type]


def write_like(
    volume: Volume,
    native: np.ndarray,
    out: str | Path,
    *,
    slices: Sequence[int] | None = None,
    stored_slices: Sequence[int] | None = None,
    force: bool = False,
    series_description: str | None = None,
    series_number: int | None = None,
    keep_private: Sequence[str | int | tuple[int, int]] | None = None,
    uid_root: str | None = None,
) -> list[Path]:
    """Write new voxels like the source: a derived DICOM series (folder) or a NIfTI file.

    Args:
        volume: the source volume.
        native: new canonical native voxels (e.g. from :func:`encrypt_volume`).
        out: DICOM: a new folder; NIfTI: a ``.nii`` / ``.nii.gz`` file.
        slices: canonical axial slices to write (default all); DICOM writes the instances (frames)
            holding them, NIfTI the block of stored slices holding them.
        stored_slices: the same in stored slice indices (overrides ``slices``).
        force: replace an existing output.
        series_description: DICOM SeriesDescription of the derived series.
        series_number: DICOM SeriesNumber of the derived series.
        keep_private: DICOM: private tags to keep (``[(0x0029, 0x1010)]`` or ``["0029,1010"]``); every
            other private element is removed (see ``docs/io.md``). Ignored for NIfTI.
        uid_root: DICOM: the organisation's UID root for the new UIDs (see :mod:`medenc.io.uids`).

    Returns:
        The written files.

    Shape:
        native: (Z, Y, X) like ``volume.voxels``.
    """
    if stored_slices is None and slices is not None:
        stored_slices = volume.layout.stored_slices_of(np.atleast_1d(np.asarray(slices))).tolist()
    if volume.format == "dicom":
        return write_dicom(
            volume,
            native,
            out,
            stored_slices=stored_slices,
            series_description=series_description,
            series_number=series_number,
            force=force,
            keep_private=keep_private,
            uid_root=uid_root,
        )
    return write_nifti(volume, native, out, stored_slices=stored_slices, force=force)
