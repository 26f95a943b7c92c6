"""Write a derived DICOM series: a copy of each source header with only what DICOM requires changed.

The changes are listed in :data:`DERIVED_CHANGES` and in ``docs/io.md``; besides them, every element
that can carry original pixels or free binary data is removed (private tags unless kept with
``keep_private``, overlays, curves, waveforms, encapsulated documents, icons, other binary elements:
:mod:`medenc.io.dicom_scrub`). Everything else is kept as it was. Pixel values go back to the stored
dtype through the inverse rescale and are clipped to the source's valid range; the output is
uncompressed Explicit VR Little Endian, written atomically into a new folder.
"""

from __future__ import annotations

import copy
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medenc.atomic import atomic_directory
from medenc.errors import InputError, OutputExistsError
from medenc.io.dicom_enhanced import ORIGINAL_ONLY, derive_enhanced, is_enhanced
from medenc.io.dicom_scrub import DROPPED, keep_set, scrub
from medenc.io.uids import check_uid_root, new_uid
from medenc.io.volume import Volume

logger = logging.getLogger(__name__)

#: keyword -> what happens to it in a derived instance (top level unless noted)
DERIVED_CHANGES: dict[str, str] = {
    "SOPInstanceUID": "new UID (file meta MediaStorageSOPInstanceUID too)",
    "SeriesInstanceUID": "new UID, shared by the derived series",
    "SeriesNumber": "source + 1000 unless given",
    "SeriesDescription": "given, or source description + ' (medenc)' ('medenc derived' if none)",
    "ImageType": "DERIVED\\SECONDARY, values 3+ kept (enhanced images: DERIVED, value 2 and 3+ kept)",
    "DerivationDescription": "names medenc and its version (never the key); enhanced images: per frame",
    "SourceImageSequence": "one item pointing at the source instance (and its frames); enhanced images: per frame",
    "SourceImageEvidenceSequence": "enhanced images with per-frame groups: the source instance",
    "ImageComments": "enhanced images without per-frame groups only: the derivation description appended",
    "PixelData": "new values, uncompressed, stored dtype, clipped to the source's valid range",
    "IconImageSequence": "removed at every nesting level (holds original pixels)",
    "PrivateTags": "removed at every nesting level unless listed in keep_private (" + DROPPED["private"] + ")",
    "OverlayGroups": "removed at every nesting level: " + DROPPED["overlay"],
    "CurveGroups": "removed at every nesting level: " + DROPPED["curve"],
    "WaveformGroup": "removed at every nesting level: " + DROPPED["waveform"],
    "EncapsulatedDocumentGroup": "removed at every nesting level: " + DROPPED["document"],
    "BinaryElements": "removed at every nesting level: " + DROPPED["binary"],
    "DataSetTrailingPadding": "removed (free binary data; one of BinaryElements)",
    "GroupLength": "retired (gggg,0000) group lengths removed at every level (they would be stale)",
    "SmallestImagePixelValue": "removed (stale)",
    "LargestImagePixelValue": "removed (stale)",
    "SmallestPixelValueInSeries": "removed (stale)",
    "LargestPixelValueInSeries": "removed (stale)",
    "ExtendedOffsetTable": "removed (belongs to compressed pixel data)",
    "ExtendedOffsetTableLengths": "removed (belongs to compressed pixel data)",
    "LossyImageCompression": "set to 01 only if the source was lossy compressed and did not say so",
    "LossyImageCompressionMethod": "set with LossyImageCompression (same condition)",
    "NumberOfFrames": "multi-frame only: the number of frames written",
    "PerFrameFunctionalGroupsSequence": "multi-frame only: items of the frames written; FrameType value 1 DERIVED; "
    "a Derivation Image group per frame",
    "SharedFunctionalGroupsSequence": "multi-frame only: FrameType value 1 DERIVED",
    **{
        keyword: "removed from a derived Enhanced MR image (1C: only for ORIGINAL or MIXED images)"
        for keyword in sorted({k for names in ORIGINAL_ONLY.values() for k in names})
    },
}

#: file meta elements that change: the transfer syntax, the instance UID and the writer's identity
META_CHANGES = (
    "MediaStorageSOPInstanceUID",
    "TransferSyntaxUID",
    "ImplementationClassUID",
    "ImplementationVersionName",
    "FileMetaInformationGroupLength",
)

_STALE = (
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "SmallestPixelValueInSeries",
    "LargestPixelValueInSeries",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
)
_LOSSY_METHOD = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",
    "1.2.840.10008.1.2.4.93": "ISO_15444_1",
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",
}
_WORD_SIZE = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
SOURCE_PURPOSE = ("121322", "DCM", "Source image for image processing operation")


#: how every DerivationDescription medenc writes begins (a PACS client recognises medenc's series by it)
DERIVATION_PREFIX = "Adversarial data encryption by medenc"


def derivation_text() -> str:
    """The DerivationDescription of medenc's derived images (no key material)."""
    from medenc import __version__

    return f"{DERIVATION_PREFIX} {__version__}: pixel values modified"


def check_output(out: Path, inputs: Sequence[Path], force: bool) -> None:
    """Refuse an output that exists (without ``force``) or that would replace or hold an input file."""
    target = out.resolve()
    for source in inputs:
        resolved = Path(source).resolve()
        if resolved == target or target in resolved.parents:
            raise InputError("the output would replace the input files", out, tip="choose another output path")
    if out.exists() and not force and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(out)


def _remove_group_lengths(ds: Any) -> None:
    for tag in [t for t in ds.keys() if t.element == 0 and t.group != 2]:  # noqa: SIM118 (a Dataset, not a dict)
        del ds[tag]
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _remove_group_lengths(item)


def _swap_words(ds: Any) -> None:
    """Big endian source: byte-swap the OW/OF/OL/OD/OV values (pydicom re-encodes the rest)."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _swap_words(item)
        elif elem.VR in _WORD_SIZE and isinstance(elem.value, bytes) and elem.tag != 0x7FE00010:
            size = _WORD_SIZE[elem.VR]
            if len(elem.value) % size == 0:
                elem.value = np.frombuffer(elem.value, dtype=f">u{size}").astype(f"<u{size}").tobytes()


def _source_item(header: Any, frames: list[int] | None) -> Any:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID = header.SOPClassUID
    item.ReferencedSOPInstanceUID = header.SOPInstanceUID
    if frames is not None:
        item.ReferencedFrameNumber = [i + 1 for i in frames] if len(frames) > 1 else frames[0] + 1
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = SOURCE_PURPOSE
    item.PurposeOfReferenceCodeSequence = [code]
    return item


def derive_dataset(
    header: Any,
    pixels: np.ndarray,
    *,
    frames: list[int] | None,
    series_uid: str,
    series_number: int,
    series_description: str,
    derivation_description: str,
    keep_private: Sequence[str | int | tuple[int, int]] | None = None,
    uid_root: str | None = None,
) -> Any:
    """A derived copy of one source header holding ``pixels`` (stored dtype).

    Args:
        header: the source dataset (not modified).
        pixels: the new stored values.
        frames: multi-frame sources: 0-based source frame indices written, in order; else ``None``.
        series_uid: the derived series' UID.
        series_number: its SeriesNumber.
        series_description: its SeriesDescription.
        derivation_description: the DerivationDescription text.
        keep_private: private tags to keep (see :func:`medenc.io.dicom_scrub.parse_tag`); every other
            private element is removed.
        uid_root: the organisation's UID root for the new SOP Instance UID (default: pydicom's).

    Shape:
        pixels: (F, R, C).
    """
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    from medenc import __version__

    source_meta = getattr(header, "file_meta", None)
    source_syntax = str(source_meta.get("TransferSyntaxUID", "")) if source_meta is not None else ""
    big_endian = source_syntax == "1.2.840.10008.1.2.2"
    keep = keep_set(keep_private)  # validate, then mutate
    ds = copy.deepcopy(header)
    scrub(ds, sorted(keep))
    if big_endian:
        _swap_words(ds)
    uid = new_uid(uid_root)
    meta = ds.file_meta if getattr(ds, "file_meta", None) is not None else FileMetaDataset()
    if "MediaStorageSOPClassUID" not in meta:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"MEDENC_{__version__}"[:16]
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128

    ds.SOPInstanceUID = uid
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description[:64]
    enhanced = is_enhanced(header)
    if not enhanced:
        old_type = list(ds.ImageType) if "ImageType" in ds and ds["ImageType"].VM > 1 else []
        ds.ImageType = ["DERIVED", "SECONDARY", *old_type[2:]]
        ds.DerivationDescription = derivation_description
        ds.SourceImageSequence = [_source_item(header, frames)]
    _remove_group_lengths(ds)
    for keyword in _STALE:
        if keyword in ds:
            delattr(ds, keyword)
    if source_syntax in _LOSSY_METHOD and "LossyImageCompression" not in ds:
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = _LOSSY_METHOD[source_syntax]
    if frames is not None:
        count = int(ds.get("NumberOfFrames", 1) or 1)
        if len(frames) != count:
            ds.NumberOfFrames = len(frames)
            if "PerFrameFunctionalGroupsSequence" in ds:
                items = ds.PerFrameFunctionalGroupsSequence
                ds.PerFrameFunctionalGroupsSequence = [items[i] for i in frames]
    if enhanced:
        derive_enhanced(ds, header, frames if frames is not None else [0], derivation_description, SOURCE_PURPOSE)

    dtype = np.dtype(pixels.dtype).newbyteorder("<")
    ds.PixelData = np.ascontiguousarray(pixels.astype(dtype)).tobytes()
    ds["PixelData"].VR = "OB" if dtype.itemsize == 1 else "OW"
    return ds


def encode_dataset(ds: Any) -> bytes:
    """The DICOM file bytes of a derived dataset (Part 10, Explicit VR Little Endian)."""
    from pydicom import dcmwrite

    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def write_dicom(
    volume: Volume,
    native: np.ndarray,
    out: str | Path,
    *,
    stored_slices: Sequence[int] | None = None,
    series_description: str | None = None,
    series_number: int | None = None,
    derivation_description: str | None = None,
    force: bool = False,
    keep_private: Sequence[str | int | tuple[int, int]] | None = None,
    uid_root: str | None = None,
) -> list[Path]:
    """Write ``native`` as a derived series of ``volume``'s source into the new folder ``out``.

    Args:
        volume: a DICOM volume from :func:`medenc.io.read_image`.
        native: the new canonical native voxels.
        out: the output folder (created atomically; one file per source file written).
        stored_slices: stored slice indices to write (default: all); files holding none are skipped,
            multi-frame files keep only these frames.
        series_description: SeriesDescription of the derived series.
        series_number: SeriesNumber (default: source + 1000).
        derivation_description: DerivationDescription (default: :func:`derivation_text`).
        force: replace an existing ``out``.
        keep_private: private tags to copy into the derived files, e.g. ``[(0x0029, 0x1010)]`` or
            ``["0029,1010"]`` (their private creators come along); all other private tags are removed.
        uid_root: the organisation's UID root for the new Series and SOP Instance UIDs (default:
            pydicom's, ``1.2.826.0.1.3680043.8.498``); see :mod:`medenc.io.uids`.

    Returns:
        The written files in stored slice order.

    Shape:
        native: (Z, Y, X) like ``volume.voxels``.
    """
    out = Path(out)
    if volume.format != "dicom":
        raise ValueError(f"write_dicom needs a DICOM volume, got {volume.format}")
    check_output(out, [f.path for f in volume.frames], force)
    try:
        keep = sorted(keep_set(keep_private))
    except ValueError as exc:
        raise InputError(str(exc), tip="list private tags as gggg,eeee with an odd group") from exc
    if uid_root is not None:
        try:
            uid_root = check_uid_root(uid_root)
        except ValueError as exc:
            raise InputError(str(exc), tip="use your organisation's registered UID root") from exc
    stored = volume.to_stored(np.asarray(native))
    wanted = range(len(volume.frames)) if stored_slices is None else sorted({int(i) for i in stored_slices})
    groups: dict[Path, list[int]] = {}
    for index in wanted:
        groups.setdefault(volume.frames[index].path, []).append(index)
    if not groups:
        raise ValueError("nothing to write: no stored slice selected")

    first = volume.frames[0].header
    number = series_number if series_number is not None else int(first.get("SeriesNumber", 0) or 0) + 1000
    source_description = str(first.get("SeriesDescription", "") or "").strip()
    description = series_description or (f"{source_description} (medenc)" if source_description else "medenc derived")
    series_uid = new_uid(uid_root)
    encoded = []
    for position, (path, indices) in enumerate(groups.items()):
        frames = [volume.frames[i] for i in indices]
        if frames[0].frame is None:
            order, frame_ids = indices, None
        else:
            pairs = sorted(zip((f.frame for f in frames), indices))
            order, frame_ids = [i for _, i in pairs], [int(f) for f, _ in pairs]
        ds = derive_dataset(
            frames[0].header,
            stored[order],
            frames=frame_ids,
            series_uid=series_uid,
            series_number=number,
            series_description=description,
            derivation_description=derivation_description or derivation_text(),
            keep_private=keep,
            uid_root=uid_root,
        )
        encoded.append((f"IM{position + 1:05d}.dcm", encode_dataset(ds)))
        logger.debug("derived %s from %s", encoded[-1][0], path.name)
    with atomic_directory(out, force=force) as tmp:
        for name, data in encoded:
            (tmp / name).write_bytes(data)
    return [out / name for name, _ in encoded]
