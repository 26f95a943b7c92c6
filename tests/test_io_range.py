"""Encrypted images stay inside the source's valid range: never darker than the source's darkest voxel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medenc.io import read_image, write_like
from medenc.io.volume import PixelCodec, Volume
from medenc.study.encrypt import encrypt_volume
from tests.helpers import SMALL_INPUT, make_series, ras_affine, save, tiny_encryptor


def mr_like(low: int, rng: np.random.Generator, shape: tuple[int, int, int] = (24, 24, 4)) -> np.ndarray:
    """A head-like blob on a dark background at ``low`` (an MR magnitude image: nothing below it)."""
    x, y = np.mgrid[0 : shape[0], 0 : shape[1]]
    head = ((x - shape[0] / 2) ** 2 + (y - shape[1] / 2) ** 2) < (shape[0] / 3) ** 2
    data = np.full(shape, low, dtype=np.float64)
    data[head] += rng.normal(800, 150, size=(int(head.sum()), shape[2]))
    return np.clip(np.rint(data), low, None)


def _encrypt_all(volume: Volume) -> np.ndarray:
    slices = list(range(volume.shape[0]))
    encrypted = encrypt_volume(volume, tiny_encryptor(steps=3), "a", slices=slices, preprocess=SMALL_INPUT)
    assert not np.array_equal(encrypted, volume.voxels)
    return encrypted


def test_encrypted_nifti_mr_never_goes_below_the_source_minimum(tmp_path: Path) -> None:
    data = mr_like(0, np.random.default_rng(0)).astype(np.int16)  # signed storage: negatives representable
    volume = read_image(save(tmp_path / "t1.nii.gz", data, ras_affine()))
    assert volume.voxels.min() == 0
    lo, hi = volume.bounds()
    assert lo.min() == 0 and hi.max() == np.iinfo(np.int16).max
    encrypted = _encrypt_all(volume)
    assert encrypted.min() >= 0  # PGD projected onto the valid range
    (out,) = write_like(volume, encrypted, tmp_path / "enc.nii.gz")
    again = read_image(out)
    assert again.voxels.min() >= volume.voxels.min()
    assert again.voxels.max() <= np.iinfo(np.int16).max
    for k in range(again.shape[0]):  # no slice stands out by a negative minimum
        assert again.voxels[k].min() >= 0


def test_encrypted_dicom_never_goes_below_the_source_minimum(tmp_path: Path) -> None:
    data = mr_like(200, np.random.default_rng(1), shape=(4, 24, 24))
    make_series(tmp_path / "s", data.astype(np.uint16), slope=2.5, intercept=-100.0)
    volume = read_image(tmp_path / "s")
    source_min = float(volume.voxels.min())
    assert source_min == 200 * 2.5 - 100
    encrypted = _encrypt_all(volume)
    written = write_like(volume, encrypted, tmp_path / "out")
    again = read_image(tmp_path / "out")
    assert len(written) == 4
    assert again.voxels.min() >= source_min
    assert again.voxels.max() <= 4095 * 2.5 - 100  # BitsStored 12
    assert np.array_equal(again.voxels, volume.quantize(encrypted))


@pytest.mark.parametrize("slope", [2.5, -2.0])
def test_rounding_never_crosses_the_floor(slope: float) -> None:
    codec = PixelCodec(
        dtype=np.dtype(np.int16), lo=-100.0, hi=100.0, slope=np.array([slope]), intercept=np.array([0.3]), floor=1.0
    )
    native = np.array([[-50.0, 0.9, 1.0, 1.2, 30.0]])
    stored = codec.to_stored(native)
    back = codec.to_native(stored, dtype=np.float64)
    assert back.min() >= 1.0
    np.testing.assert_allclose(back[0, -1], 30.0, atol=abs(slope) / 2)
    low, high = codec.native_range()
    assert low[0] == 1.0 and high[0] == max(-100 * slope, 100 * slope) + 0.3
