"""Radiological display orientation of a 2D slice, from its own affine.

A DICOM viewer shows an axial image with the patient's anterior at the top and the patient's right on the
left of the screen (radiological convention); a coronal image with the head at the top and the patient's
right on the left; a sagittal image with the head at the top and anterior on the left. A slice array as
stored in a NIfTI file follows none of this (``medenc prepare`` writes ``(X, Y)``: rows run from right to
left), so every packet image goes through :func:`display_geometry`: the plane is the one its normal is
closest to, and the array is transposed and flipped (never interpolated) so that screen right and screen
down point as the convention wants. The same geometry gives the orientation letters of the viewer and the
DICOM attributes (Patient Orientation, Image Orientation (Patient)).

Directions are in DICOM patient coordinates (LPS: +x to the patient's left, +y posterior, +z head).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medenc.errors import InputError

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
#: plane -> (screen right, screen down) in LPS, radiological convention
SCREEN = {
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),  # right: patient left; down: posterior
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),  # right: patient left; down: feet
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),  # right: posterior; down: feet
}
_PLANE_OF_NORMAL = ("sagittal", "coronal", "axial")
#: letters of +x, +y, +z and of -x, -y, -z; viewer letters use S/I, DICOM Patient Orientation H/F
_LETTERS = {"viewer": ("LPS", "RAI"), "dicom": ("LPH", "RAF")}


def direction_letters(vector: np.ndarray, style: str = "viewer", *, tolerance: float = 1e-3) -> str:
    """Anatomical letters of an LPS direction, the largest component first (``"L"``, ``"PL"`` if oblique).

    Args:
        vector: a direction (need not be unit length).
        style: ``"viewer"`` (A/P, R/L, S/I) or ``"dicom"`` (Patient Orientation: A/P, R/L, H/F).
        tolerance: components smaller than this share of the length are left out (numerical noise).
    """
    positive, negative = _LETTERS[style]
    v = np.asarray(vector, dtype=float)
    v = v / np.linalg.norm(v)
    order = np.argsort(-np.abs(v), kind="stable")
    return "".join((positive if v[k] > 0 else negative)[k] for k in order if abs(v[k]) > tolerance)


@dataclass(frozen=True)
class DisplayGeometry:
    """How a stored 2D slice becomes a radiologically oriented screen image.

    Attributes:
        plane: ``axial``, ``coronal`` or ``sagittal`` (the plane the slice normal is closest to).
        transpose: swap the stored axes first (stored axis 1 becomes the screen rows).
        flip_rows: then reverse the rows (top becomes bottom).
        flip_cols: then reverse the columns.
        row_cosines: LPS unit direction along a screen row (increasing column index): DICOM Image
            Orientation (Patient), first three values.
        col_cosines: LPS unit direction down a screen column (increasing row index): the last three.
        spacing: (between rows, between columns) in mm, as DICOM Pixel Spacing.
    """

    plane: str
    transpose: bool
    flip_rows: bool
    flip_cols: bool
    row_cosines: tuple[float, float, float]
    col_cosines: tuple[float, float, float]
    spacing: tuple[float, float]

    def apply(self, stored: np.ndarray) -> np.ndarray:
        """The stored slice as shown on screen (a copy).

        Shape:
            stored: ``(A0, A1)``; result: ``(rows, columns)`` = ``(A1, A0)`` when transposed, else the same.
        """
        view = stored.T if self.transpose else stored
        if self.flip_rows:
            view = view[::-1]
        if self.flip_cols:
            view = view[:, ::-1]
        return np.ascontiguousarray(view)

    @property
    def letters(self) -> tuple[str, str, str, str]:
        """Orientation letters at the top, right, bottom and left edges of the screen."""
        row, col = np.array(self.row_cosines), np.array(self.col_cosines)
        return (direction_letters(-col), direction_letters(row), direction_letters(col), direction_letters(-row))

    @property
    def patient_orientation(self) -> tuple[str, str]:
        """DICOM Patient Orientation (0020,0020): the directions of the rows and of the columns."""
        return direction_letters(np.array(self.row_cosines), "dicom"), direction_letters(
            np.array(self.col_cosines), "dicom"
        )

    def centred_position(self, shape: tuple[int, int]) -> tuple[float, float, float]:
        """An Image Position (Patient) that puts the image's centre at the origin.

        The slice's true position is left out of the reader packets: it is not needed to read one image,
        and it would let a reader match the two versions of a case.
        """
        rows, cols = shape
        row, col = np.array(self.row_cosines), np.array(self.col_cosines)
        corner = -(row * self.spacing[1] * (cols - 1) / 2 + col * self.spacing[0] * (rows - 1) / 2)
        return tuple(float(v) + 0.0 for v in np.round(corner, 6))  # type: ignore[return-value]


def display_geometry(affine: np.ndarray, *, where: object = None) -> DisplayGeometry:
    """The radiological display geometry of a 2D slice whose stored axes 0 and 1 map to RAS by ``affine``.

    Args:
        affine: the NIfTI voxel -> RAS (mm) matrix, ``(4, 4)``; columns 0 and 1 are the in-plane axes.
        where: the file, named in errors.

    Raises:
        InputError: the two in-plane axes are zero or parallel (no orientation can be read).

    Shape:
        affine: ``(4, 4)``.
    """
    affine = np.asarray(affine, dtype=float)
    axes = [_RAS_TO_LPS @ affine[:3, 0], _RAS_TO_LPS @ affine[:3, 1]]
    spacing = [float(np.linalg.norm(a)) for a in axes]
    normal = np.cross(axes[0], axes[1])
    if min(spacing) <= 0 or not np.all(np.isfinite(affine)) or np.linalg.norm(normal) < 1e-6 * spacing[0] * spacing[1]:
        raise InputError("the slice's affine gives no in-plane orientation (zero or parallel axes)", path=where,
                         tip="write the slices with their scanner affine, as `medenc prepare` does")
    unit = [a / s for a, s in zip(axes, spacing, strict=True)]
    plane = _PLANE_OF_NORMAL[int(np.argmax(np.abs(normal)))]
    right, down = (np.array(v) for v in SCREEN[plane])
    # the stored axis closest to screen right becomes the columns (ties: stored axis 1, as stored)
    col_axis = 0 if abs(unit[0] @ right) > abs(unit[1] @ right) else 1
    row_axis = 1 - col_axis
    flip_cols = bool(unit[col_axis] @ right < 0)
    flip_rows = bool(unit[row_axis] @ down < 0)
    row_cosines = -unit[col_axis] if flip_cols else unit[col_axis]
    col_cosines = -unit[row_axis] if flip_rows else unit[row_axis]
    return DisplayGeometry(
        plane=plane,
        transpose=col_axis == 0,
        flip_rows=flip_rows,
        flip_cols=flip_cols,
        row_cosines=tuple(float(v) + 0.0 for v in np.round(row_cosines, 6)),  # type: ignore[arg-type]
        col_cosines=tuple(float(v) + 0.0 for v in np.round(col_cosines, 6)),  # type: ignore[arg-type]
        # NIfTI keeps its affine in float32: round away the 1e-8 noise that would reach DICOM Pixel Spacing
        spacing=(round(spacing[row_axis], 6), round(spacing[col_axis], 6)),
    )
