"""DICOM reading and writing on synthetic series built here: planes, sorting, masks, bad input."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medenc.core.slices import largest_tumor_slice
from medenc.errors import InputError, OutputExistsError
from medenc.io import UnevenSpacingWarning, read_image, read_mask, write_like
from medenc.study.encrypt import encrypt_volume
from tests.helpers import (
    SHAPE,
    SMALL_INPUT,
    TEST_FILES,
    TUMOR_Z,
    canonical_to_plane,
    dataset_diff,
    make_series,
    phantom,
    tiny_encryptor,
)


def _seg(paths: list[Path], mask: np.ndarray, plane: str, out: Path) -> Path:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sources = sorted((pydicom.dcmread(p) for p in paths), key=lambda d: d.InstanceNumber)
    by_uid = {d.SOPInstanceUID: d for d in sources}
    # the plane slices of the mask, in the same order as canonical_to_plane (along the normal)
    planes = canonical_to_plane(mask, plane)
    ordered = sorted(
        by_uid.values(),
        key=lambda d: float(
            np.array(d.ImagePositionPatient, float)
            @ np.cross(*np.array(d.ImageOrientationPatient, float).reshape(2, 3))
        ),
    )
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="tumor",
        segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=ordered,
        pixel_array=np.stack(planes).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=hd.UID(),
        series_number=50,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medenc tests",
        manufacturer_model_name="synthetic",
        software_versions="0",
        device_serial_number="0",
    )
    seg.save_as(out)
    return out


@pytest.mark.parametrize("plane", ["sagittal", "coronal", "axial"])
def test_non_axial_series_comes_back_axial_with_the_right_slice(plane: str, tmp_path: Path) -> None:
    stored, mask = phantom()
    paths = make_series(tmp_path / "series", stored, plane, spacing=(2.0, 1.0, 1.5))
    volume = read_image(tmp_path / "series")
    assert volume.shape == SHAPE
    assert np.array_equal(volume.voxels, stored.astype(np.float32))
    seg_mask = read_mask(_seg(paths, mask, plane, tmp_path / "seg.dcm"), like=volume)
    assert np.array_equal(seg_mask, mask)
    k = largest_tumor_slice(seg_mask)
    assert k == TUMOR_Z

    encrypted = encrypt_volume(volume, tiny_encryptor(steps=2), "a", slices=[k], preprocess=SMALL_INPUT)
    changed = np.flatnonzero((encrypted != volume.voxels).any(axis=(1, 2)))
    assert changed.tolist() == [k]
    written = write_like(volume, encrypted, tmp_path / "out", slices=[k])
    # an axial series writes the one file holding slice k; other planes need every file (one row each)
    assert len(written) == (1 if plane == "axial" else len(paths))
    again = read_image(written[0] if plane == "axial" else tmp_path / "out")
    expected = volume.quantize(encrypted)
    if plane == "axial":
        assert np.array_equal(again.voxels[0], expected[k])
    else:
        assert np.array_equal(again.voxels, expected)
        assert np.array_equal(again.affine, volume.affine)


def test_private_tags_and_icon_removed_rescale_inverted(tmp_path: Path) -> None:
    stored, _ = phantom()
    make_series(tmp_path / "s", stored.astype(np.int16) - 1000, slope=2.5, intercept=-100.0, signed=True)
    volume = read_image(tmp_path / "s")
    assert volume.codec.dtype == np.int16 and (volume.codec.lo, volume.codec.hi) == (-2048, 2047)
    np.testing.assert_allclose(volume.voxels, (stored.astype(np.float64) - 1000) * 2.5 - 100.0)
    lo, hi = volume.bounds([0])
    # low: the stored range's end raised to the volume's darkest voxel (the valid range); high: the stored range
    assert lo.min() == volume.voxels.min() > -2048 * 2.5 - 100 and hi.max() == 2047 * 2.5 - 100
    new = volume.voxels.copy()
    new[0, 0, 0] = 1e9  # far beyond the stored range: clipped to 2047
    new[0, 0, 1] = new[0, 0, 1] + 2.4  # rounds to one stored unit
    write_like(volume, new, tmp_path / "out", slices=[0])
    (derived_path,) = sorted((tmp_path / "out").iterdir())
    derived = pydicom.dcmread(derived_path)
    source = pydicom.dcmread(volume.frames[0].path)
    assert derived.pixel_array[0, 0] == 2047
    assert derived.pixel_array[0, 1] == source.pixel_array[0, 1] + 1
    assert not any(elem.tag.is_private for elem in derived)  # private tags are dropped by default
    assert "IconImageSequence" not in derived
    assert dataset_diff(source, derived) == {
        "SOPInstanceUID", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "ImageType",
        "DerivationDescription", "SourceImageSequence", "PixelData", "IconImageSequence",
        "(0029,0010)", "(0029,1010)", "(0029,1011)",
    }  # fmt: skip
    assert derived.ImageType == ["DERIVED", "SECONDARY", "M", "NORM"]
    assert derived.SeriesDescription == "T1 axial (medenc)" and derived.SeriesNumber == 1003


def test_folder_with_several_series_takes_the_largest_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stored, _ = phantom()
    make_series(tmp_path / "big", stored)
    make_series(tmp_path / "small", stored[:3])
    with caplog.at_level(logging.WARNING):
        volume = read_image(tmp_path)
    assert volume.shape[0] == SHAPE[0]
    assert "holds 2 series" in caplog.text
    small_uid = pydicom.dcmread(next((tmp_path / "small").iterdir())).SeriesInstanceUID
    assert read_image(tmp_path, series=small_uid).shape[0] == 3
    with pytest.raises(InputError, match=r"series 1\.2\.3 is not here"):
        read_image(tmp_path, series="1.2.3")


def test_mixed_series_without_a_choice_is_an_error(tmp_path: Path) -> None:
    # dicomdirtests MR2: three series, two of them with three images each (a tie)
    with pytest.raises(InputError, match=r"MR2: mixed series and no choice.*tip: pass series="):
        read_image(TEST_FILES / "dicomdirtests/98892003/MR2")
    stored, _ = phantom()
    a = make_series(tmp_path / "a", stored[:2])
    b = make_series(tmp_path / "b", stored[:2])
    with pytest.raises(InputError, match="mixed series"):
        read_image([a[0], b[0]])


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("README.txt", "not a DICOM file"),
        ("rtplan.dcm", "no PixelData"),
        ("examples_rgb_color.dcm", r"unsupported photometric interpretation RGB.*tip: convert"),
        ("examples_palette.dcm", r"unsupported photometric interpretation PALETTE COLOR"),
        ("dicomdirtests/98892003/MR700", "different orientations"),
        ("dicomdirtests/98892001/CT2N", "different orientations"),
        ("no_such_file.dcm", "no such file"),
    ],
)
def test_bad_input_gives_a_clear_error_naming_the_file(path: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as caught:
        read_image(TEST_FILES / path)
    assert str(caught.value).count("\n") == 0
    assert caught.value.path is not None


def test_uneven_spacing_warns_or_fails(tmp_path: Path) -> None:
    folder = TEST_FILES / "dicomdirtests/77654033/CT2"
    with pytest.warns(UnevenSpacingWarning):
        read_image(folder)
    with pytest.raises(InputError, match="uneven slice spacing"):
        read_image(folder, on_uneven_spacing="error")


def test_duplicate_positions_are_an_error(tmp_path: Path) -> None:
    stored, _ = phantom()
    make_series(tmp_path / "a", stored[:2])
    for path in make_series(tmp_path / "b", stored[:2]):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = pydicom.dcmread(next((tmp_path / "a").iterdir())).SeriesInstanceUID
        ds.save_as(path)
    with pytest.raises(InputError, match="share one slice position"):
        read_image(tmp_path)


def test_outputs_are_never_overwritten_and_inputs_never_touched(tmp_path: Path) -> None:
    stored, _ = phantom()
    paths = make_series(tmp_path / "s", stored[:2])
    before = {p: p.read_bytes() for p in paths}
    volume = read_image(tmp_path / "s")
    write_like(volume, volume.voxels, tmp_path / "out")
    with pytest.raises(OutputExistsError):
        write_like(volume, volume.voxels, tmp_path / "out")
    write_like(volume, volume.voxels + 1, tmp_path / "out", force=True)
    with pytest.raises(InputError, match="replace the input"):
        write_like(volume, volume.voxels, tmp_path / "s", force=True)
    with pytest.raises(InputError, match="replace the input"):
        write_like(volume, volume.voxels, tmp_path, force=True)
    assert {p: p.read_bytes() for p in paths} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "s"]


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    stored, _ = phantom()
    make_series(tmp_path / "s", stored[:2])
    volume = read_image(tmp_path / "s")
    with pytest.raises(ValueError, match="shape"):
        write_like(volume, volume.voxels[:1], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_multiframe_subset_keeps_per_frame_groups(tmp_path: Path) -> None:
    from tests.helpers import DATA_STORE

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        volume = read_image(DATA_STORE / "eCT_Supplemental.dcm")
    assert volume.shape == (2, 512, 512)
    written = write_like(volume, volume.voxels, tmp_path / "out", slices=[1])
    derived = pydicom.dcmread(written[0])
    source = pydicom.dcmread(volume.frames[0].path)
    assert derived.NumberOfFrames == 1 and len(derived.PerFrameFunctionalGroupsSequence) == 1
    frame = volume.frames[volume.layout.stored_slices_of([1])[0]].frame
    kept = derived.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0].ImagePositionPatient
    assert kept == source.PerFrameFunctionalGroupsSequence[frame].PlanePositionSequence[0].ImagePositionPatient
    derivation = derived.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
    assert derivation.SourceImageSequence[0].ReferencedFrameNumber == frame + 1
    assert derived.SharedFunctionalGroupsSequence[0].CTImageFrameTypeSequence[0].FrameType[:2] == [
        "DERIVED",
        "PRIMARY",  # enhanced images allow only PRIMARY as value 2
    ]
    assert np.array_equal(derived.pixel_array, source.pixel_array[frame])
