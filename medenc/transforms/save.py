"""Write a pipeline's image back like its source: a derived DICOM series (what MONAI cannot write) or NIfTI."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from medenc.io import Volume, read_image, write_like
from medenc.io.dicom_read import LPS_TO_RAS
from medenc.io.volume import invert_ornt

__all__ = ["SaveDerived", "SaveDerivedd"]


def _grid_transform(affine: np.ndarray, shape: Sequence[int], volume: Volume) -> np.ndarray:
    """The nibabel transform from a MONAI grid (affine, (x, y, z) shape) to ``volume``'s canonical grid."""
    from nibabel.orientations import inv_ornt_aff, io_orientation, ornt_transform

    transform = ornt_transform(io_orientation(affine), io_orientation(volume.affine))
    mapped = affine @ inv_ornt_aff(transform, tuple(int(s) for s in shape))
    moved_shape = [0, 0, 0]
    for axis, (target, _) in enumerate(transform):
        moved_shape[int(target)] = int(shape[axis])
    if tuple(moved_shape) != volume.shape[::-1] or not np.allclose(mapped, volume.affine, atol=1e-3):
        raise ValueError(
            f"the image grid (shape {tuple(shape)}) is not the source's stored grid (shape {volume.shape[::-1]}): "
            "SaveDerived writes pixels back onto the source's voxels, so the pipeline must not resample or crop"
        )
    return transform


class SaveDerived(Transform):
    """Write an image back like its source: a derived DICOM series, or a NIfTI file.

    The source is the file or folder in ``meta["filename_or_obj"]``; it is read again and the image
    is placed on its voxels by affine (flips and axis order may differ; resampling may not). A slice
    cut by :class:`LargestTumorSlice` is written as the source instance(s) holding it.

    Args:
        output_dir: folder for the outputs (``<source name><postfix>`` folder or ``.nii.gz`` file).
        postfix: appended to the source name.
        series_description: DICOM SeriesDescription of the derived series.
        force: replace existing outputs.
    """

    def __init__(
        self,
        output_dir: str | Path,
        postfix: str = "_medenc",
        series_description: str | None = None,
        force: bool = False,
    ) -> None:
        self.output_dir, self.postfix = Path(output_dir), postfix
        self.series_description, self.force = series_description, force
        self._cache: tuple[tuple[str, str], Volume] | None = None

    def _source(self, meta: Mapping[str, Any]) -> Volume:
        key = (str(meta["filename_or_obj"]), str(meta.get("medenc_series_uid", "")))
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, read_image(Path(key[0]), series=key[1] or None))
        return self._cache[1]

    def __call__(self, img: MetaTensor) -> MetaTensor:
        """Write ``img`` and record the written paths in ``img.meta["medenc_written"]``.

        Shape:
            img: (1, X, Y, Z), or a (1, Y, X) slice from :class:`LargestTumorSlice`.
        """
        from nibabel.orientations import apply_orientation

        if not isinstance(img, MetaTensor) or "filename_or_obj" not in img.meta:
            raise ValueError("SaveDerived needs a MetaTensor loaded from a file (meta['filename_or_obj'])")
        if img.shape[0] != 1:
            raise ValueError(f"SaveDerived writes one channel, got {img.shape[0]}")
        meta, volume = img.meta, self._source(img.meta)
        array = img.detach().cpu().numpy()[0].astype(np.float64)
        space_fix = LPS_TO_RAS if str(meta.get("space", "RAS")) == "LPS" else np.eye(4)
        if "medenc_slice_index" in meta:
            affine = space_fix @ np.asarray(meta["medenc_volume_affine"], dtype=np.float64)
            shape = [int(s) for s in np.asarray(meta["medenc_volume_shape"])]
            transform = _grid_transform(affine, shape, volume)
            grid = np.array(apply_orientation(volume.voxels.transpose(2, 1, 0), invert_ornt(transform)))
            marker = np.zeros(grid.shape, dtype=bool)
            where = [slice(None)] * 3
            where[int(meta["medenc_slice_axis"])] = int(meta["medenc_slice_index"])
            grid[tuple(where)] = array.T if meta["medenc_slice_transpose"] else array
            marker[tuple(where)] = True
            native = apply_orientation(grid, transform).transpose(2, 1, 0)
            touched = apply_orientation(marker, transform).transpose(2, 1, 0)
            stored_slices = np.flatnonzero(volume.layout.to_stored(touched).any(axis=(1, 2))).tolist()
        else:
            affine = space_fix @ np.asarray(img.affine, dtype=np.float64)
            transform = _grid_transform(affine, array.shape, volume)
            native, stored_slices = apply_orientation(array, transform).transpose(2, 1, 0), None
        name = Path(str(meta["filename_or_obj"])).name
        for suffix in (".nii.gz", ".nii", ".dcm", ".gz"):
            name = name[: -len(suffix)] if name.lower().endswith(suffix) else name
        out = self.output_dir / (name + self.postfix + (".nii.gz" if volume.format == "nifti" else ""))
        written = write_like(
            volume,
            np.ascontiguousarray(native),
            out,
            stored_slices=stored_slices,
            force=self.force,
            series_description=self.series_description,
        )
        img.meta["medenc_written"] = [str(p) for p in written]
        return img


class SaveDerivedd(MapTransform):
    """Dictionary wrapper of :class:`SaveDerived` (the DICOM writer MONAI lacks)."""

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | Path,
        postfix: str = "_medenc",
        series_description: str | None = None,
        force: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.saver = SaveDerived(output_dir, postfix, series_description, force)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.saver(d[key])
        return d
