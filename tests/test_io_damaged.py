"""Hostile input (issue #22): stray files, odd names, decompression bombs, damaged pixels, bad headers.

Each is a one-line :class:`InputError` naming the file and the right cause, a warning, or a
documented rule; never a traceback, never damaged data read as valid. The inputs are built here.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import warnings
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames

from medenc.errors import InputError
from medenc.io import SkippedFilesWarning, read_image, read_mask
from tests.helpers import DATA_STORE, TEST_FILES, make_series, ras_affine, save

STORED = np.random.default_rng(0).integers(0, 3000, size=(4, 12, 10)).astype(np.uint16)


def series(folder: Path, edit: Callable[[pydicom.Dataset], None] | None = None, n: int = 4) -> list[Path]:
    """A synthetic axial series, each file passed through ``edit``."""
    paths = make_series(folder, STORED[:n])
    for path in paths if edit else []:
        ds = pydicom.dcmread(path)
        edit(ds)
        ds.save_as(path)
    return paths


def one_line_error(path: Path | list[Path], match: str, **kwargs: object) -> InputError:
    with pytest.raises(InputError, match=match) as caught:
        read_image(path, **kwargs)
    message = str(caught.value)
    assert "\n" not in message, message
    assert caught.value.path is not None
    message.encode("utf-8")  # printable whatever the file name
    return caught.value


# --- item 7: stray files -------------------------------------------------------------------------


def test_a_stray_small_file_is_skipped_with_a_warning(tmp_path: Path) -> None:
    series(tmp_path / "study")
    (tmp_path / "study" / "notes.txt").write_bytes(b"Etc/UTC\n")
    with pytest.warns(SkippedFilesWarning, match=r"skipped 1 file.*notes\.txt"):
        volume = read_image(tmp_path / "study")
    assert volume.shape == STORED.shape


def test_a_damaged_dicom_file_in_a_folder_is_refused_not_skipped(tmp_path: Path) -> None:
    paths = series(tmp_path / "study")
    paths[1].write_bytes(paths[1].read_bytes()[:300])  # cut inside the header: DICM marker, broken elements
    one_line_error(tmp_path / "study", rf"{paths[1].name}: truncated: a MR Image Storage header that ends before Rows")


def test_a_folder_of_only_non_dicom_files_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "notes.txt").write_bytes(b"Etc/UTC\n")
    (tmp_path / "study" / "big.bin").write_bytes(bytes(range(256)) * 8)
    one_line_error(tmp_path / "study", r"no DICOM image found; skipped 2 non-DICOM file\(s\): big\.bin, notes\.txt")
    one_line_error(tmp_path / "study" / "notes.txt", "not a DICOM file")


# --- item 10: file names that are not UTF-8 --------------------------------------------------------


def test_file_names_that_are_not_utf8_are_read_or_named_printably(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    paths = series(folder)
    raw = os.fsencode(folder)
    os.rename(paths[0], raw + b"/slice\xff\xfe.dcm")
    with open(raw + b"/notes\xff.txt", "wb") as handle:
        handle.write(b"Etc/UTC\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        volume = read_image(folder)
    assert volume.shape == STORED.shape  # the DICOM file with the odd name is read
    (skip,) = [w for w in caught if issubclass(w.category, SkippedFilesWarning)]
    assert "notes\\xff.txt" in str(skip.message)
    str(skip.message).encode("utf-8")
    os.remove(raw + b"/notes\xff.txt")
    with open(raw + b"/slice\xff\xfe.dcm", "r+b") as handle:  # damage the odd-named file's pixel data
        handle.truncate(os.path.getsize(raw + b"/slice\xff\xfe.dcm") - 40)
    error = one_line_error(folder, r"slice\\xff\\xfe\.dcm: truncated pixel data")
    assert "\\xff" in str(error.path)


# --- item 8: decompression bombs ------------------------------------------------------------------


def _nifti_bomb(path: Path, shape: tuple[int, ...]) -> Path:
    """A gzip NIfTI whose header declares ``shape`` int16 voxels, with a few bytes of data."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    header["vox_offset"] = 352
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + bytes(300_000)))
    return path


def test_a_nifti_declaring_too_many_voxels_is_refused_before_reading(tmp_path: Path) -> None:
    bomb = _nifti_bomb(tmp_path / "bomb.nii.gz", (3000, 3000, 1200))  # 10.8e9 voxels, 21.6 GB
    error = one_line_error(bomb, r"bomb\.nii\.gz: the NIfTI header \(int16\) declares 3000 x 3000 x 1200")
    assert "21.6 GB" in str(error) and "MEDENC_MAX_VOXELS" in str(error)
    mask = _nifti_bomb(tmp_path / "mask.nii.gz", (4000, 4000, 600))  # the 19 GB mask
    with pytest.raises(InputError, match=r"mask\.nii\.gz: the NIfTI header .* over the limit"):
        read_mask(mask, like=read_image(save(tmp_path / "ok.nii", np.ones((4, 4, 4), np.int16), ras_affine())))


def test_the_limit_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save(tmp_path / "v.nii.gz", np.ones((20, 20, 10), np.int16), ras_affine())
    assert read_image(path).shape == (10, 20, 20)
    monkeypatch.setenv("MEDENC_MAX_VOXELS", "3999")
    one_line_error(path, r"declares 20 x 20 x 10 = 4,000 voxels .* over the limit of 3,999")
    assert read_image(path, max_voxels=4000).shape == (10, 20, 20)  # the keyword wins
    series(tmp_path / "dicom")  # 4 x 12 x 10 = 480 voxels
    monkeypatch.setenv("MEDENC_MAX_VOXELS", "400")
    one_line_error(tmp_path / "dicom", r"series \(all its files together\) declares 480 voxels")
    monkeypatch.setenv("MEDENC_MAX_VOXELS", "lots")
    with pytest.raises(InputError, match="MEDENC_MAX_VOXELS must be a positive integer"):
        read_image(path)


def test_a_dicom_declaring_a_huge_image_is_refused_before_decoding(tmp_path: Path) -> None:
    ds = pydicom.dcmread(DATA_STORE / "emri_small_RLE.dcm")
    ds.Rows, ds.Columns = 65535, 65535  # 10 frames: 43e9 voxels from a 40 KB file
    ds.save_as(tmp_path / "bomb.dcm")
    one_line_error(tmp_path / "bomb.dcm", r"bomb\.dcm: the DICOM image .* declares 65535 x 65535 x 10")


def test_a_gzipped_dicom_bomb_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = (TEST_FILES / "MR_small.dcm").read_bytes()
    (tmp_path / "ok.dcm.gz").write_bytes(gzip.compress(data))
    assert read_image(tmp_path / "ok.dcm.gz").shape == (1, 64, 64)
    (tmp_path / "bomb.dcm.gz").write_bytes(gzip.compress(data + bytes(40_000_000)))
    monkeypatch.setenv("MEDENC_MAX_VOXELS", "5000")
    one_line_error(tmp_path / "bomb.dcm.gz", r"bomb\.dcm\.gz: the gzip data expands beyond")


# --- item 9: damaged pixel data -------------------------------------------------------------------


def _reframe(src: Path, out: Path, damage: Callable[[bytearray], None]) -> Path:
    """``src`` with its first compressed frame damaged in place (the item structure stays valid)."""
    ds = pydicom.dcmread(src)
    frames = [bytearray(f) for f in generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1)))]
    damage(frames[0])
    ds.PixelData = encapsulate([bytes(f) for f in frames])
    ds.save_as(out)
    return out


def _zero_run(frame: bytearray) -> None:
    frame[len(frame) // 3 : len(frame) // 3 + 64] = bytes(64)


def _cut(frame: bytearray) -> None:
    del frame[len(frame) // 2 :]


def test_corrupt_rle_is_an_error(tmp_path: Path) -> None:
    path = _reframe(DATA_STORE / "emri_small_RLE.dcm", tmp_path / "rle.dcm", _zero_run)
    one_line_error(path, r"rle\.dcm: damaged RLE Lossless pixel data")


def _flip(frame: bytearray) -> None:
    for i in range(100, len(frame) - 2, 97):
        frame[i] ^= 0x5A


def test_corrupt_jpeg2000_is_one_line_with_the_right_cause(tmp_path: Path) -> None:
    path = _reframe(DATA_STORE / "emri_small_jpeg_2k_lossless.dcm", tmp_path / "cut.dcm", _cut)
    one_line_error(path, r"cut\.dcm: truncated compressed pixel data: frame 1 does not end with its end-of-image")
    path = _reframe(DATA_STORE / "MR2_J2KR.dcm", tmp_path / "j2k.dcm", _flip)
    error = one_line_error(path, r"j2k\.dcm: cannot decode the JPEG 2000 .* damaged data \(pylibjpeg: ")
    assert "NoneType" not in str(error) and "install" not in str(error)  # not gdcm's bug, not a missing plugin


def test_rows_smaller_than_the_data_is_an_error(tmp_path: Path) -> None:
    (path,) = series(tmp_path / "s", lambda ds: setattr(ds, "Rows", 5), n=1)
    one_line_error(path, r"holds 240 bytes, more than Rows 5 x Columns 10 .*smaller than the data")
    (path,) = series(tmp_path / "t", lambda ds: setattr(ds, "Rows", 20), n=1)
    one_line_error(path, r"truncated pixel data: 240 bytes, Rows 20 x Columns 10")
    ds = pydicom.dcmread(TEST_FILES / "MR_small_jpeg_ls_lossless.dcm")
    ds.Rows = 32
    ds.save_as(tmp_path / "jls.dcm")
    one_line_error(tmp_path / "jls.dcm", r"frame 1's compressed data is 64 x 64 pixels but the header says Rows 32")
    ds = pydicom.dcmread(DATA_STORE / "emri_small_jpeg_2k_lossless.dcm")
    ds.Rows = 32
    ds.save_as(tmp_path / "j2k.dcm")
    one_line_error(tmp_path / "j2k.dcm", r"64 x 64 pixels but the header says Rows 32 x Columns 64")


@pytest.mark.parametrize("frames", [0, -1, "2.5"])
def test_number_of_frames_must_be_positive(tmp_path: Path, frames: object) -> None:
    (path,) = series(tmp_path / "s", lambda ds: setattr(ds, "NumberOfFrames", frames), n=1)
    one_line_error(path, r"NumberOfFrames .* is not a positive whole number")


def test_more_compressed_frames_than_declared_is_an_error(tmp_path: Path) -> None:
    ds = pydicom.dcmread(DATA_STORE / "emri_small_RLE.dcm")
    ds.NumberOfFrames = 8
    ds.save_as(tmp_path / "rle.dcm")
    one_line_error(tmp_path / "rle.dcm", r"holds 10 frame\(s\) but NumberOfFrames is 8")


def test_zero_padding_after_the_pixel_data_is_still_read() -> None:
    assert read_image(TEST_FILES / "MR_small_padded.dcm").shape == (1, 64, 64)


# --- items 10 and 12: header values ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("keyword", "value", "message"),
    [
        ("RescaleSlope", "NaN", "RescaleSlope NaN is not a finite number"),
        ("RescaleSlope", "inf", "RescaleSlope inf is not a finite number"),
        ("RescaleIntercept", "-inf", "RescaleIntercept -inf is not a finite number"),
        ("RescaleSlope", "0", "RescaleSlope is 0"),
        ("PixelSpacing", ["0", "1"], r"PixelSpacing must be two positive numbers"),
        ("PixelSpacing", ["-1", "1"], r"PixelSpacing must be two positive numbers"),
        ("PixelSpacing", ["NaN", "1"], r"PixelSpacing must be 2 finite numbers"),
        ("ImageOrientationPatient", ["1", "0", "0", "0.7", "0.7", "0"], "not two perpendicular unit vectors"),
        ("ImageOrientationPatient", ["0", "0", "0", "0", "1", "0"], "not two perpendicular unit vectors"),
        ("ImagePositionPatient", ["0", "NaN", "0"], "ImagePositionPatient must be 3 finite numbers"),
    ],
)
def test_bad_header_numbers_are_one_line_errors(tmp_path: Path, keyword: str, value: object, message: str) -> None:
    series(tmp_path / "s", lambda ds: setattr(ds, keyword, value))
    one_line_error(tmp_path / "s", message)


def test_duplicate_sop_instance_uids_are_an_error(tmp_path: Path) -> None:
    paths = series(tmp_path / "s")
    uid = pydicom.dcmread(paths[0]).SOPInstanceUID
    ds = pydicom.dcmread(paths[2])
    ds.SOPInstanceUID = uid
    ds.save_as(paths[2])
    error = one_line_error(tmp_path / "s", rf"SOPInstanceUID {uid} is also the UID of slice\d+\.dcm: two files")
    assert paths[0].name in str(error) and paths[2].name in str(error)


def test_one_file_without_position_does_not_reorder_the_series(tmp_path: Path) -> None:
    paths = series(tmp_path / "s")
    ds = pydicom.dcmread(paths[1])
    del ds.ImagePositionPatient
    ds.save_as(paths[1])
    one_line_error(tmp_path / "s", rf"{paths[1].name}: 1 of 4 images have no ImagePositionPatient")


def test_nan_in_a_mask_is_an_error(tmp_path: Path) -> None:
    image = read_image(save(tmp_path / "img.nii", np.ones((6, 6, 4), np.int16), ras_affine()))
    labels = np.zeros((6, 6, 4), np.float32)
    labels[2:4, 2:4, 1] = 1
    labels[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(labels, ras_affine()), tmp_path / "mask.nii.gz")
    with pytest.raises(InputError, match=r"mask\.nii\.gz: the mask holds 1 NaN or infinite voxel"):
        read_mask(tmp_path / "mask.nii.gz", like=image)


def test_a_mask_offset_from_the_image_names_the_origin(tmp_path: Path) -> None:
    image = read_image(save(tmp_path / "img.nii", np.ones((6, 6, 4), np.int16), ras_affine()))
    labels = np.zeros((6, 6, 4), np.uint8)
    labels[2:4, 2:4, 1] = 1
    shifted = ras_affine()
    shifted[:3, 3] += [3.0, 0.0, 0.0]  # same shape and voxel size, 3 voxels off
    nib.save(nib.Nifti1Image(labels, shifted), tmp_path / "off.nii.gz")
    with pytest.raises(InputError, match=r"off\.nii\.gz: mask grid .*covers another extent.*origin"):
        read_mask(tmp_path / "off.nii.gz", like=image)
    half = ras_affine()
    half[:3, 3] += [0.5, 0.0, 0.0]
    nib.save(nib.Nifti1Image(labels, half), tmp_path / "half.nii.gz")
    with pytest.raises(InputError, match=r"offset by \[0\.5, 0\.0, 0\.0\] voxel \(origin mismatch\)"):
        read_mask(tmp_path / "half.nii.gz", like=image)


def test_a_mask_for_an_image_without_geometry_blames_the_image(tmp_path: Path) -> None:
    image = read_image(DATA_STORE / "emri_small.dcm")  # no ImagePositionPatient / ImageOrientationPatient
    labels = np.zeros(image.shape[::-1], np.uint8)
    labels[10:20, 10:20, 3] = 1
    affine = np.diag([-0.9, -0.9, 5.0, 1.0])
    affine[:3, 3] = [100.0, 100.0, -20.0]
    nib.save(nib.Nifti1Image(labels, affine), tmp_path / "mask.nii.gz")
    with pytest.raises(InputError, match=r"mask\.nii\.gz: mask grid .*the image has no ImagePositionPatient"):
        read_mask(tmp_path / "mask.nii.gz", like=image)


def test_a_file_cut_before_its_pixels_is_called_truncated_not_a_non_image(tmp_path: Path) -> None:
    data = (TEST_FILES / "MR_small.dcm").read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.PixelData = b""  # find where the pixel data starts
    cut = len(data) - 8192 - 12
    (tmp_path / "cut.dcm").write_bytes(data[:cut])
    error = one_line_error(tmp_path / "cut.dcm", r"cut\.dcm: truncated")
    assert "not an image" not in str(error)
    error = one_line_error(TEST_FILES / "MR_truncated.dcm", r"truncated pixel data: 8130 bytes")
    assert "pylibjpeg" not in str(error)  # no tip about decoders for an uncompressed file


def test_a_truncated_nifti_says_its_data_is_cut(tmp_path: Path) -> None:
    good = save(tmp_path / "ok.nii", np.ones((8, 8, 8), np.int16), ras_affine())
    (tmp_path / "cut.nii").write_bytes(good.read_bytes()[:700])
    error = one_line_error(tmp_path / "cut.nii", r"cut\.nii: truncated or damaged image data: the header declares 8 ")
    assert "not a NIfTI" not in str(error)


def test_codestream_parser_reads_jpeg_sizes() -> None:
    from medenc.io.dicom_pixels import _codestream_size

    table = b"\xff\xdb" + struct.pack(">H", 4) + b"\0\0"  # a DQT segment before the frame header
    sof = b"\xff\xd8" + table + b"\xff\xc3" + struct.pack(">HBHHB", 11, 16, 7, 9, 1)
    assert _codestream_size(sof, "") == (7, 9)
    assert _codestream_size(b"no header", "") is None
