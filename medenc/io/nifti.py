"""Read and write NIfTI volumes (``.nii``, ``.nii.gz``, 2D and 3D) keeping the affine and the header.

Reading keeps the stored (unscaled) values, ``scl_slope``/``scl_inter`` and a copy of the header;
the declared size is checked against the voxel limit (:mod:`medenc.io.limits`) before any data are
read. Writing keeps the affine, qform/sform codes, pixdim and units but drops the header extensions
(they can hold anything, e.g. a copy of the source DICOM header); the stored dtype is kept when it
holds the new values (through the source's slope and intercept), otherwise the data go out as float32
with a logged note.
"""

from __future__ import annotations

import gzip
import io
import logging
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medenc.atomic import atomic_write_bytes
from medenc.errors import InputError
from medenc.io.limits import check_declared, max_voxels, shown
from medenc.io.volume import PixelCodec, StoredLayout, Volume, canonical_affine, orientation_for

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: str | Path) -> bool:
    """Whether ``path`` names a NIfTI file by its suffix."""
    name = str(path).lower()
    return name.endswith(NIFTI_SUFFIXES) or name.endswith((".hdr", ".img"))


def load_nifti(path: str | Path, *, limit: int | None = None) -> tuple[Any, np.ndarray]:
    """The nibabel image and its stored (unscaled) array, with clear errors for bad files.

    Args:
        path: the NIfTI file.
        limit: voxel limit (default :func:`medenc.io.limits.max_voxels`), checked on the header's
            dimensions before the data are read.
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", shown(path))
    errors = (nib.filebasedimages.ImageFileError, EOFError, OSError, ValueError, zlib.error, gzip.BadGzipFile)
    try:
        img = nib.load(path)
    except errors as exc:
        raise InputError(
            f"not a NIfTI file, or its header is truncated or damaged ({' '.join(str(exc).split())})", shown(path)
        ) from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image, nib.Nifti1Pair, nib.Nifti2Pair)):
        raise InputError(f"not a NIfTI image ({type(img).__name__})", shown(path))
    shape = tuple(int(n) for n in img.header.get_data_shape())
    dtype = img.header.get_data_dtype()
    check_declared(shape, dtype.itemsize, path, max_voxels(limit), what=f"NIfTI header ({dtype})")
    try:
        proxy = img.dataobj
        stored = np.asarray(proxy.get_unscaled() if hasattr(proxy, "get_unscaled") else proxy)
    except errors as exc:
        raise InputError(
            f"truncated or damaged image data: the header declares {' x '.join(map(str, shape))} {dtype} voxels "
            f"({' '.join(str(exc).split())})",
            shown(path),
        ) from exc
    if stored.dtype.fields is not None or stored.dtype.kind == "c":
        raise InputError(
            f"unsupported NIfTI data type {img.get_data_dtype()} (RGB or complex)",
            shown(path),
            tip="convert to a grayscale scalar volume first",
        )
    return img, stored


def _codec(img: Any, stored: np.ndarray, slices: int) -> PixelCodec:
    slope = getattr(img.dataobj, "slope", 1.0)
    inter = getattr(img.dataobj, "inter", 0.0)
    slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    dtype = stored.dtype
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        lo, hi = float(info.min), float(info.max)
    elif dtype.kind == "b":
        dtype, lo, hi = np.dtype(np.uint8), 0.0, 1.0
    else:
        finfo = np.finfo(dtype)
        lo, hi = float(-finfo.max), float(finfo.max)
    return PixelCodec(dtype=dtype, lo=lo, hi=hi, slope=np.full(slices, slope), intercept=np.full(slices, inter))


def read_nifti(
    path: str | Path, *, volume: int | None = None, orientation: str = "auto", max_voxels: int | None = None
) -> Volume:
    """Read a NIfTI image into a :class:`Volume`.

    Args:
        path: ``.nii`` or ``.nii.gz`` file (2D, 3D, or 4D with ``volume``).
        volume: index along the 4th axis of a 4D image (required when it has more than one volume).
        orientation: ``"axial"``, ``"stored"`` or ``"auto"`` (axial, except a single non-axial slice
            stays in its plane).
        max_voxels: refuse a file declaring more voxels (all volumes; default ``$MEDENC_MAX_VOXELS`` or
            :data:`medenc.io.limits.DEFAULT_MAX_VOXELS`), checked before the data are read.

    Raises:
        InputError: not NIfTI, truncated, 4D without ``volume``, RGB/complex data, over the size limit.
    """
    path = Path(path)
    img, stored = load_nifti(path, limit=max_voxels)
    ndim = stored.ndim
    while stored.ndim > 3 and stored.shape[-1] == 1 and volume is None:
        stored = stored[..., 0]
    if stored.ndim == 4:
        if volume is None:
            raise InputError(
                f"4D image with {stored.shape[3]} volumes and no volume chosen", path, tip="pass volume=<index>"
            )
        if not 0 <= volume < stored.shape[3]:
            raise InputError(f"volume {volume} is outside 0..{stored.shape[3] - 1}", path)
        stored = stored[..., volume]
    elif volume not in (None, 0):
        raise InputError(f"volume={volume} given but the image is {stored.ndim}D", path)
    if stored.ndim == 2:
        stored = stored[:, :, None]
    if stored.ndim != 3:
        raise InputError(f"unsupported {stored.ndim}D image of shape {stored.shape}", path)
    stored_zyx = stored.transpose(2, 1, 0)
    codec = _codec(img, stored_zyx, stored_zyx.shape[0])
    affine = np.asarray(img.affine, dtype=np.float64)
    ornt = orientation_for(affine, orientation, stored_zyx.shape[0])
    layout = StoredLayout(shape=tuple(stored_zyx.shape), ornt=ornt)  # type: ignore[arg-type]
    wide = stored.dtype == np.float64 or (stored.dtype.kind in "iu" and stored.dtype.itemsize >= 4)
    dtype = np.float64 if wide else np.float32
    native = codec.to_native(stored_zyx, dtype=dtype)
    codec = codec.with_floor(native)
    return Volume(
        voxels=np.ascontiguousarray(layout.to_canonical(native)),
        affine=canonical_affine(affine, layout.ornt, layout.shape),
        source=path,
        format="nifti",
        codec=codec,
        layout=layout,
        header=img.header.copy(),
        info={"ndim": ndim, "volume": volume, "source_affine": affine},
    )


def _serialize(volume: Volume, data_xyz: np.ndarray, slope: float, inter: float, affines: Any) -> bytes:
    """Single-file NIfTI bytes of ``data_xyz`` with the source header, then slope/inter patched in."""
    import nibabel as nib

    source = volume.header
    two = isinstance(source, nib.Nifti2Header)
    klass = nib.Nifti2Image if two else nib.Nifti1Image
    header = (nib.Nifti2Header if two else nib.Nifti1Header).from_header(source)
    if affines is not None:
        (qform, qcode), (sform, scode) = affines
        header.set_qform(qform, code=int(qcode))
        header.set_sform(sform, code=int(scode))
    header.set_data_dtype(data_xyz.dtype)
    header.extensions.clear()  # extensions carry free data (a DICOM header, original values): never copied
    img = klass(data_xyz, None, header=header)
    blob = img.to_bytes()
    written = type(header).from_fileobj(io.BytesIO(blob))
    written.set_slope_inter(slope, inter)
    block = written.binaryblock
    return block + blob[len(block) :]


def _crop(volume: Volume, stored_slices: Sequence[int] | None) -> tuple[slice, Any]:
    """The stored z-range to write and the qform/sform shifted to it (``None``: unchanged)."""
    count = volume.layout.shape[0]
    if stored_slices is None:
        return slice(0, count), None
    chosen = sorted({int(i) for i in stored_slices})
    if chosen != list(range(chosen[0], chosen[-1] + 1)):
        raise InputError(
            "a NIfTI output holds one block of slices; the chosen slices are not contiguous", volume.source
        )
    if len(chosen) == count:
        return slice(0, count), None
    shift = np.eye(4)
    shift[2, 3] = chosen[0]
    header = volume.header
    qform, qcode = header.get_qform(coded=True)
    sform, scode = header.get_sform(coded=True)
    qform = (header.get_qform() if qform is None else qform) @ shift
    sform = (header.get_best_affine() if sform is None else sform) @ shift
    return slice(chosen[0], chosen[-1] + 1), ((qform, qcode), (sform, scode))


def write_nifti(
    volume: Volume,
    native: np.ndarray,
    out: str | Path,
    *,
    stored_slices: Sequence[int] | None = None,
    force: bool = False,
) -> list[Path]:
    """Write ``native`` as a NIfTI file on ``volume``'s stored grid with its header.

    Args:
        volume: a NIfTI volume from :func:`medenc.io.read_image`.
        native: the new canonical native voxels.
        out: a ``.nii`` or ``.nii.gz`` path (written atomically).
        stored_slices: stored z indices to write (one contiguous block; the affine is shifted to it).
        force: replace an existing ``out``.

    Returns:
        ``[out]``.

    Shape:
        native: (Z, Y, X) like ``volume.voxels``.
    """
    from medenc.io.dicom_write import check_output

    out = Path(out)
    if volume.format != "nifti":
        raise ValueError(f"write_nifti needs a NIfTI volume, got {volume.format}")
    if not str(out).lower().endswith(NIFTI_SUFFIXES):
        raise InputError("a NIfTI output needs a .nii or .nii.gz name", out)
    check_output(out, [volume.source], force)
    window, affines = _crop(volume, stored_slices)
    codec = volume.codec
    native_stored = np.asarray(volume.layout.to_stored(np.asarray(native, dtype=np.float64)))[window]
    native_stored = np.maximum(native_stored, codec.floor)  # the source's valid range (see PixelCodec)
    slope, inter = float(codec.slope[0]), float(codec.intercept[0])
    if codec.integer:
        values = (native_stored - inter) / slope
        if values.min() < codec.lo - 0.5 or values.max() > codec.hi + 0.5:
            logger.info("%s: new values do not fit %s; writing float32", out, codec.dtype)
            data, slope, inter = native_stored.astype(np.float32), 1.0, 0.0
        else:
            data = codec.to_stored(native_stored, slices=np.arange(window.start, window.stop))
    else:
        data = codec.to_stored(native_stored, slices=np.arange(window.start, window.stop))
    data_xyz = np.ascontiguousarray(data.transpose(2, 1, 0))
    if volume.info.get("ndim") == 2 and data_xyz.shape[2] == 1:
        data_xyz = data_xyz[:, :, 0]
    blob = _serialize(volume, data_xyz, slope, inter, affines)
    if str(out).lower().endswith(".gz"):
        blob = gzip.compress(blob, mtime=0)
    atomic_write_bytes(out, blob, force=force)
    return [out]
