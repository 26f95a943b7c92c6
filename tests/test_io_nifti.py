"""NIfTI volumes: header, affine and stored dtype kept; 2D, 4D, crops and bad files."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medenc.core.slices import largest_tumor_slice
from medenc.errors import InputError, OutputExistsError
from medenc.io import read_image, write_like
from medenc.study.encrypt import encrypt_volume
from tests.helpers import SMALL_INPUT, ras_affine, save, tiny_encryptor


def test_round_trip_keeps_header_affine_and_dtype(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    stored = rng.integers(-500, 1500, size=(10, 12, 8)).astype(np.int16)  # (x, y, z), RAS
    src = save(tmp_path / "t1.nii.gz", stored, ras_affine(), slope=0.5, inter=10.0)
    volume = read_image(src)
    # canonical LPS (Z, Y, X): x and y flipped, axes reversed
    assert volume.shape == (8, 12, 10)
    np.testing.assert_allclose(volume.voxels, (stored * 0.5 + 10.0).transpose(2, 1, 0)[:, ::-1, ::-1])
    mask = np.zeros(volume.shape, bool)
    mask[5, 3:6, 2:7] = True
    k = largest_tumor_slice(mask)
    encrypted = encrypt_volume(volume, tiny_encryptor(), 1, slices=[k], preprocess=SMALL_INPUT)
    (out,) = write_like(volume, encrypted, tmp_path / "enc.nii.gz")

    before, after = nib.load(src), nib.load(out)
    assert after.get_data_dtype() == np.int16
    assert np.array_equal(after.affine, before.affine)
    for field in ("qform_code", "sform_code", "pixdim", "xyzt_units", "descrip", "srow_x", "quatern_b", "qoffset_x"):
        assert np.array_equal(after.header[field], before.header[field]), field
    assert (after.dataobj.slope, after.dataobj.inter) == (0.5, 10.0)
    expected = volume.quantize(encrypted)
    assert np.array_equal(read_image(out).voxels, expected)
    raw_before, raw_after = np.asarray(before.dataobj.get_unscaled()), np.asarray(after.dataobj.get_unscaled())
    changed_z = np.flatnonzero((raw_before != raw_after).any(axis=(0, 1)))
    assert changed_z.tolist() == [k]  # stored z runs inferior -> superior like canonical z


def test_float_volume_stays_float(tmp_path: Path) -> None:
    data = np.random.default_rng(1).normal(size=(6, 7, 5)).astype(np.float32)
    volume = read_image(save(tmp_path / "f.nii", data, ras_affine()))
    new = volume.voxels + 0.123
    (out,) = write_like(volume, new, tmp_path / "g.nii")
    img = nib.load(out)
    assert img.get_data_dtype() == np.float32
    np.testing.assert_allclose(read_image(out).voxels, new, rtol=0, atol=1e-6)


def test_values_that_do_not_fit_go_out_as_float32(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = np.full((4, 4, 3), 250, dtype=np.uint8)
    volume = read_image(save(tmp_path / "u8.nii", data, ras_affine()))
    with caplog.at_level(logging.INFO):
        (out,) = write_like(volume, volume.voxels + 10.4, tmp_path / "o.nii")
    assert "writing float32" in caplog.text
    assert nib.load(out).get_data_dtype() == np.float32
    np.testing.assert_allclose(read_image(out).voxels, 260.4, atol=1e-4)


def test_2d_nifti_is_read_and_written_as_2d(tmp_path: Path) -> None:
    data = np.arange(30, dtype=np.int16).reshape(5, 6)
    volume = read_image(save(tmp_path / "two.nii", data, ras_affine()))
    assert volume.shape == (1, 6, 5)
    (out,) = write_like(volume, volume.voxels + 1, tmp_path / "two_out.nii")
    assert nib.load(out).shape == (5, 6)
    assert np.array_equal(np.asarray(nib.load(out).dataobj), data + 1)


def test_4d_needs_a_volume(tmp_path: Path) -> None:
    data = np.zeros((4, 4, 3, 2), dtype=np.int16)
    data[..., 1] = 7
    path = save(tmp_path / "four.nii.gz", data, ras_affine())
    with pytest.raises(InputError, match=r"four\.nii\.gz: 4D image with 2 volumes.*tip: pass volume="):
        read_image(path)
    assert read_image(path, volume=1).voxels.max() == 7
    with pytest.raises(InputError, match="outside"):
        read_image(path, volume=2)


def test_writing_some_slices_crops_and_shifts_the_affine(tmp_path: Path) -> None:
    data = np.random.default_rng(2).integers(0, 100, size=(5, 6, 7)).astype(np.int16)
    volume = read_image(save(tmp_path / "v.nii", data, ras_affine()))
    (out,) = write_like(volume, volume.voxels, tmp_path / "slice.nii", slices=[2, 3])
    cropped = nib.load(out)
    assert cropped.shape == (5, 6, 2)
    # voxel (0, 0, 0) of the crop is where stored voxel (0, 0, 2) was
    np.testing.assert_allclose(cropped.affine @ [0, 0, 0, 1], nib.load(tmp_path / "v.nii").affine @ [0, 0, 2, 1])
    assert np.array_equal(np.asarray(cropped.dataobj), data[:, :, 2:4])
    with pytest.raises(InputError, match="not contiguous"):
        write_like(volume, volume.voxels, tmp_path / "gap.nii", slices=[1, 4])


def test_bad_nifti_files(tmp_path: Path) -> None:
    good = save(tmp_path / "ok.nii.gz", np.ones((4, 4, 4), np.int16), ras_affine())
    truncated = tmp_path / "cut.nii.gz"
    truncated.write_bytes(good.read_bytes()[:60])
    with pytest.raises(InputError, match=r"cut\.nii\.gz: .*truncated"):
        read_image(truncated)
    text = tmp_path / "text.nii"
    text.write_text("hello")
    with pytest.raises(InputError, match=r"text\.nii"):
        read_image(text)
    rgb = tmp_path / "rgb.nii"
    data = np.zeros((3, 3, 2), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(data, np.eye(4)), rgb)
    with pytest.raises(InputError, match=r"RGB.*tip"):
        read_image(rgb)


def test_no_overwrite_without_force(tmp_path: Path) -> None:
    src = save(tmp_path / "a.nii", np.ones((3, 3, 3), np.int16), ras_affine())
    volume = read_image(src)
    write_like(volume, volume.voxels, tmp_path / "b.nii")
    with pytest.raises(OutputExistsError):
        write_like(volume, volume.voxels, tmp_path / "b.nii")
    with pytest.raises(InputError, match="replace the input"):
        write_like(volume, volume.voxels, src, force=True)
    with pytest.raises(InputError, match=r"\.nii or \.nii\.gz"):
        write_like(volume, volume.voxels, tmp_path / "c.img")
