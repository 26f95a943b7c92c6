"""Original pixels must not survive outside PixelData: private tags, overlays, waveforms, documents, extensions."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from medenc.errors import InputError
from medenc.io import read_image, write_like
from medenc.io.dicom_scrub import parse_tag
from medenc.study.encrypt import encrypt_volume
from tests.helpers import DATA_STORE, SMALL_INPUT, make_series, ras_affine, save, tiny_encryptor

OVERLAYS = DATA_STORE / "MR-SIEMENS-DICOM-WithOverlays.dcm"


def _all_elements(ds: Dataset) -> list[pydicom.DataElement]:
    out = []
    for elem in ds:
        out.append(elem)
        if elem.VR == "SQ":
            for item in elem.value:
                out.extend(_all_elements(item))
    return out


def test_real_overlays_and_private_tags_are_dropped(tmp_path: Path) -> None:
    source = pydicom.dcmread(OVERLAYS)
    overlay = source[0x60003000].value
    private_blob = source[0x00291110].value
    assert len(overlay) > 1000 and len(private_blob) > 1000  # the file really has both
    volume = read_image(OVERLAYS)
    encrypted = encrypt_volume(volume, tiny_encryptor(), "a", slices=[0], preprocess=SMALL_INPUT)
    (written,) = write_like(volume, encrypted, tmp_path / "out")
    derived = pydicom.dcmread(written)
    assert not [e.tag for e in _all_elements(derived) if e.tag.is_private]
    assert not [e.tag for e in derived if 0x6000 <= e.tag.group <= 0x601E]
    data = written.read_bytes()
    assert overlay not in data and private_blob not in data
    assert derived.PatientName == source.PatientName and derived.Rows == source.Rows  # the rest is kept


def _hide_originals(path: Path) -> bytes:
    """Copy a file's own pixels into every place that can carry free binary data; returns the pixels."""
    ds = pydicom.dcmread(path)
    pixels = ds.PixelData
    ds.add_new(0x00311010, "LO", "HIDDEN COPY")
    ds.add_new(0x00311001, "OB", pixels)  # private, the way the audit found a slice
    ds.add_new(0x60000010, "US", ds.Rows)
    ds.add_new(0x60000011, "US", ds.Columns)
    ds.add_new(0x60003000, "OW", pixels)  # OverlayData
    ds.add_new(0x50003000, "OW", pixels)  # retired CurveData
    wave = Dataset()
    wave.NumberOfWaveformChannels, wave.NumberOfWaveformSamples = 1, len(pixels) // 2
    wave.WaveformBitsAllocated, wave.WaveformSampleInterpretation = 16, "SS"
    wave.WaveformData = pixels
    ds.WaveformSequence = [wave]
    ds.add_new(0x00420011, "OB", pixels)  # EncapsulatedDocument
    ds.add_new(0x00420012, "LO", "application/octet-stream")
    nested = Dataset()
    nested.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    nested.add_new(0x00331010, "LO", "NESTED")
    nested.add_new(0x00331001, "OB", pixels)  # private inside an item
    nested.add_new(0x7FE00008, "OF", pixels)  # FloatPixelData inside an item
    ds.ReferencedImageSequence = [nested]
    ds.add_new(0xFFFCFFFC, "OB", pixels)  # DataSetTrailingPadding
    ds.save_as(path)
    return pixels


def test_an_original_slice_hidden_anywhere_does_not_survive(tmp_path: Path) -> None:
    stored = np.random.default_rng(2).integers(100, 3000, size=(3, 12, 10)).astype(np.uint16)
    paths = make_series(tmp_path / "s", stored)
    hidden = {p: _hide_originals(p) for p in paths}
    volume = read_image(tmp_path / "s")
    encrypted = encrypt_volume(volume, tiny_encryptor(), "a", slices=[0, 1, 2], preprocess=SMALL_INPUT)
    written = write_like(volume, encrypted, tmp_path / "out")
    for out in written:
        data = out.read_bytes()
        derived = pydicom.dcmread(out)
        for pixels in hidden.values():
            assert pixels not in data
        assert "WaveformSequence" not in derived and "DataSetTrailingPadding" not in derived
        assert not [e.tag for e in _all_elements(derived) if e.tag.group in (0x0042, 0x5000, 0x5400, 0x6000)]
        assert not [e.tag for e in _all_elements(derived) if e.tag.is_private]
        assert derived.ReferencedImageSequence[0].ReferencedSOPInstanceUID  # the public part of the item stays
        assert "FloatPixelData" not in derived.ReferencedImageSequence[0]


def test_keep_private_keeps_the_listed_tags_and_their_creator(tmp_path: Path) -> None:
    stored = np.random.default_rng(3).integers(0, 3000, size=(2, 6, 5)).astype(np.uint16)
    make_series(tmp_path / "s", stored)  # private block 0029: creator 0010, 1010 (OB), 1011 (LO)
    volume = read_image(tmp_path / "s")
    written = write_like(volume, volume.voxels, tmp_path / "a", keep_private=[(0x0029, 0x1011)])
    derived = pydicom.dcmread(written[0])
    assert derived[0x00291011].value == "vendor note" and derived[0x00290010].value == "MEDENC TEST"
    assert 0x00291010 not in derived
    written = write_like(volume, volume.voxels, tmp_path / "b", keep_private=["0029,1010", "(0029,1011)"])
    derived = pydicom.dcmread(written[0])
    assert derived[0x00291010].value == b"\x01\x02\x03\x04" and 0x00291011 in derived
    with pytest.raises(InputError, match=r"0010,0010, which is not a private tag"):
        write_like(volume, volume.voxels, tmp_path / "c", keep_private=["0010,0010"])
    assert not (tmp_path / "c").exists()
    assert parse_tag("00291010") == parse_tag((0x29, 0x1010)) == 0x00291010
    with pytest.raises(ValueError, match="not a DICOM tag"):
        parse_tag("29,10")


def test_nifti_header_extensions_are_not_copied(tmp_path: Path) -> None:
    data = np.random.default_rng(4).integers(0, 1000, size=(6, 5, 4)).astype(np.int16)
    src = save(tmp_path / "t1.nii.gz", data, ras_affine())
    img = nib.load(src)
    original = np.asarray(img.dataobj).tobytes()
    img.header.extensions.append(nib.nifti1.Nifti1Extension(4, original))  # an AFNI-code extension
    nib.save(img, tmp_path / "ext.nii.gz")
    assert len(nib.load(tmp_path / "ext.nii.gz").header.extensions) == 1
    volume = read_image(tmp_path / "ext.nii.gz")
    encrypted = encrypt_volume(volume, tiny_encryptor(), "a", slices=[1], preprocess=SMALL_INPUT)
    (out,) = write_like(volume, encrypted, tmp_path / "out.nii.gz")
    assert len(nib.load(out).header.extensions) == 0
    assert original not in gzip.decompress(out.read_bytes())
    assert np.array_equal(read_image(out).voxels, volume.quantize(encrypted))
