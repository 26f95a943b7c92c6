"""``medenc prepare``: studies with tumor masks -> a data set of largest-tumor axial slices.

Each study (DICOM series or NIfTI volume) and its mask are read, the axial slice with the most tumor
voxels is taken, and written as a 2D NIfTI (``(X, Y, 1)``) whose affine places it where it lay in the
study. Values are the native ones (rescale slope/intercept applied); integer-valued slices that fit
stay 16-bit integers, others are float32. With ``size`` the slice is resampled in-plane (bilinear) to
``size x size`` over the same field of view, and the affine adjusted.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medenc.atomic import atomic_directory
from medenc.errors import InputError, MedencError
from medenc.files import check_name, check_output, manifest_inputs, safe_name
from medenc.io.tables import read_table

if TYPE_CHECKING:  # pragma: no cover
    from medenc.io import Volume

STUDY_COLUMNS = ("case_id", "label", "split", "image", "mask")


@dataclass
class PrepareResult:
    """What :func:`prepare_dataset` did.

    Attributes:
        manifest: the written ``manifest.csv`` (None if nothing was written).
        written: number of slices written.
        failed: ``(case_id, reason)`` of every study that failed.
    """

    manifest: Path | None
    written: int
    failed: list[tuple[str, str]] = field(default_factory=list)


def read_studies(path: Path) -> list[dict[str, str]]:
    """Rows of a studies manifest (``case_id,label,split,image,mask``), paths resolved.

    Raises:
        InputError: unreadable file, missing columns or empty fields.
    """
    rows = []
    for record in read_table(path, required=STUDY_COLUMNS, what="studies manifest",
                             tip="`medenc synth` writes such a manifest"):
        resolved = dict(record.values)
        check_name(resolved["case_id"], path, what=f"line {record.line}: case id")
        for column in ("image", "mask"):
            resolved[column] = str((path.parent / resolved[column]).resolve())
        rows.append(resolved)
    return rows


def largest_tumor_slice_of(image: str | Path, mask: str | Path, *, series: str | None = None) -> tuple[Any, int]:
    """Read a study and its mask; return the volume and its largest-tumor canonical axial index."""
    from medenc.core.slices import largest_tumor_slice
    from medenc.io import read_image, read_mask

    volume = read_image(image, series=series)
    tumor = read_mask(mask, like=volume)
    try:
        return volume, largest_tumor_slice(tumor)
    except InputError as error:
        raise InputError(error.problem, mask, error.tip) from None


def slice_nifti_bytes(volume: Volume, index: int, size: int | None = None) -> bytes:
    """A canonical axial slice of ``volume`` as 2D NIfTI bytes, its affine placing it in the study.

    Shape:
        volume.voxels: (Z, Y, X); the file holds (X, Y, 1), or (size, size, 1) when resampled.
    """
    import nibabel

    plane = np.asarray(volume.voxels[index], dtype=np.float64).T  # (X, Y) NIfTI order
    affine = volume.affine @ _translate(0, 0, index)
    if size is not None and plane.shape != (size, size):
        plane, affine = _resample(plane, affine, size)
    rounded = np.round(plane)
    if np.allclose(plane, rounded, atol=1e-4) and rounded.min() >= -32768 and rounded.max() <= 32767:
        data = rounded.astype(np.int16)
    else:
        data = plane.astype(np.float32)
    image = nibabel.Nifti1Image(data[:, :, None], affine)
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return gzip.compress(image.to_bytes(), mtime=0)


def _translate(x: float, y: float, z: float) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, 3] = (x, y, z)
    return matrix


def _resample(plane: np.ndarray, affine: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear in-plane resampling to ``size x size`` over the same field of view."""
    from scipy import ndimage

    zoom = (size / plane.shape[0], size / plane.shape[1])
    resampled = ndimage.zoom(plane, zoom, order=1, mode="nearest", grid_mode=True)
    scale = np.diag([1 / zoom[0], 1 / zoom[1], 1.0, 1.0])
    # grid_mode keeps the outer pixel edges: new index i sits at old index i / z + (1 / z - 1) / 2
    shift = _translate((1 / zoom[0] - 1) / 2, (1 / zoom[1] - 1) / 2, 0)
    return resampled, affine @ shift @ scale


def prepare_dataset(
    studies: str | Path,
    out: str | Path,
    *,
    size: int | None = None,
    skip_bad: bool = False,
    force: bool = False,
    on_case: Callable[[str, str | None], None] | None = None,
) -> PrepareResult:
    """Write the largest-tumor slice of every study and ``out/manifest.csv``.

    Args:
        studies: a studies manifest (``case_id,label,split,image,mask``).
        out: the data set folder to create (atomically: nothing appears unless it completes).
        size: resample slices in-plane to ``size x size``; None keeps the native grid.
        skip_bad: write the good studies even if some fail (their reasons are returned).
        force: replace an existing ``out``.
        on_case: called after each study with its case id and the failure reason (or None).

    Returns:
        The manifest path, the number written and the failures.

    Raises:
        InputError: a bad studies manifest; or, without ``skip_bad``, any failing study (listed).
    """
    studies = Path(studies)
    rows = read_studies(studies)
    inputs = [*manifest_inputs(studies), *(row[c] for row in rows for c in ("image", "mask"))]
    check_output(out, inputs=inputs, force=force, what="output folder")
    if size is not None and size < 8:
        raise InputError(f"--size must be at least 8 pixels, got {size}")
    failed: list[tuple[str, str]] = []
    outputs: list[tuple[dict[str, str], bytes]] = []
    for row in rows:
        reason = None
        try:
            volume, index = largest_tumor_slice_of(row["image"], row["mask"])
            outputs.append((row, slice_nifti_bytes(volume, index, size)))
        except MedencError as error:
            reason = str(error)
            failed.append((row["case_id"], reason))
        if on_case is not None:
            on_case(row["case_id"], reason)
    if failed and not skip_bad:
        listing = "; ".join(f"{case}: {reason}" for case, reason in failed[:5])
        more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
        raise InputError(
            f"{len(failed)} of {len(rows)} studies failed: {listing}{more}",
            studies,
            tip="fix them, or pass --skip-bad to prepare the others",
        )
    if not outputs:
        return PrepareResult(None, 0, failed)
    with atomic_directory(out, force=force, inputs=inputs) as tmp:
        (tmp / "slices").mkdir()
        table = io.StringIO()
        writer = csv.writer(table, lineterminator="\n")
        writer.writerow(("case_id", "label", "split", "image"))
        for row, data in outputs:
            name = f"slices/{safe_name(row['case_id'])}.nii.gz"
            (tmp / name).write_bytes(data)
            writer.writerow((row["case_id"], row["label"], row["split"], name))
        (tmp / "manifest.csv").write_text(table.getvalue(), encoding="utf-8")
    return PrepareResult(Path(out) / "manifest.csv", len(outputs), failed)
