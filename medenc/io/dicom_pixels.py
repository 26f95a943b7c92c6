"""DICOM pixel data: what medenc accepts, checked before decoding, and decoding with one-line errors.

Before anything is decoded the declared size (Rows x Columns x NumberOfFrames) is checked against the
voxel limit (:mod:`medenc.io.limits`) and the pixel data against the header: uncompressed data must
hold exactly the declared bytes (zero padding after them is tolerated), compressed data must hold
NumberOfFrames frames whose codestream headers (JPEG, JPEG-LS, JPEG 2000, RLE) give the declared
size and, for JPEG and JPEG 2000, end with their end-of-image marker. Decoder complaints that mean
damage (RLE segments of the wrong length, more frames than declared) are errors, not warnings.
"""

from __future__ import annotations

import re
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medenc.errors import InputError
from medenc.io.limits import check_declared, shown

MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
RLE = "1.2.840.10008.1.2.5"
#: JPEG, JPEG-LS and JPEG 2000 transfer syntaxes: every frame ends with the marker FFD9 (EOI / EOC)
_MARKER_ENDED = frozenset(f"1.2.840.10008.1.2.4.{n}" for n in (50, 51, 57, 70, 80, 81, 90, 91, 92, 93, 201, 202, 203))
#: decoder warnings that mean the pixel data is damaged or does not match the header
_DAMAGE = ("non-conformant padding", "frames have been found", "doesn't match", "does not match", "excess")
#: preferred decoder plugin messages (the first one present names the cause)
_PLUGINS = ("pydicom", "pylibjpeg", "pyjpegls", "pillow", "gdcm")


def check_image(path: Path, ds: Any) -> None:
    """Raise a clear error for datasets medenc cannot treat as a grayscale image."""
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise InputError("float pixel data is not supported (no integer PixelData)", shown(path))
        if "Rows" in ds or len(ds) == 0:
            raise InputError(
                "truncated: an image header without its PixelData (the file ends early)",
                shown(path),
                tip="copy the file again from its source",
            )
        raise InputError(f"no PixelData: this DICOM {ds.get('Modality', '')} object is not an image", shown(path))
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if photometric not in MONOCHROME or samples != 1:
        raise InputError(
            f"unsupported photometric interpretation {photometric or 'missing'} with {samples} sample(s) per "
            "pixel; medenc encrypts grayscale MR/CT images",
            shown(path),
            tip="convert colour or palette images to grayscale MONOCHROME2 first (e.g. dcmj2pnm/gdcmconv), "
            "or pick the grayscale series",
        )
    if int(ds.get("BitsAllocated", 0)) not in (8, 16, 32):
        raise InputError(f"unsupported BitsAllocated {ds.get('BitsAllocated')} (expected 8, 16 or 32)", shown(path))


def frame_count(path: Path, ds: Any) -> int:
    """``NumberOfFrames`` (1 if absent); anything but a positive integer is an error."""
    value = ds.get("NumberOfFrames")
    if value is None or value == "":
        return 1
    try:
        count = float(value)
    except (TypeError, ValueError):
        count = float("nan")
    if not np.isfinite(count) or count < 1 or count != int(count):
        raise InputError(f"NumberOfFrames {value!s} is not a positive whole number", shown(path))
    return int(count)


def _size(ds: Any, path: Path) -> tuple[int, int, int]:
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows < 1 or columns < 1:
        raise InputError(f"Rows {rows} x Columns {columns}: an image needs at least one pixel", shown(path))
    return rows, columns, frame_count(path, ds)


def _codestream_size(frame: bytes, syntax: str) -> tuple[int, int] | None:
    """(rows, columns) from a JPEG / JPEG-LS / JPEG 2000 codestream header, or ``None`` if not found."""
    j2k = frame.find(b"\xff\x4f\xff\x51")
    if j2k >= 0 and len(frame) >= j2k + 24:  # SIZ: Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz
        xsiz, ysiz, xo, yo = struct.unpack(">IIII", frame[j2k + 8 : j2k + 24])
        return ysiz - yo, xsiz - xo
    if frame[:2] != b"\xff\xd8":
        return None
    index = 2
    while index + 9 <= len(frame):  # JPEG markers up to the first SOF (JPEG-LS: SOF55 = FFF7)
        if frame[index] != 0xFF:
            return None
        marker = frame[index + 1]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7):
            rows, columns = struct.unpack(">HH", frame[index + 5 : index + 9])
            return rows, columns
        if marker == 0xFF:
            index += 1
            continue
        (length,) = struct.unpack(">H", frame[index + 2 : index + 4])
        index += 2 + length
    return None


def _check_encapsulated(path: Path, ds: Any, rows: int, columns: int, frames: int, syntax: str) -> None:
    from pydicom.encaps import generate_frames

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = list(generate_frames(ds.PixelData, number_of_frames=frames))
    except Exception as exc:  # broken item tags, lengths past the end
        raise InputError(f"damaged compressed pixel data: its items cannot be parsed ({exc})", shown(path)) from exc
    if len(found) != frames:
        raise InputError(
            f"the compressed pixel data holds {len(found)} frame(s) but NumberOfFrames is {frames}", shown(path)
        )
    bytes_per_sample = (int(ds.BitsAllocated) + 7) // 8
    for number, frame in enumerate(found, start=1):
        if syntax == RLE:
            segments = struct.unpack("<I", frame[:4])[0] if len(frame) >= 64 else -1
            if segments != bytes_per_sample:
                raise InputError(
                    f"damaged RLE pixel data: frame {number} has {segments} segments, "
                    f"{bytes_per_sample} expected for BitsAllocated {ds.BitsAllocated}",
                    shown(path),
                )
            continue
        if syntax in _MARKER_ENDED and not frame.rstrip(b"\x00\xff").endswith(b"\xff\xd9"):
            raise InputError(
                f"truncated compressed pixel data: frame {number} does not end with its end-of-image marker (FFD9)",
                shown(path),
                tip="copy the file again from its source",
            )
        size = _codestream_size(frame, syntax)
        if size is not None and size != (rows, columns):
            raise InputError(
                f"frame {number}'s compressed data is {size[0]} x {size[1]} pixels but the header says "
                f"Rows {rows} x Columns {columns}",
                shown(path),
            )


def check_pixel_data(path: Path, ds: Any, limit: int) -> int:
    """Check the pixel data against the header and the size limit before decoding; returns the voxels.

    Raises:
        InputError: too large, wrong NumberOfFrames, more or less data than Rows x Columns x frames.
    """
    rows, columns, frames = _size(ds, path)
    bits = int(ds.BitsAllocated)
    check_declared((rows, columns, frames), bits // 8, path, limit, what="DICOM image (rows x columns x frames)")
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    elem = ds["PixelData"]
    if elem.is_undefined_length:  # encapsulated (compressed) pixel data
        _check_encapsulated(path, ds, rows, columns, frames, syntax)
        return rows * columns * frames
    expected = rows * columns * frames * bits // 8
    data = elem.value
    got = len(data)
    declared = f"Rows {rows} x Columns {columns} x {frames} frame(s) x {bits} bits = {expected} bytes"
    if got < expected:
        raise InputError(
            f"truncated pixel data: {got} bytes, {declared} (the file ends early, or Rows/Columns/NumberOfFrames "
            "are too large)",
            shown(path),
        )
    if got > expected + (expected % 2) and any(np.frombuffer(data, dtype=np.uint8, offset=expected)):
        raise InputError(
            f"the pixel data holds {got} bytes, more than {declared}: Rows, Columns or NumberOfFrames are smaller "
            "than the data",
            shown(path),
        )
    return rows * columns * frames


def _cause(exc: BaseException) -> str:
    """One line naming the cause: the preferred plugin's message when every decoder plugin failed."""
    text = str(exc)
    plugins = dict(re.findall(r"^\s+(\w+): (.+)$", text, flags=re.MULTILINE))
    for name in _PLUGINS:
        if name in plugins:
            return f"{name}: {plugins[name].strip()}"
    return " ".join(text.split()) or type(exc).__name__


def decode(path: Path, ds: Any) -> np.ndarray:
    """The stored pixel values as ``(frames, rows, columns)``; damage is an :class:`InputError`.

    Shape:
        result: (F, R, C).
    """
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    name = getattr(syntax, "name", str(syntax))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            array = ds.pixel_array
        except Exception as exc:  # decoders raise many types; the user gets one clear line
            cause = _cause(exc)
            missing = any(w in cause.lower() for w in ("missing", "dependenc", "not supported", "no pixel data dec"))
            what = "no decoder" if missing else "damaged data"
            raise InputError(
                f"cannot decode the {name} pixel data: {what} ({cause})",
                shown(path),
                tip="install pylibjpeg, pylibjpeg-openjpeg, pyjpegls or python-gdcm"
                if missing
                else "copy the file again from its source, or re-export it uncompressed",
            ) from exc
    for warning in caught:
        message = " ".join(str(warning.message).split())
        if any(word in message for word in _DAMAGE) and "excess padding" not in message:
            raise InputError(f"damaged {name} pixel data ({message})", shown(path))
        if issubclass(warning.category, UserWarning) and "excess padding" not in message:
            warnings.warn(f"{shown(path)}: {message}", UserWarning, stacklevel=2)
    rows, columns = int(ds.Rows), int(ds.Columns)
    return np.asarray(array).reshape(-1, rows, columns)
