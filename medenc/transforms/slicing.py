"""Cut the largest-tumor slice out of a channel-first volume, and put it back (MONAI's invertible contract).

The slice keeps MONAI's records: the earlier transforms' ``applied_operations`` stay and this one is
pushed on top (:class:`~monai.transforms.TraceableTransform`); its ``affine`` is the slice's own
(4x4, the third column along the slice normal, so the slice's position survives) and its
``spatial_shape`` / ``original_affine`` describe the slice on the source's grid, which is what
``SaveImaged`` writes with (``resample=True`` included). :meth:`LargestTumorSlice.inverse` puts the
slice back into a volume of the source's shape and affine (other slices ``fill_value``, as MONAI's
crop inverses pad with zeros), so ``Compose.inverse`` / ``Invertd`` restore the source geometry.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing
from monai.transforms import InvertibleTransform, MapTransform
from monai.utils import TraceKeys, convert_to_numpy

from medenc.core.slices import largest_tumor_slice

__all__ = ["SLICE_META", "LargestTumorSlice", "LargestTumorSliced", "slice_to_volume"]

#: the meta entries a slice gets (where it was cut and from which volume grid); the inverse removes them
SLICE_META = (
    "medenc_slice_index",
    "medenc_slice_axis",
    "medenc_slice_transpose",
    "medenc_volume_affine",
    "medenc_volume_shape",
)


def slice_to_volume(axis: int, index: int, transpose: bool) -> np.ndarray:
    """The 4x4 map from slice voxel ``(i, j, c)`` to volume voxel (``c`` along the slice normal, 0 on the slice).

    A slice's affine is the volume's affine times this matrix.

    Args:
        axis: the sliced spatial axis (0, 1 or 2).
        index: the slice's index along ``axis``.
        transpose: whether the two remaining axes were swapped (then ``i`` runs along the later one).
    """
    remaining = [a for a in range(3) if a != axis]
    if transpose:
        remaining.reverse()
    matrix = np.zeros((4, 4))
    matrix[remaining[0], 0] = matrix[remaining[1], 1] = matrix[axis, 2] = matrix[3, 3] = 1.0
    matrix[axis, 3] = float(index)
    return matrix


def _source_slice_geometry(
    meta: Mapping[str, Any], volume_affine: np.ndarray, axis: int, index: int, fallback: tuple[np.ndarray, list[int]]
) -> tuple[np.ndarray, list[int]]:
    """The slice's ``original_affine`` and ``spatial_shape``: the same plane on the source file's grid.

    The source grid is ``meta["original_affine"]`` and ``meta["spatial_shape"]`` (what MONAI's readers
    record). When the current grid is that grid flipped and permuted (``Orientationd``, no resampling),
    the plane is a slice of the source grid too, in the source's axis order; otherwise ``fallback``
    (the slice as it is).
    """
    if "original_affine" not in meta or "spatial_shape" not in meta:
        return fallback
    source = np.asarray(meta["original_affine"], dtype=np.float64)
    shape = [int(s) for s in np.asarray(meta["spatial_shape"]).reshape(-1)]
    if source.shape != (4, 4) or len(shape) != 3:
        return fallback
    to_source = np.linalg.solve(source, volume_affine)  # current voxel -> source voxel
    rotation = np.round(to_source[:3, :3])
    permutation = (np.abs(rotation).sum(axis=0) == 1).all() and (np.abs(rotation).sum(axis=1) == 1).all()
    if not permutation or not np.allclose(to_source[:3, :3], rotation, atol=1e-4):
        return fallback  # resampled or rotated: the plane is not one of the source grid's
    source_axis = int(np.argmax(np.abs(rotation[:, axis])))
    source_index = float((to_source @ np.eye(4)[:, axis] * index + to_source[:, 3])[source_axis])
    if abs(source_index - round(source_index)) > 1e-3 or not 0 <= round(source_index) < shape[source_axis]:
        return fallback
    affine = source @ slice_to_volume(source_axis, round(source_index), transpose=False)
    return affine, [s for a, s in enumerate(shape) if a != source_axis]


class LargestTumorSlice(InvertibleTransform):
    """Cut the slice with the largest tumor out of a channel-first volume; the inverse puts it back.

    Args:
        axis: spatial axis to slice (``-1``: z, the axial axis after ``Orientationd("LPS")`` or
            :class:`~medenc.transforms.MedencReader`).
        transpose: swap the two remaining spatial axes, so that a MONAI (x, y) slice comes out as
            (rows, columns) = (y, x) like ``Volume.voxels[k]``.
        fill_value: the value of the other slices when :meth:`inverse` rebuilds the volume.
    """

    backend: ClassVar[list[str]] = ["torch", "numpy"]

    def __init__(self, axis: int = -1, transpose: bool = True, fill_value: float = 0.0) -> None:
        if axis not in (-3, -2, -1, 0, 1, 2):
            raise ValueError(f"axis must be a spatial axis of a 3D volume (0, 1, 2 or -1, -2, -3), got {axis}")
        self.axis, self.transpose, self.fill_value = axis % 3, bool(transpose), float(fill_value)

    def index(self, mask: Any) -> int:
        """The largest tumor slice of a channel-first mask (any channel counts).

        Shape:
            mask: (C, X, Y, Z).
        """
        array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        _check_volume(array.shape, "mask")
        return largest_tumor_slice(array.any(axis=0), self.axis)

    def __call__(self, img: Any, mask: Any = None, index: int | None = None) -> Any:
        """The slice ``index`` (default: the largest tumor slice of ``mask``) of ``img``.

        A MetaTensor comes back as a MetaTensor with the slice's affine and this transform pushed on
        its ``applied_operations``; numpy arrays and plain tensors come back as such.

        Shape:
            img: (C, X, Y, Z); result: (C, Y, X) for the default axis and transpose.
        """
        _check_volume(tuple(img.shape), "image")
        if index is None:
            if mask is None:
                raise ValueError("LargestTumorSlice needs a mask or an index")
            index = self.index(mask)
        size = int(img.shape[1 + self.axis])
        if not 0 <= int(index) < size:
            raise ValueError(f"slice index {index} is outside the volume's {size} slices along axis {self.axis}")
        index = int(index)
        if not isinstance(img, torch.Tensor):
            out = np.take(np.asarray(img), index, axis=1 + self.axis)
            return np.swapaxes(out, -1, -2) if self.transpose else out
        plain = img.as_tensor() if isinstance(img, MetaTensor) else img
        out = plain.select(1 + self.axis, index)
        out = (out.transpose(-1, -2) if self.transpose else out).contiguous()
        if not isinstance(img, MetaTensor):
            return out
        return self._slice_meta(img, out, index)

    def _slice_meta(self, img: MetaTensor, out: torch.Tensor, index: int) -> MetaTensor:
        volume_affine = np.asarray(img.affine, dtype=np.float64)
        matrix = slice_to_volume(self.axis, index, self.transpose)
        slice_affine = volume_affine @ matrix
        shape = [int(s) for s in out.shape[1:]]
        original_affine, spatial_shape = _source_slice_geometry(
            img.meta, volume_affine, self.axis, index, fallback=(slice_affine, shape)
        )
        restore = {  # the meta entries this transform replaces, for the inverse (collatable values only)
            name: np.asarray(img.meta[name]) for name in ("original_affine", "spatial_shape") if name in img.meta
        }
        meta = copy.deepcopy(dict(img.meta))  # MONAI updates some entries in place (pixdim): not the input's
        result = MetaTensor(out, meta=meta, applied_operations=copy.deepcopy(img.applied_operations))
        result = self.push_transform(
            result,
            affine=matrix,  # MONAI sets the affine to volume affine @ matrix (and the pixdim)
            orig_size=tuple(int(s) for s in img.shape[1:]),
            extra_info={"index": index, "axis": self.axis, "transpose": self.transpose, "meta": restore},
        )
        result.meta.update(
            original_affine=original_affine,
            spatial_shape=np.array(spatial_shape),
            medenc_slice_index=index,
            medenc_slice_axis=self.axis,
            medenc_slice_transpose=self.transpose,
            medenc_volume_affine=volume_affine,
            medenc_volume_shape=np.array(img.shape[1:]),
        )
        return result

    def inverse(self, data: MetaTensor) -> MetaTensor:
        """Put the slice back into a volume of the source's shape and affine (other slices ``fill_value``).

        Shape:
            data: (C, Y, X) as this transform returned it; result: (C, X, Y, Z).
        """
        if not isinstance(data, MetaTensor):
            raise ValueError("LargestTumorSlice.inverse needs the MetaTensor the transform returned")
        op = self.pop_transform(data)
        info = op[TraceKeys.EXTRA_INFO]
        axis, index, transpose = int(info["axis"]), int(info["index"]), bool(info["transpose"])
        volume_shape = [int(s) for s in op[TraceKeys.ORIG_SIZE]]
        plain = data.as_tensor()
        volume = torch.full((plain.shape[0], *volume_shape), self.fill_value, dtype=plain.dtype, device=plain.device)
        volume.select(1 + axis, index).copy_(plain.transpose(-1, -2) if transpose else plain)
        replaced = (*SLICE_META, "original_affine", "spatial_shape")
        meta = {k: copy.deepcopy(v) for k, v in data.meta.items() if k not in replaced}
        meta.update({name: np.asarray(value) for name, value in info.get("meta", {}).items()})
        affine = np.asarray(data.affine, dtype=np.float64) @ np.linalg.inv(slice_to_volume(axis, index, transpose))
        meta["affine"] = torch.as_tensor(affine, dtype=torch.float64)
        if "pixdim" in meta:  # as MONAI keeps it: the voxel spacing after the affine
            meta["pixdim"] = convert_to_numpy(meta["pixdim"], dtype=np.float64).copy()
            meta["pixdim"][1:4] = affine_to_spacing(affine, r=3)
        return MetaTensor(volume, meta=meta, applied_operations=list(data.applied_operations))


def _check_volume(shape: Sequence[int], what: str) -> None:
    if len(shape) != 4:
        raise ValueError(f"LargestTumorSlice needs a channel-first 3D {what} (C, X, Y, Z), got shape {tuple(shape)}")


class LargestTumorSliced(MapTransform, InvertibleTransform):
    """Dictionary wrapper of :class:`LargestTumorSlice`: one index from ``source_key`` for all ``keys``.

    The index is recorded in the data under ``index_key`` (and in each MetaTensor's meta); the
    inverse puts every key's slice back into its volume.

    Args:
        keys: the volumes to slice (the mask too, if it should be sliced).
        source_key: the tumor mask that picks the slice.
        axis: see :class:`LargestTumorSlice`.
        transpose: see :class:`LargestTumorSlice`.
        index_key: where the slice index goes in the data.
        fill_value: see :class:`LargestTumorSlice`.
        allow_missing_keys: skip the ``keys`` that an item lacks (the ``source_key`` is still needed
            when any of them is there).
    """

    def __init__(
        self,
        keys: KeysCollection,
        source_key: str = "label",
        axis: int = -1,
        transpose: bool = True,
        index_key: str = "slice_index",
        fill_value: float = 0.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.source_key, self.index_key = source_key, index_key
        self.slicer = LargestTumorSlice(axis, transpose, fill_value)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        present = list(self.key_iterator(d))
        if not present:
            return d
        if self.source_key not in d:
            raise KeyError(f"LargestTumorSliced: the item has no {self.source_key!r} (the mask that picks the slice)")
        index = self.slicer.index(d[self.source_key])
        for key in present:
            d[key] = self.slicer(d[key], index=index)
        d[self.index_key] = index
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Each key's slice put back into its volume (see :meth:`LargestTumorSlice.inverse`)."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.slicer.inverse(d[key])
        return d
