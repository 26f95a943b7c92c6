"""Tumor masks: NIfTI label volumes and DICOM SEG, brought onto an image's canonical grid.

A mask must lie on the image grid: the same voxels, possibly stored with other axis order or flips
(a DICOM SEG may also cover only some of the slices). Anything else is an error unless
``resample=True``, which samples the mask by nearest neighbour at every image voxel.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from medenc.errors import InputError
from medenc.io.dicom_read import LPS_TO_RAS, _dcmread
from medenc.io.limits import shown
from medenc.io.nifti import is_nifti, load_nifti
from medenc.io.volume import Volume

logger = logging.getLogger(__name__)

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


def _nifti_labels(path: Path, label: float | None, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    img, _ = load_nifti(path, limit=limit)
    data = np.asanyarray(img.dataobj)
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise InputError(
            f"the mask holds {bad} NaN or infinite voxel(s): not labels (tumor = non-zero finite values)",
            shown(path),
            tip="export the mask with 0 outside the tumor",
        )
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise InputError(f"a mask must be 2D or 3D, got shape {data.shape}", shown(path))
    mask = data != 0 if label is None else np.isclose(data, label)
    return mask, np.asarray(img.affine, dtype=np.float64)


def _seg_labels(path: Path, ds: Any, like: Volume, label: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """A DICOM SEG as a mask with its affine, or already on the image's grid (affine ``None``)."""
    import highdicom as hd

    try:
        seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
    except Exception as exc:
        raise InputError(f"not a valid DICOM SEG ({exc})", path) from exc
    numbers = None if label is None else [int(label)]
    if numbers and numbers[0] not in seg.segment_numbers:
        raise InputError(f"segment {label} is not in this SEG (segments: {list(seg.segment_numbers)})", path)
    try:
        vol = seg.get_volume(segment_numbers=numbers, combine_segments=True)
        mask_xyz = np.asarray(vol.array).transpose(2, 1, 0) != 0
        affine = LPS_TO_RAS @ np.asarray(vol.affine)[:, [2, 1, 0, 3]]
        return mask_xyz, affine
    except Exception as exc:  # irregular frames: fall back on the referenced source instances
        single = like.format == "dicom" and all(f.frame is None for f in like.frames)
        if not single:
            raise InputError(f"this SEG's frames do not form a regular volume ({exc})", path) from exc
    uids = [str(f.header.SOPInstanceUID) for f in like.frames]
    stored = seg.get_pixels_by_source_instance(uids, segment_numbers=numbers, combine_segments=True)
    return np.asarray(like.layout.to_canonical(np.asarray(stored) != 0)), None


def _grid_map(mask_affine: np.ndarray, mask_shape: tuple[int, ...], like: Volume) -> tuple[np.ndarray, bool]:
    """The map from image canonical index (x, y, z) to mask index, and whether it is an exact voxel map."""
    transform = np.linalg.inv(mask_affine) @ like.affine
    linear, shift = transform[:3, :3], transform[:3, 3]
    signed = np.rint(linear)
    permutation = (np.abs(signed).sum(axis=0) == 1).all() and (np.abs(signed).sum(axis=1) == 1).all()
    z, y, x = like.shape
    corners = np.array([[i, j, k] for i in (0, x - 1) for j in (0, y - 1) for k in (0, z - 1)], dtype=float).T
    drift = np.abs((linear - signed) @ corners).max()
    exact = bool(permutation and drift < 0.1 and np.abs(shift - np.rint(shift)).max() < 0.1)
    if exact:
        transform = np.eye(4)
        transform[:3, :3], transform[:3, 3] = signed, np.rint(shift)
    return transform, exact


def _sample(mask_xyz: np.ndarray, transform: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Nearest-neighbour sample of ``mask_xyz`` at every voxel of a canonical grid (outside -> False).

    Shape:
        mask_xyz: (I, J, K); result: ``shape`` = (Z, Y, X).
    """
    z_size, y_size, x_size = shape
    ys, xs = np.mgrid[0:y_size, 0:x_size]
    points = np.stack([xs.ravel(), ys.ravel(), np.zeros(xs.size), np.ones(xs.size)])
    limits = np.array(mask_xyz.shape).reshape(3, 1)
    out = np.zeros(shape, dtype=bool)
    for k in range(z_size):
        points[2] = k
        index = np.rint((transform @ points)[:3]).astype(np.int64)
        valid = ((index >= 0) & (index < limits)).all(axis=0)
        plane = np.zeros(xs.size, dtype=bool)
        plane[valid] = mask_xyz[index[0, valid], index[1, valid], index[2, valid]]
        out[k] = plane.reshape(y_size, x_size)
    return out


def _mismatch(transform: np.ndarray, exact: bool, mask_shape: tuple[int, ...], like: Volume) -> str:
    """Why a mask grid is not the image grid, in words: voxel size, rotation, sub-voxel offset, or extent."""
    if like.format == "dicom" and any(f.position is None or f.orientation is None for f in like.frames):
        return (
            "the image has no ImagePositionPatient/ImageOrientationPatient, so its grid is a stand-in "
            "(identity orientation at the origin) that no mask geometry can match"
        )
    linear, shift = transform[:3, :3], transform[:3, 3]
    steps = np.sqrt((linear**2).sum(axis=0))  # mask voxels per image voxel along image x, y, z
    if exact:
        image = (like.shape[2], like.shape[1], like.shape[0])
        return (
            f"the mask is on the image's voxel lattice but covers another extent: mask shape {tuple(mask_shape)}, "
            f"image shape {image} (x/y/z), image voxel (0, 0, 0) at mask index {np.rint(shift).astype(int).tolist()}"
            " (origin or shape mismatch)"
        )
    reasons = []
    if np.abs(steps - 1).max() > 0.01:
        image_mm = np.round(like.spacing[::-1], 3).tolist()
        mask_mm = np.round(np.array(image_mm) / steps, 3).tolist()
        reasons.append(f"voxel size differs (image {image_mm} mm, mask {mask_mm} mm, x/y/z)")
    unit = linear / np.where(steps > 0, steps, 1)
    cosines = np.abs(unit).max(axis=0)
    if cosines.min() < 0.999:
        angle = float(np.degrees(np.arccos(np.clip(cosines.min(), -1, 1))))
        reasons.append(f"the mask's axes are rotated by {angle:.1f} degrees against the image's")
    offset = shift - np.rint(shift)
    if not reasons and np.abs(offset).max() >= 0.1:
        reasons.append(f"the grids are offset by {np.round(offset, 2).tolist()} voxel (origin mismatch)")
    return "; ".join(reasons) or "the grids do not line up"


def read_mask(
    path: str | Path,
    *,
    like: Volume,
    label: float | None = None,
    resample: bool = False,
    max_voxels: int | None = None,
) -> np.ndarray:
    """Read a tumor mask on the canonical grid of ``like``.

    Args:
        path: a NIfTI label volume (tumor = non-zero, or ``label``) or a DICOM SEG file (tumor = any
            segment, or segment number ``label``).
        like: the image volume the mask belongs to.
        label: label value (NIfTI) or segment number (SEG); default: everything non-zero.
        resample: if the mask is on another grid, sample it by nearest neighbour instead of failing.
        max_voxels: refuse a mask declaring more voxels (see :mod:`medenc.io.limits`), before reading it.

    Returns:
        Boolean mask like ``like.voxels``.

    Raises:
        InputError: unreadable file, over the size limit, NaN/inf values, grid mismatch without
            ``resample`` (the message names the cause), empty mask.

    Shape:
        result: (Z, Y, X).
    """
    path = Path(path)
    if is_nifti(path):
        mask_xyz, affine = _nifti_labels(path, label, max_voxels)
        partial = False
    else:
        ds = _dcmread(path, limit=max_voxels)
        if str(ds.get("SOPClassUID", "")) != SEG_SOP_CLASS:
            raise InputError(
                f"not a mask: a DICOM {ds.get('Modality', '?')} object, not a SEG",
                shown(path),
                tip="pass a NIfTI label volume or a DICOM SEG",
            )
        mask_xyz, affine = _seg_labels(path, ds, like, None if label is None else int(label))
        partial = True
    if affine is None:
        mask = mask_xyz
    else:
        transform, exact = _grid_map(affine, mask_xyz.shape, like)
        same_shape = exact and _covers_exactly(transform, like.shape, mask_xyz.shape)
        if not (exact and (partial or same_shape)):
            if not resample:
                raise InputError(
                    f"mask grid (shape {tuple(mask_xyz.shape)}) does not match the image grid: "
                    f"{_mismatch(transform, exact, mask_xyz.shape, like)}",
                    shown(path),
                    tip="pass resample=True to resample it by nearest neighbour, or export the mask on the image grid",
                )
            logger.info("%s: resampling the mask onto the image grid (nearest neighbour)", path)
        mask = _sample(mask_xyz, transform, like.shape)
    if not mask.any():
        what = "no tumor voxels" if label is None else f"no voxels with label {label}"
        raise InputError(f"empty mask: {what} on the image grid", path, tip="check the mask file and the label")
    return np.ascontiguousarray(mask)


def _covers_exactly(transform: np.ndarray, shape: tuple[int, int, int], mask_shape: tuple[int, ...]) -> bool:
    """Whether an exact voxel map takes the image grid onto the mask's whole index box."""
    z, y, x = shape
    corners = np.array([[i, j, k, 1] for i in (0, x - 1) for j in (0, y - 1) for k in (0, z - 1)], dtype=float).T
    mapped = np.rint(transform @ corners)[:3]
    return bool((mapped.min(axis=1) == 0).all() and (mapped.max(axis=1) == np.array(mask_shape) - 1).all())
