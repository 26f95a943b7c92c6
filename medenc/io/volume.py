"""The :class:`Volume` every reader returns: native voxels in canonical axial order plus the way back.

Conventions (see ``docs/io.md``):

- ``voxels`` holds *native* values (stored pixel values through the rescale slope/intercept, e.g.
  Hounsfield units for CT) as float, indexed ``(Z, Y, X)`` = (slice, row, column).
- The canonical orientation is ``LPS``: X runs from the patient's right to left, Y from anterior to
  posterior, Z from inferior to superior, so ``voxels[k]`` is an axial slice shown as a DICOM viewer
  shows it (anterior at the top, patient right on the left of the screen).
- ``affine`` maps the canonical index ``(x, y, z, 1)`` (note: column, row, slice) to RAS world
  millimetres, as NIfTI and MONAI do.
- The stored grid (file order, stored dtype, per-slice rescale) is kept in :class:`StoredLayout` and
  :class:`PixelCodec`; only axis flips and permutations separate it from the canonical grid, never
  interpolation, so writing back is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from medenc.io.modality_lut import ModalityLUT

#: canonical axis codes of ``Volume.voxels`` in (x, y, z) order
CANONICAL_AXCODES = ("L", "P", "S")


@dataclass(frozen=True)
class PixelCodec:
    """Stored pixel values <-> native values, per stored slice.

    ``native = stored * slope + intercept``, or through a :class:`ModalityLUT` when the source has one
    (slope and intercept are then 1 and 0); the inverse rounds to the stored dtype and clips to the
    source's *valid range*: the representable stored range ``[lo, hi]``, and in native values never
    below ``floor``, the smallest native value of the source volume. No original voxel is darker than
    ``floor`` (0 for an MR magnitude image, -1024 HU air for most CT), so neither is an encrypted one:
    values below every original's minimum would tell encrypted images apart.

    Attributes:
        dtype: the stored dtype (e.g. ``uint16``, ``int16``, ``float32``).
        lo: smallest representable stored value.
        hi: largest representable stored value.
        slope: rescale slope per stored slice.
        intercept: rescale intercept per stored slice.
        floor: smallest valid native value (``-inf``: none beyond the stored range).
        lut: the Modality LUT (stored -> native) when the source has one, else ``None``.

    Shape:
        slope, intercept: (S,) for S stored slices.
    """

    dtype: np.dtype
    lo: float
    hi: float
    slope: np.ndarray
    intercept: np.ndarray
    floor: float = -np.inf
    lut: ModalityLUT | None = None

    def with_floor(self, native: np.ndarray) -> PixelCodec:
        """This codec with ``floor`` = the smallest finite value of the source's ``native`` voxels."""
        finite = native[np.isfinite(native)] if native.dtype.kind == "f" else native
        return self if finite.size == 0 else replace(self, floor=float(finite.min()))

    @property
    def integer(self) -> bool:
        """Whether stored values are integers (then writing rounds)."""
        return np.dtype(self.dtype).kind in "iu"

    def _per_slice(self, values: np.ndarray, slices: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        slope, intercept = self.slope, self.intercept
        if slices is not None:
            slope, intercept = slope[slices], intercept[slices]
        shape = (-1,) + (1,) * (values.ndim - 1)
        return slope.reshape(shape), intercept.reshape(shape)

    def to_native(self, stored: np.ndarray, slices: np.ndarray | None = None, dtype: Any = np.float32) -> np.ndarray:
        """Native values of stored values (slices along axis 0).

        Shape:
            stored: (S, ...) with S == len(slope) or len(slices); result like stored.
        """
        if self.lut is not None:
            return self.lut.to_native(stored).astype(dtype)
        slope, intercept = self._per_slice(stored, slices)
        return (stored.astype(np.float64) * slope + intercept).astype(dtype)

    def to_stored(self, native: np.ndarray, slices: np.ndarray | None = None) -> np.ndarray:
        """Stored values of native values: inverse rescale, round (integer dtypes), clip, cast.

        Shape:
            native: (S, ...) with S == len(slope) or len(slices); result like native, in ``dtype``.
        """
        if self.lut is not None:
            return self.lut.to_stored(native, self.lo, self.hi, self.floor).astype(self.dtype)
        slope, intercept = self._per_slice(native, slices)
        values = (np.maximum(native.astype(np.float64), self.floor) - intercept) / slope
        if self.integer:
            values = np.rint(values)
            if np.isfinite(self.floor):  # rounding must not cross the floor: the nearest stored value above it
                edge = (self.floor - intercept) / slope
                up, down = np.ceil(edge - 1e-9), np.floor(edge + 1e-9)
                values = np.where(slope > 0, np.maximum(values, up), np.minimum(values, down))
        return np.clip(values, self.lo, self.hi).astype(self.dtype)

    def native_range(self, slices: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per stored slice the valid native range: the stored range ends, sorted, low raised to ``floor``.

        Shape:
            result: two (S,) arrays.
        """
        slope, intercept = self.slope, self.intercept
        if slices is not None:
            slope, intercept = slope[slices], intercept[slices]
        if self.lut is not None:
            low, high = self.lut.native_range(self.lo, self.hi, self.floor)
            return np.full(slope.shape, low), np.full(slope.shape, high)
        a, b = self.lo * slope + intercept, self.hi * slope + intercept
        low, high = np.minimum(a, b), np.maximum(a, b)
        return np.minimum(np.maximum(low, self.floor), high), high

    def unit(self, slices: np.ndarray | None = None) -> np.ndarray:
        """Native size of one stored unit per stored slice (``|slope|``; 0 for float storage).

        With a Modality LUT: the table's mean native step per stored value (:meth:`ModalityLUT.step`).

        Shape:
            result: (S,).
        """
        slope = self.slope if slices is None else self.slope[slices]
        if self.lut is not None:
            return np.full(slope.shape, self.lut.step(self.lo, self.hi))
        return np.abs(slope) if self.integer else np.zeros_like(slope)


@dataclass(frozen=True)
class StoredLayout:
    """How the stored grid (file order) maps onto the canonical grid: flips and a permutation.

    Attributes:
        shape: stored shape ``(S, R, C)`` = (stored slice, row, column).
        ornt: nibabel orientation transform taking the stored array in (x, y, z) = (column, row,
            slice) order to the canonical (x, y, z) array (see ``nibabel.orientations``).
    """

    shape: tuple[int, int, int]
    ornt: np.ndarray

    def to_canonical(self, stored: np.ndarray) -> np.ndarray:
        """Canonical ``(Z, Y, X)`` view of a stored ``(S, R, C)`` array (no copy).

        Shape:
            stored: (S, R, C); result: (Z, Y, X).
        """
        from nibabel.orientations import apply_orientation

        return apply_orientation(stored.transpose(2, 1, 0), self.ornt).transpose(2, 1, 0)

    def to_stored(self, canonical: np.ndarray) -> np.ndarray:
        """Stored ``(S, R, C)`` view of a canonical ``(Z, Y, X)`` array (inverse of :meth:`to_canonical`).

        Shape:
            canonical: (Z, Y, X); result: (S, R, C).
        """
        from nibabel.orientations import apply_orientation

        return apply_orientation(canonical.transpose(2, 1, 0), invert_ornt(self.ornt)).transpose(2, 1, 0)

    @property
    def slice_axis(self) -> int:
        """The canonical axis (0 = Z, 1 = Y, 2 = X) the stored slice axis became."""
        return 2 - int(self.ornt[2, 0])

    def stored_slices_of(self, canonical_slices: np.ndarray) -> np.ndarray:
        """Stored slice indices holding voxels of the given canonical axial slices (sorted, unique)."""
        marker = np.zeros(self.canonical_shape, dtype=bool)
        marker[np.asarray(canonical_slices)] = True
        return np.flatnonzero(self.to_stored(marker).any(axis=(1, 2)))

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        """Shape ``(Z, Y, X)`` of the canonical grid."""
        xyz = (self.shape[2], self.shape[1], self.shape[0])
        out = [0, 0, 0]
        for axis, (target, _) in enumerate(self.ornt):
            out[int(target)] = xyz[axis]
        return out[2], out[1], out[0]


def invert_ornt(ornt: np.ndarray) -> np.ndarray:
    """The nibabel orientation transform undoing ``ornt``."""
    from nibabel.orientations import ornt_transform

    return ornt_transform(np.array([[0, 1], [1, 1], [2, 1]], dtype=float), np.asarray(ornt, dtype=float))


def orientation_for(affine_xyz: np.ndarray, mode: str, slices: int) -> np.ndarray:
    """The nibabel transform from a stored grid with ``affine_xyz`` (RAS) to the grid ``mode`` asks for.

    Args:
        affine_xyz: stored (x, y, z) index -> RAS.
        mode: ``"axial"`` (canonical LPS), ``"stored"`` (identity) or ``"auto"``: canonical, except
            for a single non-axial slice, which stays in its own plane (an axial "volume" of it would
            be a stack of one-voxel-thin slices).
        slices: number of stored slices.
    """
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    if mode not in ("auto", "axial", "stored"):
        raise ValueError(f"orientation must be 'auto', 'axial' or 'stored', got {mode!r}")
    identity = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)
    if mode == "stored":
        return identity
    transform = ornt_transform(io_orientation(affine_xyz), axcodes2ornt(CANONICAL_AXCODES))
    if mode == "auto" and slices == 1 and int(transform[2, 0]) != 2:
        return identity
    return transform


def canonical_affine(affine_xyz: np.ndarray, ornt: np.ndarray, stored_shape: tuple[int, int, int]) -> np.ndarray:
    """Affine of the canonical grid given the stored affine (x, y, z order) and the transform."""
    from nibabel.orientations import inv_ornt_aff

    xyz_shape = (stored_shape[2], stored_shape[1], stored_shape[0])
    return affine_xyz @ inv_ornt_aff(ornt, xyz_shape)


@dataclass
class Volume:
    """An image volume read by :func:`medenc.io.read_image`.

    Attributes:
        voxels: native values in canonical axial order (see the module docstring).
        affine: canonical index ``(x, y, z, 1)`` -> RAS millimetres.
        source: the file or folder read.
        format: ``"dicom"`` or ``"nifti"``.
        codec: stored <-> native conversion, per *stored* slice.
        layout: stored grid <-> canonical grid.
        frames: DICOM only: per stored slice its :class:`medenc.io.dicom_read.DicomFrame` (file,
            header without pixel data, frame number).
        header: NIfTI only: a copy of the source header (affine, qform/sform codes, pixdim, units).
        info: descriptive extras (series UID and description, modality, volume index...).

    Shape:
        voxels: (Z, Y, X).
    """

    voxels: np.ndarray
    affine: np.ndarray
    source: Path
    format: str
    codec: PixelCodec
    layout: StoredLayout
    frames: tuple[Any, ...] = ()
    header: Any = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Canonical ``(Z, Y, X)`` shape."""
        return tuple(self.voxels.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along canonical (Z, Y, X)."""
        zoom = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return float(zoom[2]), float(zoom[1]), float(zoom[0])

    def _stored_field(self, per_slice: np.ndarray, slices: Any) -> np.ndarray:
        """A per-stored-slice quantity broadcast over the grid, canonical, restricted to ``slices``."""
        full = np.broadcast_to(per_slice.reshape(-1, 1, 1), self.layout.shape)
        canonical = self.layout.to_canonical(full)
        if slices is not None:
            canonical = canonical[np.asarray(slices)]
        return np.ascontiguousarray(canonical, dtype=np.float64)

    def bounds(self, slices: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """The source's valid native range, voxel-wise, for PGD's projection (see :class:`PixelCodec`).

        Low: the stored range's low end in native values, raised to the volume's smallest native value
        (``codec.floor``); high: the stored range's high end.

        Args:
            slices: canonical axial indices (default: all).

        Shape:
            result: two arrays like ``voxels[slices]``.
        """
        lo, hi = self.codec.native_range()
        return self._stored_field(lo, slices), self._stored_field(hi, slices)

    def stored_unit(self, slices: Any = None) -> np.ndarray:
        """Native size of one stored unit, voxel-wise (0 for float storage).

        Shape:
            result: like ``voxels[slices]``.
        """
        return self._stored_field(self.codec.unit(), slices)

    def to_stored(self, native: np.ndarray) -> np.ndarray:
        """Stored values (stored order and dtype) of a canonical native array: round, rescale, clip.

        Shape:
            native: (Z, Y, X); result: (S, R, C).
        """
        if tuple(native.shape) != self.shape:
            raise ValueError(f"expected native voxels of shape {self.shape}, got {tuple(native.shape)}")
        return self.codec.to_stored(np.ascontiguousarray(self.layout.to_stored(native)))

    def quantize(self, native: np.ndarray) -> np.ndarray:
        """What a write then re-read would give for ``native``: stored rounding and clipping applied.

        Shape:
            native: (Z, Y, X); result: (Z, Y, X) in ``voxels.dtype``.
        """
        stored = self.to_stored(native)
        return np.ascontiguousarray(self.layout.to_canonical(self.codec.to_native(stored, dtype=self.voxels.dtype)))

    def slice_batch(self, slices: Any) -> np.ndarray:
        """Canonical axial slices as a model batch.

        Shape:
            result: (N, 1, Y, X).
        """
        return np.ascontiguousarray(self.voxels[np.atleast_1d(np.asarray(slices))][:, None])

    def with_slices(self, slices: Any, values: np.ndarray) -> np.ndarray:
        """A copy of ``voxels`` with the given axial slices replaced.

        Shape:
            values: (N, Y, X) or (N, 1, Y, X); result: (Z, Y, X).
        """
        slices = np.atleast_1d(np.asarray(slices))
        values = np.asarray(values)
        if values.ndim == 4:
            values = values[:, 0]
        if values.shape != (len(slices), *self.shape[1:]):
            raise ValueError(f"expected {len(slices)} slices of {self.shape[1:]}, got {values.shape}")
        out = self.voxels.copy()
        out[slices] = values
        return out
