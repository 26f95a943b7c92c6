"""Round trip over real DICOM files no one here wrote: read -> encrypt -> write -> re-read.

Every MR and CT image in pydicom's ``test_files`` (all transfer syntaxes, the ``dicomdirtests`` CT and
MR images) and in ``pydicom-data``: the derived file differs from its source only in the documented
elements, every element that can carry pixels or free binary data (private tags, overlays, ...) is
gone, the geometry is unchanged and the pixels moved by at most the perturbation plus one stored unit.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch

from medenc.errors import InputError
from medenc.io import read_image, write_like
from medenc.io.dicom_enhanced import is_enhanced
from medenc.io.dicom_scrub import PIXEL_DATA, drop_reason
from medenc.io.dicom_write import DERIVED_CHANGES, META_CHANGES
from medenc.study.encrypt import encrypt_volume
from tests.helpers import (
    DATA_STORE,
    SMALL_INPUT,
    TEST_FILES,
    dataset_diff,
    raw_value_bytes,
    read_any,
    tiny_encryptor,
)

BROKEN = {"MR_truncated.dcm", "emri_small_jpeg_2k_lossless_too_short.dcm"}  # clear errors, tested below


def _mr_ct_files() -> list[Path]:
    found = []
    for root in (TEST_FILES, DATA_STORE):
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.name in BROKEN or path.suffix in (".txt", ".json", ".dump", ".icc"):
                continue
            try:
                import gzip
                import io

                data = path.read_bytes()
                if data[:2] == b"\x1f\x8b":
                    data = gzip.decompress(data)
                ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            except Exception:
                continue
            if ds.get("Modality") in ("MR", "CT") and "Rows" in ds:
                found.append(path)
    return found


FILES = _mr_ct_files()
ALLOWED = set(DERIVED_CHANGES)
REQUIRED = {"SOPInstanceUID", "SeriesInstanceUID", "DerivationDescription", "SourceImageSequence", "PixelData"}


def _id(path: Path) -> str:
    root = TEST_FILES if TEST_FILES in path.parents else DATA_STORE
    return ("pydicom/" if root == TEST_FILES else "pydicom-data/") + str(path.relative_to(root))


def test_the_file_set_is_complete() -> None:
    names = {_id(p) for p in FILES}
    assert len(FILES) >= 55, len(FILES)
    for expected in (
        "pydicom/MR_small_jpeg_ls_lossless.dcm",
        "pydicom/MR_small_bigendian.dcm",
        "pydicom/zipMR.gz",
        "pydicom/dicomdirtests/77654033/CT2/17106",
        "pydicom-data/emri_small_jpeg_2k_lossless.dcm",
        "pydicom-data/MR2_J2KI.dcm",
        "pydicom-data/eCT_Supplemental.dcm",
    ):
        assert expected in names


def dropped_tags(ds: pydicom.Dataset) -> set[int]:
    """Top-level tags of ``ds`` that a derived instance must not hold (pixels or free binary data)."""
    return {int(e.tag) for e in ds if int(e.tag) != PIXEL_DATA and drop_reason(int(e.tag), str(e.VR))}


def assert_nothing_dropped_remains(ds: pydicom.Dataset, top: bool = True) -> None:
    for elem in ds:
        if not (top and int(elem.tag) == PIXEL_DATA):
            assert drop_reason(int(elem.tag), str(elem.VR)) is None, f"{elem.tag} {elem.keyword} was copied"
        if elem.VR == "SQ":
            for item in elem.value:
                assert_nothing_dropped_remains(item, top=False)


def check_derived(source: pydicom.Dataset, derived: pydicom.Dataset, series_number: int) -> set[str]:
    """Assert the documented changes; returns the differing top-level keywords."""
    dropped = dropped_tags(source)
    assert not dropped & {int(t) for t in derived.keys()}  # noqa: SIM118 (a Dataset)
    assert_nothing_dropped_remains(derived)
    names = {source[t].keyword or str(pydicom.tag.Tag(t)) for t in dropped}
    diff = dataset_diff(source, derived) - names
    assert diff <= ALLOWED, f"undocumented changes: {sorted(diff - ALLOWED)}"
    if is_enhanced(source):  # the source reference is per frame (tests/test_io_validator.py checks it)
        required = {"SOPInstanceUID", "SeriesInstanceUID"}
        assert derived.ImageType[:2] == ["DERIVED", source.ImageType[1]]
        assert "SourceImageSequence" not in derived and "DerivationDescription" not in derived
        groups = derived.get("PerFrameFunctionalGroupsSequence")
        text = groups[0].DerivationImageSequence[0].DerivationDescription if groups else derived.ImageComments
        item = groups[0].DerivationImageSequence[0].SourceImageSequence[0] if groups else None
    else:
        required = REQUIRED - {"PixelData"}
        assert derived.ImageType[:2] == ["DERIVED", "SECONDARY"]
        text, item = derived.DerivationDescription, derived.SourceImageSequence[0]
    assert diff >= required, f"missing changes: {sorted(required - diff)}"
    if "ImageType" in source and source["ImageType"].VM > 2:
        assert list(derived.ImageType[2:]) == list(source.ImageType[2:])
    assert "medenc" in text
    assert derived.SeriesNumber == series_number
    if item is None:
        return diff
    assert item.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert item.ReferencedSOPClassUID == source.SOPClassUID
    assert "IconImageSequence" not in derived
    assert derived.StudyInstanceUID == source.StudyInstanceUID
    meta_diff = dataset_diff(source.file_meta, derived.file_meta)
    assert meta_diff <= set(META_CHANGES) | {"FileMetaInformationGroupLength"}, meta_diff
    assert derived.file_meta.MediaStorageSOPInstanceUID == derived.SOPInstanceUID
    assert derived.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    return diff


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_round_trip(path: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some test files make pydicom warn (odd values), not medenc
        volume = read_image(path)
    encryptor = tiny_encryptor(steps=2)
    torch.manual_seed(0)
    slices = list(range(volume.shape[0]))
    encrypted = encrypt_volume(volume, encryptor, 0, slices=slices, preprocess=SMALL_INPUT)
    assert not np.array_equal(encrypted, volume.voxels), "the encryption changed nothing"
    written = write_like(volume, encrypted, tmp_path / "out")
    assert len(written) == 1

    again = read_image(tmp_path / "out")
    assert again.shape == volume.shape
    np.testing.assert_allclose(again.affine, volume.affine, atol=1e-4)
    # exactly what was optimised, up to the stored rounding; within the perturbation + one stored unit
    assert np.array_equal(again.voxels, volume.quantize(encrypted))
    unit = volume.stored_unit()
    lo, hi = volume.bounds()
    assert np.all(again.voxels >= lo - 1e-3) and np.all(again.voxels <= hi + 1e-3)
    moved = np.abs(again.voxels.astype(np.float64) - volume.voxels)
    allowed = np.abs(encrypted.astype(np.float64) - volume.voxels) + unit + 1e-3
    assert np.all(moved <= allowed)

    source = read_any(volume.frames[0].path)
    derived = pydicom.dcmread(written[0])
    series_number = int(source.get("SeriesNumber", 0) or 0) + 1000
    check_derived(source, derived, series_number)
    if source.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian:
        # byte for byte: every element that is not documented to change keeps its raw bytes
        before, after = raw_value_bytes(volume.frames[0].path), raw_value_bytes(written[0])
        changed = {pydicom.datadict.tag_for_keyword(k) for k in ALLOWED}
        dropped = dropped_tags(source)
        for tag, value in before.items():
            if tag in dropped:
                assert tag not in after, pydicom.tag.Tag(tag)
            elif tag not in changed and tag & 0xFFFF:
                assert after.get(tag) == value, pydicom.tag.Tag(tag)


@pytest.mark.parametrize(
    "series", ["dicomdirtests/98892001/CT5N", "dicomdirtests/77654033/CT2"], ids=lambda s: s.split("/")[-1]
)
def test_round_trip_of_a_ct_series(series: str, tmp_path: Path) -> None:
    folder = TEST_FILES / series
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        volume = read_image(folder)
    uneven = [w for w in caught if "uneven slice spacing" in str(w.message)]
    assert bool(uneven) == series.endswith("CT2")  # CT2 has a 202 mm gap then 1.25 mm steps
    files = sorted(p for p in folder.iterdir())
    assert volume.shape[0] == len(files)
    positions = [float(f.header.ImagePositionPatient[2]) for f in volume.frames]
    assert positions == sorted(positions)
    encrypted = encrypt_volume(volume, tiny_encryptor(), "b", slices=[1, 2], preprocess=SMALL_INPUT)
    written = write_like(volume, encrypted, tmp_path / "out", slices=[1, 2], series_description="ENC")
    assert len(written) == 2
    derived = [pydicom.dcmread(p) for p in written]
    assert len({d.SeriesInstanceUID for d in derived}) == 1
    assert all(d.SeriesDescription == "ENC" for d in derived)
    sources = {f.header.SOPInstanceUID for f in volume.frames}
    assert {d.SourceImageSequence[0].ReferencedSOPInstanceUID for d in derived} <= sources
    again = read_image(tmp_path / "out") if len(written) > 1 else None
    assert again is not None and again.shape == (2, *volume.shape[1:])


@pytest.mark.parametrize(
    "path", [TEST_FILES / "MR_truncated.dcm", DATA_STORE / "emri_small_jpeg_2k_lossless_too_short.dcm"], ids=_id
)
def test_truncated_file_gives_a_clear_error(path: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=rf"{path.name}: .*truncated"):
        read_image(path)
