"""A MONAI ``ImageReader`` over :func:`medenc.io.read_image`: DICOM series (folders, files) and NIfTI."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.utils import ensure_tuple

from medenc.io import Volume, read_image

__all__ = ["MedencReader"]


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
