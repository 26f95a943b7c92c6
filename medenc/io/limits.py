"""Guards shared by the readers: a size limit checked before decoding, and printable file names.

A compressed file (gzip NIfTI, RLE or JPEG 2000 DICOM, a gzipped DICOM file) can declare an image far
larger than itself; decoding it would exhaust memory. Every reader compares the declared size with
:func:`max_voxels` *before* decoding anything.

The limit is, in this order: the ``max_voxels=`` keyword of the reader, the environment variable
``MEDENC_MAX_VOXELS``, or :data:`DEFAULT_MAX_VOXELS`.
"""

from __future__ import annotations

import math
import os
import zlib
from pathlib import Path

from medenc.errors import InputError

#: environment variable overriding the default voxel limit
MAX_VOXELS_ENV = "MEDENC_MAX_VOXELS"
#: default limit: 512 x 512 x 2048 voxels (a 512 x 512 x 1000 study fits twice over)
DEFAULT_MAX_VOXELS = 512 * 512 * 2048
#: decompressed bytes allowed per voxel of the limit (32-bit storage) plus room for a header
_BYTES_PER_VOXEL = 4
_HEADER_ROOM = 16 * 2**20


def max_voxels(override: int | None = None) -> int:
    """The voxel limit: ``override``, else ``$MEDENC_MAX_VOXELS``, else :data:`DEFAULT_MAX_VOXELS`.

    Raises:
        InputError: the override or the environment variable is not a positive integer.
    """
    if override is not None:
        if isinstance(override, bool) or not isinstance(override, int) or override <= 0:
            raise InputError(f"max_voxels must be a positive integer, got {override!r}")
        return override
    text = os.environ.get(MAX_VOXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_VOXELS
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise InputError(f"{MAX_VOXELS_ENV} must be a positive integer, got {text!r}")
    return value


def check_declared(shape: tuple[int, ...], itemsize: int, path: str | Path, limit: int, what: str = "image") -> None:
    """Refuse a declared image larger than ``limit`` voxels, before anything is decoded.

    Args:
        shape: the declared dimensions (e.g. NIfTI dims, or rows, columns, frames).
        itemsize: bytes per voxel, for the message.
        path: the file, for the message.
        limit: the voxel limit (from :func:`max_voxels`).
        what: what the shape describes, for the message.
    """
    count = math.prod(int(n) for n in shape)
    if count > limit:
        dims = " x ".join(str(int(n)) for n in shape) + " = " if len(shape) > 1 else ""
        raise InputError(
            f"the {what} declares {dims}{count:,} voxels ({count * itemsize / 1e9:.1f} GB), over the limit of "
            f"{limit:,} voxels; refused before decoding (a damaged header or a decompression bomb)",
            shown(path),
            tip=f"if the image is real, raise the limit with {MAX_VOXELS_ENV}=<voxels> or max_voxels=",
        )


def gunzip_limited(data: bytes, path: str | Path, limit: int) -> bytes:
    """Decompress gzip ``data`` but refuse to expand beyond what ``limit`` voxels can need."""
    cap = limit * _BYTES_PER_VOXEL + _HEADER_ROOM
    out = bytearray()
    rest = data
    while rest:
        inflater = zlib.decompressobj(wbits=31)
        try:
            out += inflater.decompress(rest, cap + 1 - len(out))
        except zlib.error as exc:
            raise InputError(f"damaged or truncated gzip data ({exc})", shown(path)) from exc
        if len(out) > cap:
            raise InputError(
                f"the gzip data expands beyond {cap:,} bytes, more than the limit of {limit:,} voxels can need; "
                "refused (a decompression bomb or a damaged file)",
                shown(path),
                tip=f"if the image is real, raise the limit with {MAX_VOXELS_ENV}=<voxels>",
            )
        if not inflater.eof:
            raise InputError("truncated gzip data (the compressed stream ends early)", shown(path))
        rest = inflater.unused_data  # a concatenated gzip member, or padding
        if not rest.strip(b"\0"):
            break
    return bytes(out)


def shown(path: str | Path) -> Path:
    """``path`` as it can be printed: bytes of a file name that are not UTF-8 become ``\\xNN`` escapes."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return Path(os.fsencode(text).decode("utf-8", errors="backslashreplace"))
    return Path(path)
