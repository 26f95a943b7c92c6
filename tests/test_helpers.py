"""The test helpers themselves (tests/helpers.py) do what the other tests rely on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from tests.helpers import PLANES, dataset_diff, make_series


def test_canonical_to_plane_round_trips_each_plane(tmp_path: Path) -> None:
    from medenc.io import read_image

    rng = np.random.default_rng(3)
    canonical = rng.integers(0, 4000, size=(5, 6, 7)).astype(np.uint16)
    for plane in PLANES:
        make_series(tmp_path / plane, canonical, plane, spacing=(3.0, 2.0, 1.0))
        volume = read_image(tmp_path / plane)
        assert volume.shape == canonical.shape, plane
        assert np.array_equal(volume.voxels, canonical.astype(np.float32)), plane
        assert np.allclose(volume.spacing, (3.0, 2.0, 1.0)), plane
        # canonical LPS: voxel steps point to L, P, S, i.e. -x, -y, +z in RAS
        assert np.allclose(np.diag(volume.affine)[:3], [-1.0, -2.0, 3.0]), plane


def test_dataset_diff_sees_changes_and_missing_elements() -> None:
    a, b = Dataset(), Dataset()
    a.PatientName = b.PatientName = "X"
    a.SeriesNumber, b.SeriesNumber = 1, 2
    a.StudyID = "7"
    assert dataset_diff(a, b) == {"SeriesNumber", "StudyID"}


@pytest.mark.parametrize("signed", [False, True])
def test_make_series_writes_readable_files(tmp_path: Path, signed: bool) -> None:
    canonical = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4)
    paths = make_series(tmp_path, canonical, signed=signed)
    assert len(paths) == 2 and pydicom.dcmread(paths[0]).pixel_array.shape == (3, 4)
