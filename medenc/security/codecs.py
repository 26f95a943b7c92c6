"""Lossy compression at a target compression ratio, as radiology specifies it: JPEG and JPEG 2000.

Published national guidance accepts irreversible compression of MR for primary reading at about 7:1 to
24:1 (JPEG and JPEG 2000). A thief may compress the shared images that much and call them diagnostic.
These functions compress each image of a batch so that its **achieved** ratio meets the target, and
report what was achieved:

- what is compressed is the thief's 8-bit rendering of the model input (the display window, clipped to
  0..1 and rounded to 0..255), one grey image at a time (Pillow's codecs: libjpeg, OpenJPEG);
- the ratio is ``H x W`` bytes (8 bits per pixel) over the bytes of the compressed **payload**: the
  entropy-coded data after the last header (JPEG: after the start-of-scan header; JPEG 2000: after the
  start-of-data marker). Headers (quantisation and Huffman tables, codestream parameters: a few hundred
  bytes) are left out because at clinical sizes (512 x 512) they are a fraction of a percent of the file,
  while at the 64-128 px of CPU-sized runs they alone would exceed the whole budget of 20:1. Against the
  16 bits per pixel in which MR is stored, the same file is a ratio twice as high.
- JPEG has no ratio setting, so each image gets the highest quality (1..95) whose payload meets the
  ratio; JPEG 2000 takes a target rate, which is searched (bisection on its logarithm, at most 14
  encodings) for the smallest achieved ratio at or above the target (stopping within 2% of it; the
  codec's rate allocation is coarser than that on small images, where the achieved ratio may exceed the
  target by a few percent).
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from medenc.errors import InputError

__all__ = ["compress_to_ratio", "jpeg2000_payload", "jpeg2000_ratio", "jpeg_payload", "jpeg_ratio", "to_uint8"]


def to_uint8(x: Tensor) -> np.ndarray:
    """The 8-bit rendering of model inputs: clipped to 0..1, scaled to 0..255, rounded.

    Shape:
        x: (N, C, H, W); result: (N, C, H, W) uint8.
    """
    return (x.detach().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu().numpy()


def jpeg_payload(data: bytes) -> int:
    """Bytes of a baseline JPEG file after its start-of-scan header (the entropy-coded data and EOI)."""
    pos = 2  # after SOI
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError("not a JPEG marker sequence")
        marker = data[pos + 1]
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # start of scan
            return len(data) - (pos + 2 + length)
        pos += 2 + length
    raise ValueError("no start-of-scan marker")


def jpeg2000_payload(data: bytes) -> int:
    """Bytes of a JPEG 2000 codestream (one tile) after its start-of-data marker."""
    if data[:2] != b"\xff\x4f":
        raise ValueError("not a JPEG 2000 codestream")
    pos = 2
    while pos + 4 <= len(data):
        marker = int.from_bytes(data[pos : pos + 2], "big")
        if marker == 0xFF93:  # start of data (no length field)
            return len(data) - (pos + 2)
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    raise ValueError("no start-of-data marker")


def _jpeg(pixels: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="JPEG", quality=int(quality))
    return buffer.getvalue()


def _jpeg2000(pixels: np.ndarray, rate: float) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(
        buffer, format="JPEG2000", no_jp2=True, irreversible=True, quality_mode="rates", quality_layers=[rate]
    )
    return buffer.getvalue()


def _decode(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("L"))


def _jpeg_to_ratio(pixels: np.ndarray, ratio: float) -> tuple[bytes, float, float]:
    """Highest quality whose payload meets ``ratio`` (quality 1 if none does): data, achieved ratio, quality."""
    raw = pixels.size
    lo, hi = 1, 95
    best = None
    while lo <= hi:  # payload size grows with quality: bisect for the highest quality that fits
        mid = (lo + hi) // 2
        data = _jpeg(pixels, mid)
        if raw / jpeg_payload(data) >= ratio:
            best, lo = (data, mid), mid + 1
        else:
            hi = mid - 1
    data, quality = best if best is not None else (_jpeg(pixels, 1), 1)
    return data, raw / jpeg_payload(data), float(quality)


def _jpeg2000_to_ratio(pixels: np.ndarray, ratio: float) -> tuple[bytes, float, float]:
    """Rate whose payload ratio lies in [ratio, 1.02 ratio] (bisection on log rate): data, achieved, rate."""
    raw = pixels.size
    lo, hi = math.log(ratio * 0.5), math.log(ratio * 4.0)
    best = None
    for _ in range(14):
        rate = math.exp((lo + hi) / 2)
        data = _jpeg2000(pixels, rate)
        achieved = raw / jpeg2000_payload(data)
        if achieved >= ratio:
            if best is None or achieved < best[1]:
                best = (data, achieved, rate)
            if achieved <= ratio * 1.02:
                break
            hi = math.log(rate)
        else:
            lo = math.log(rate)
    if best is None:  # even the highest rate tried left the payload too large
        rate = ratio * 4.0
        data = _jpeg2000(pixels, rate)
        best = (data, raw / jpeg2000_payload(data), rate)
    return best


CODECS = {"jpeg": (_jpeg_to_ratio, "quality"), "jpeg2000": (_jpeg2000_to_ratio, "rate")}


def compress_to_ratio(x: Tensor, codec: str, ratio: float, *, stats: dict[str, Any] | None = None) -> Tensor:
    """Compress every image of ``x`` with ``codec`` to at least ``ratio``:1 and decode it (see the module doc).

    Args:
        x: model inputs (display window about 0..1).
        codec: ``"jpeg"`` or ``"jpeg2000"``.
        ratio: target compression ratio (> 1) of the 8-bit payload.
        stats: filled with the achieved ratios (``ratio_mean``, ``ratio_min``, ``ratio_max``), the share of
            images that met the target, the codec parameter's mean and range, and the image count.

    Shape:
        x: (N, C, H, W); result: same, float32 in 0..1.
    """
    if codec not in CODECS:
        raise InputError(f"unknown codec {codec!r}; expected one of {', '.join(CODECS)}")
    if not (math.isfinite(ratio) and 1.0 < ratio <= 200.0):
        raise InputError(f"compression ratio must lie in (1, 200], got {ratio}")
    encode, param_name = CODECS[codec]
    pixels = to_uint8(x)
    out = np.empty_like(pixels)
    achieved, params = [], []
    for i in range(pixels.shape[0]):
        for c in range(pixels.shape[1]):
            data, got, param = encode(np.ascontiguousarray(pixels[i, c]), float(ratio))
            out[i, c] = _decode(data)
            achieved.append(got)
            params.append(param)
    if stats is not None:
        values = np.array(achieved)
        stats.update(
            {
                "codec": codec,
                "target_ratio": float(ratio),
                "images": int(values.size),
                "ratio_mean": float(values.mean()),
                "ratio_min": float(values.min()),
                "ratio_max": float(values.max()),
                "met_target": float((values >= ratio * 0.999).mean()),
                f"{param_name}_mean": float(np.mean(params)),
                f"{param_name}_min": float(np.min(params)),
                f"{param_name}_max": float(np.max(params)),
                "ratio_basis": "8-bit rendering, payload without headers",
            }
        )
    return torch.from_numpy(out).float().div_(255.0).to(x.device)


def jpeg_ratio(x: Tensor, ratio: float = 10.0, *, stats: dict[str, Any] | None = None) -> Tensor:
    """JPEG at ``ratio``:1 (:func:`compress_to_ratio`).

    Shape:
        x: (N, C, H, W); result: same.
    """
    return compress_to_ratio(x, "jpeg", ratio, stats=stats)


def jpeg2000_ratio(x: Tensor, ratio: float = 10.0, *, stats: dict[str, Any] | None = None) -> Tensor:
    """JPEG 2000 (irreversible) at ``ratio``:1 (:func:`compress_to_ratio`).

    Shape:
        x: (N, C, H, W); result: same.
    """
    return compress_to_ratio(x, "jpeg2000", ratio, stats=stats)
