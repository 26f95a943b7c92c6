"""Pick slices of a volume by its tumor mask (pure numpy / torch, no file I/O).

The paper encrypts the axial slice with the largest tumor area of each MRI. With the volumes of
:mod:`medenc.io` (canonical ``(Z, Y, X)``) the axial axis is 0, the default here. The MONAI array
and dictionary transforms built on these functions are in :mod:`medenc.transforms`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medenc.errors import InputError


def _as_numpy(mask: Any) -> np.ndarray:
    if hasattr(mask, "detach"):  # torch tensor (or MONAI MetaTensor)
        mask = mask.detach().cpu().numpy()
    return np.asarray(mask)


def tumor_area_per_slice(mask: Any, axis: int = 0) -> np.ndarray:
    """Number of tumor (non-zero) voxels in each slice along ``axis``.

    Args:
        mask: tumor mask (bool or labels; non-zero = tumor), numpy array or torch tensor.
        axis: the slice axis.

    Returns:
        One count per slice.

    Shape:
        mask: (..., S, ...) with S along ``axis``; result: (S,) int64.
    """
    array = _as_numpy(mask)
    if array.ndim < 1:
        raise ValueError("a mask needs at least one dimension")
    axis = axis % array.ndim
    other = tuple(i for i in range(array.ndim) if i != axis)
    return np.count_nonzero(array, axis=other).astype(np.int64) if other else (array != 0).astype(np.int64)


def largest_tumor_slice(mask: Any, axis: int = 0) -> int:
    """Index of the slice with the most tumor voxels.

    Ties go to the central one of the tied slices (the lower middle for an even number of them).

    Args:
        mask: tumor mask (non-zero = tumor), numpy array or torch tensor.
        axis: the slice axis (0 for the canonical ``(Z, Y, X)`` volumes of :mod:`medenc.io`).

    Returns:
        The slice index along ``axis``.

    Raises:
        InputError: the mask holds no tumor voxel.

    Shape:
        mask: (..., S, ...) with S along ``axis``.
    """
    areas = tumor_area_per_slice(mask, axis)
    if areas.size == 0 or areas.max() == 0:
        raise InputError("empty mask: no tumor voxels, so no largest tumor slice", tip="check the mask and its label")
    tied = np.flatnonzero(areas == areas.max())
    return int(tied[(len(tied) - 1) // 2])


def tumor_slices(mask: Any, axis: int = 0) -> list[int]:
    """Indices of all slices holding at least one tumor voxel, in order.

    Shape:
        mask: (..., S, ...) with S along ``axis``.
    """
    return [int(i) for i in np.flatnonzero(tumor_area_per_slice(mask, axis))]


def select_slices(mask: Any, mode: str = "largest", axis: int = 0) -> list[int]:
    """Slices to encrypt: ``"largest"`` (the paper), ``"tumor"`` (all with tumor) or ``"all"``.

    Raises:
        InputError: ``largest`` or ``tumor`` on an empty mask.

    Shape:
        mask: (..., S, ...) with S along ``axis``.
    """
    if mode == "largest":
        return [largest_tumor_slice(mask, axis)]
    if mode == "tumor":
        found = tumor_slices(mask, axis)
        if not found:
            raise InputError("empty mask: no tumor voxels", tip="check the mask and its label")
        return found
    if mode == "all":
        return list(range(_as_numpy(mask).shape[axis]))
    raise ValueError(f"mode must be 'largest', 'tumor' or 'all', got {mode!r}")
