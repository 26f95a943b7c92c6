"""Turn the two versions of a case into what a reader sees: 16-bit stored values, a display window, PNGs.

The two versions of a case share everything but their pixels: one linear 16-bit scaling and one default
window, both computed from the two images together (so neither carries information about which version it
is, and swapping the versions changes nothing but the pixels), and uncompressed PNGs, whose size depends
only on the image size (a compressed PNG of a noisier image is larger, which would tell the versions apart).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

WINDOW_PERCENTILES = (0.5, 99.5)
STORED_MAX = 65535


@dataclass(frozen=True)
class StoredImage:
    """A slice as unsigned 16-bit stored values plus the linear map back to its units.

    ``value = stored * slope + intercept``; ``center``/``width`` is the default display window (units).
    """

    stored: np.ndarray  # (H, W) uint16
    slope: float
    intercept: float
    center: float
    width: float

    @property
    def values(self) -> np.ndarray:
        """The slice in its own units, as represented by the stored values.

        Shape:
            ``(H, W)`` float64.
        """
        return self.stored.astype(np.float64) * self.slope + self.intercept


def ds_round(value: float) -> float:
    """Round ``value`` to what a DICOM DS (16 characters) holds, so every file agrees with the DICOM."""
    from pydicom.valuerep import format_number_as_ds

    return float(format_number_as_ds(float(value)))


def to_stored_pair(first: np.ndarray, second: np.ndarray) -> tuple[StoredImage, StoredImage]:
    """Scale two images of one case onto 0..65535 with one shared linear map and one shared default window.

    The map spans the two images' joint range; the window spans the 0.5th-99.5th percentiles of their
    pooled values (the full range if that is flat). Both are symmetric in the two images.

    Args:
        first: one version of the slice, in its own units.
        second: the other version, same shape.

    Returns:
        The two stored images, in the order given.

    Shape:
        ``first``, ``second``: ``(H, W)`` float; ``stored``: ``(H, W)`` uint16.
    """
    a, b = (np.asarray(x, dtype=np.float64) for x in (first, second))
    if a.shape != b.shape:
        raise ValueError(f"the two images differ in shape: {a.shape} and {b.shape}")
    lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
    intercept = ds_round(lo)
    slope = ds_round((hi - intercept) / STORED_MAX) if hi > intercept else 1.0
    w_lo, w_hi = (float(v) for v in np.percentile(np.concatenate([a.ravel(), b.ravel()]), WINDOW_PERCENTILES))
    if w_hi <= w_lo:
        w_lo, w_hi = lo, hi
    if w_hi <= w_lo:
        w_lo, w_hi = lo - 0.5, lo + 0.5
    center, width = ds_round((w_lo + w_hi) / 2), ds_round(w_hi - w_lo)

    def stored(image: np.ndarray) -> StoredImage:
        values = np.clip(np.rint((image - intercept) / slope), 0, STORED_MAX).astype(np.uint16)
        return StoredImage(values, slope, intercept, center, width)

    return stored(a), stored(b)


def to_stored(image: np.ndarray) -> StoredImage:
    """One image on its own (:func:`to_stored_pair` of the image with itself).

    Shape:
        ``image``: ``(H, W)``; ``stored``: ``(H, W)`` uint16.
    """
    return to_stored_pair(image, image)[0]


def display_uint8(image: StoredImage) -> np.ndarray:
    """Apply the default window: linear, clipped, 8-bit, full resolution.

    Shape:
        ``(H, W)`` uint8.
    """
    lo = image.center - image.width / 2
    scaled = (image.values - lo) / image.width
    return np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
    """Encode an 8-bit grey ``(H, W)`` or RGB ``(H, W, 3)`` array as an uncompressed PNG, no metadata chunks.

    Uncompressed, so that the file size is a function of the image size alone.
    """
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


def packed_png_bytes(image: StoredImage) -> bytes:
    """Lossless PNG carrying the 16-bit stored values: high byte in red, low byte in green.

    Browsers decode it to exact 8-bit channels, so the viewer recovers the stored values and can window
    them at full depth.
    """
    rgb = np.zeros((*image.stored.shape, 3), dtype=np.uint8)
    rgb[..., 0] = image.stored >> 8
    rgb[..., 1] = image.stored & 0xFF
    return png_bytes(rgb)
