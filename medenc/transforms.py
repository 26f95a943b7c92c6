"""MONAI adapters: a reader, array transforms and thin dictionary wrappers.

A pipeline (see ``docs/monai-pipeline.md``)::

    Compose([
        LoadImaged(["image", "label"], reader=MedencReader()),
        EnsureChannelFirstd(["image", "label"]),
        LargestTumorSliced(["image", "label"], source_key="label"),
        AdversarialEncryptd("image", label_key="class", model=model, key=key, preprocess=preprocess),
        SaveDerivedd("image", output_dir="shared/"),
    ])

MONAI arrays are channel-first with spatial axes in (x, y, z) order; :class:`LargestTumorSlice`
returns the axial slice as ``(C, rows, columns)`` = ``(C, y, x)``, the layout of
``Volume.voxels[k]`` that medenc's models are trained on. :class:`SaveDerived` writes a derived DICOM
series (or NIfTI file) of the source the image was loaded from, matching the grids by their affines.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import ImageReader, MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import ensure_tuple

from medenc.core.encrypt import Encryptor
from medenc.core.slices import largest_tumor_slice
from medenc.io import Volume, read_image, write_like
from medenc.io.volume import invert_ornt

logger = logging.getLogger(__name__)

SLICE_KEYS = ("medenc_slice_index", "medenc_slice_axis", "medenc_slice_transpose", "medenc_volume_affine")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class MedencReader(ImageReader):
    """A MONAI reader using :func:`medenc.io.read_image`: DICOM series (folders, files) and NIfTI.

    The array is the canonical volume in MONAI's (x, y, z) order with its RAS affine; the metadata
    adds the native bounds of the stored range (``medenc_bounds_low`` / ``_high``) and the series UID.

    Args:
        series: DICOM ``SeriesInstanceUID`` for folders holding several series.
        volume: NIfTI: index of the volume of a 4D image.
        orientation: passed to :func:`medenc.io.read_image`.
    """

    def __init__(self, series: str | None = None, volume: int | None = None, orientation: str = "auto") -> None:
        self.series, self.volume, self.orientation = series, volume, orientation

    def verify_suffix(self, filename: Sequence[Any] | Any) -> bool:
        names = [str(f) for f in ensure_tuple(filename)]
        return all(Path(n).is_dir() or n.lower().endswith((".dcm", ".nii", ".nii.gz", ".gz")) for n in names)

    def read(self, data: Sequence[Any] | Any, **kwargs: Any) -> Volume:
        files = [Path(str(f)) for f in ensure_tuple(data)]
        path: Any = files[0] if len(files) == 1 else files
        return read_image(path, series=self.series, volume=self.volume, orientation=self.orientation)

    def get_data(self, img: Volume) -> tuple[np.ndarray, dict]:
        low, high = img.codec.native_range()
        meta = {
            "affine": img.affine.copy(),
            "original_affine": img.affine.copy(),
            "spatial_shape": np.array(img.shape[::-1]),
            "original_channel_dim": "no_channel",
            "space": "RAS",
            "medenc_bounds_low": float(low.min()),
            "medenc_bounds_high": float(high.max()),
            "medenc_series_uid": str(img.info.get("series_uid", "")),
            "medenc_format": img.format,
        }
        return np.ascontiguousarray(img.voxels.transpose(2, 1, 0)), meta


class LargestTumorSlice(Transform):
    """Cut the slice with the largest tumor out of a channel-first image.

    Args:
        axis: spatial axis to slice (``-1``: z, the axial axis after ``Orientationd("LPS")`` or
            :class:`MedencReader`).
        transpose: swap the two remaining spatial axes, so that a MONAI (x, y) slice comes out as
            (rows, columns) = (y, x) like ``Volume.voxels[k]``.
    """

    backend: ClassVar[list[str]] = ["torch", "numpy"]

    def __init__(self, axis: int = -1, transpose: bool = True) -> None:
        self.axis, self.transpose = axis, transpose

    def _spatial_axis(self, ndim: int) -> int:
        return 1 + self.axis % (ndim - 1)

    def index(self, mask: Any) -> int:
        """The largest tumor slice of a channel-first mask (any channel counts).

        Shape:
            mask: (C, *spatial).
        """
        array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        return largest_tumor_slice(array.any(axis=0), self._spatial_axis(array.ndim) - 1)

    def __call__(self, img: Any, mask: Any = None, index: int | None = None) -> Any:
        """The slice ``index`` (default: the largest tumor slice of ``mask``) of ``img``.

        Shape:
            img: (C, X, Y, Z); result: (C, Y, X) for the default axis and transpose.
        """
        if index is None:
            if mask is None:
                raise ValueError("LargestTumorSlice needs a mask or an index")
            index = self.index(mask)
        axis = self._spatial_axis(img.ndim)
        if isinstance(img, torch.Tensor):
            out = img.select(axis, index)
            out = out.transpose(-1, -2) if self.transpose else out
            if isinstance(img, MetaTensor):
                out = MetaTensor(out.as_tensor().contiguous(), meta=dict(img.meta))
                out.meta.update(
                    medenc_slice_index=int(index),
                    medenc_slice_axis=axis - 1,
                    medenc_slice_transpose=self.transpose,
                    medenc_volume_affine=np.asarray(img.affine, dtype=np.float64),
                    medenc_volume_shape=np.array(img.shape[1:]),
                )
            return out
        out = np.take(np.asarray(img), index, axis=axis)
        return np.swapaxes(out, -1, -2) if self.transpose else out


class LargestTumorSliced(MapTransform):
    """Dictionary wrapper of :class:`LargestTumorSlice`: one index from ``source_key`` for all ``keys``.

    The index is recorded in the data under ``index_key`` (and in each MetaTensor's meta).
    """

    def __init__(
        self,
        keys: KeysCollection,
        source_key: str = "label",
        axis: int = -1,
        transpose: bool = True,
        index_key: str = "slice_index",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.source_key, self.index_key = source_key, index_key
        self.slicer = LargestTumorSlice(axis, transpose)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        index = self.slicer.index(d[self.source_key])
        for key in self.key_iterator(d):
            d[key] = self.slicer(d[key], index=index)
        d[self.index_key] = index
        return d


def _as_labels(label: Any, count: int) -> list[Any]:
    if isinstance(label, (torch.Tensor, np.ndarray)):
        values = np.asarray(label.detach().cpu() if isinstance(label, torch.Tensor) else label).reshape(-1).tolist()
    elif isinstance(label, (list, tuple)):
        values = list(label)
    else:
        values = [label]
    if len(values) == 1:
        values = values * count
    if len(values) != count:
        raise ValueError(f"{count} images but {len(values)} labels")
    return [v if isinstance(v, str) else int(v) for v in values]


class AdversarialEncrypt(Transform):
    """Encrypt channel-first 2D images with their true class (thin over :class:`medenc.core.encrypt.Encryptor`).

    Args:
        model: the base classifier.
        key: the :class:`medenc.core.key.EncryptionKey`.
        preprocess: the model's :class:`medenc.core.mapping.Preprocess` (native -> model input);
            PGD runs on the native values through it.
        device: PGD device (``None``: CUDA if available).
        batch_size: PGD samples per call.
        precision: ``"fp32"``, ``"bf16"`` or ``"auto"``.
        bounds: native ``(low, high)``; default: ``medenc_bounds_low``/``_high`` from the image meta
            (set by :class:`MedencReader`), else the image's own min and max.
    """

    backend: ClassVar[list[str]] = ["torch", "numpy"]

    def __init__(
        self,
        model: torch.nn.Module,
        key: Any,
        preprocess: Any,
        *,
        device: str | torch.device | None = None,
        batch_size: int = 64,
        precision: str = "auto",
        bounds: tuple[float, float] | None = None,
    ) -> None:
        self.encryptor = Encryptor(model, key, device=device, batch_size=batch_size, precision=precision)
        self.preprocess, self.bounds = preprocess, bounds

    def _bounds(self, img: Any, x: torch.Tensor) -> tuple[float, float]:
        if self.bounds is not None:
            return float(self.bounds[0]), float(self.bounds[1])
        meta = getattr(img, "meta", {})
        if "medenc_bounds_low" in meta:  # one value per image after collation: take the widest
            low, high = (np.asarray(meta[k], dtype=np.float64) for k in ("medenc_bounds_low", "medenc_bounds_high"))
            return float(low.min()), float(high.max())
        logger.info("no stored range known: bounding the encryption by the image's own min and max")
        return float(x.min()), float(x.max())

    def __call__(self, img: Any, label: Any) -> Any:
        """The encrypted image, same type and shape.

        Shape:
            img: (C, H, W) or (N, C, H, W); label: one class (index or name) or one per image.
        """
        if isinstance(img, MetaTensor):
            x = img.as_tensor()
        else:
            x = img if isinstance(img, torch.Tensor) else torch.as_tensor(np.asarray(img))
        x = x.detach().float().cpu()
        single = x.ndim == 3
        batch = x[None] if single else x
        if batch.ndim != 4:
            raise ValueError(f"expected (C, H, W) or (N, C, H, W) images, got shape {tuple(x.shape)}")
        low, high = self._bounds(img, batch)
        labels = _as_labels(label, batch.shape[0])
        out = self.encryptor.encrypt(batch, labels, mapping=self.preprocess.mapping(batch), bounds=(low, high))
        out = out[0] if single else out
        if isinstance(img, MetaTensor):
            return MetaTensor(out.to(img.dtype), meta=dict(img.meta))
        if isinstance(img, torch.Tensor):
            return out.to(device=img.device, dtype=img.dtype)
        return out.numpy().astype(np.asarray(img).dtype)


class AdversarialEncryptd(MapTransform):
    """Dictionary wrapper of :class:`AdversarialEncrypt`; the true class is read from ``label_key``."""

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str,
        model: torch.nn.Module,
        key: Any,
        preprocess: Any,
        *,
        device: str | torch.device | None = None,
        batch_size: int = 64,
        precision: str = "auto",
        bounds: tuple[float, float] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_key = label_key
        self.encrypt = AdversarialEncrypt(
            model, key, preprocess, device=device, batch_size=batch_size, precision=precision, bounds=bounds
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.encrypt(d[key], d[self.label_key])
        return d


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
