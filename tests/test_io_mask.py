"""Tumor masks on the image grid: same grid in another storage order, label choice, resampling, errors."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medenc.errors import InputError
from medenc.io import read_image, read_mask
from tests.helpers import TEST_FILES, ras_affine, save

SHAPE_XYZ = (8, 10, 6)


@pytest.fixture
def image(tmp_path: Path):
    data = np.random.default_rng(0).integers(0, 1000, size=SHAPE_XYZ).astype(np.int16)
    return read_image(save(tmp_path / "img.nii.gz", data, ras_affine((1.0, 1.0, 2.0))))


def labels_xyz() -> np.ndarray:
    labels = np.zeros(SHAPE_XYZ, dtype=np.uint8)
    labels[2:5, 3:7, 3] = 1
    labels[3:4, 4:6, 1] = 2
    return labels


def test_mask_on_the_same_grid_stored_flipped(tmp_path: Path, image) -> None:
    labels = labels_xyz()
    # the same voxels stored LPS (x and y reversed) with the matching affine
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine = ras_affine((1.0, 1.0, 2.0)) @ np.array(
        [[-1, 0, 0, SHAPE_XYZ[0] - 1], [0, -1, 0, SHAPE_XYZ[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1]], float
    )
    assert not np.allclose(affine, flip)
    path = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(labels[::-1, ::-1].copy(), affine), path)
    mask = read_mask(path, like=image)
    expected = labels.transpose(2, 1, 0)[:, ::-1, ::-1] != 0  # canonical (Z, Y, X) of the RAS-stored labels
    assert np.array_equal(mask, expected)
    only_two = read_mask(path, like=image, label=2)
    assert only_two.sum() == 2 and only_two[1].sum() == 2


def test_mask_on_another_grid_needs_resample(tmp_path: Path, image) -> None:
    labels = labels_xyz()
    coarse = labels[::2, ::2, :]
    path = tmp_path / "coarse.nii.gz"
    nib.save(nib.Nifti1Image(coarse, ras_affine((2.0, 2.0, 2.0))), path)
    with pytest.raises(InputError, match=r"coarse\.nii\.gz: mask grid .* does not match.*tip: pass resample=True"):
        read_mask(path, like=image)
    mask = read_mask(path, like=image, resample=True)
    assert mask.shape == image.shape
    # nearest neighbour: every image voxel takes the coarse voxel it falls in (index rounded)
    x = np.rint(np.arange(SHAPE_XYZ[0]) / 2).clip(0, coarse.shape[0] - 1).astype(int)
    y = np.rint(np.arange(SHAPE_XYZ[1]) / 2).clip(0, coarse.shape[1] - 1).astype(int)
    inside = (np.arange(SHAPE_XYZ[0]) / 2 <= coarse.shape[0] - 0.5)[:, None] & (
        np.arange(SHAPE_XYZ[1]) / 2 <= coarse.shape[1] - 0.5
    )[None]
    expected_xyz = coarse[x][:, y] * inside[..., None] != 0
    assert np.array_equal(mask, expected_xyz.transpose(2, 1, 0)[:, ::-1, ::-1])


def test_empty_mask_and_missing_label_are_errors(tmp_path: Path, image) -> None:
    path = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(SHAPE_XYZ, np.uint8), ras_affine((1.0, 1.0, 2.0))), path)
    with pytest.raises(InputError, match=r"empty\.nii\.gz: empty mask"):
        read_mask(path, like=image)
    labelled = tmp_path / "labels.nii.gz"
    nib.save(nib.Nifti1Image(labels_xyz(), ras_affine((1.0, 1.0, 2.0))), labelled)
    with pytest.raises(InputError, match="no voxels with label 3"):
        read_mask(labelled, like=image, label=3)


def test_a_dicom_image_is_not_a_mask(image) -> None:
    with pytest.raises(InputError, match=r"MR_small\.dcm: not a mask.*tip"):
        read_mask(TEST_FILES / "MR_small.dcm", like=image)
