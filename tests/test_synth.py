"""Tests of ``medenc synth``: files, geometry, class priors, determinism and argument checks."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from medenc.errors import InputError
from medenc.synth import generate as synth
from medenc.synth.tumors import CLASSES

SIZE = 48


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    synth.write_dataset(out, cases=12, seed=3, size=SIZE, fmt="both")
    return out


def _manifest(out: Path) -> list[dict[str, str]]:
    with open(out / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _lps_affine_from_sitk(image) -> np.ndarray:
    direction = np.array(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.array(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS -> RAS


def test_manifest_layout_and_splits(dataset: Path) -> None:
    rows = _manifest(dataset)
    assert list(rows[0]) == ["case_id", "label", "split", "image", "mask"]
    assert len(rows) == 12
    assert {r["label"] for r in rows} == set(CLASSES)
    for label in CLASSES:
        splits = {r["split"] for r in rows if r["label"] == label}
        assert splits == {"train", "test"}, label
    for r in rows:
        assert (dataset / r["image"]).is_dir() and r["image"].endswith("/dicom")
        assert (dataset / r["mask"]).is_file()
        assert (dataset / r["case_id"] / "image.nii.gz").is_file()
    assert (dataset / "dataset.json").is_file() and "SYNTHETIC" in (dataset / "README.txt").read_text()
    assert not list(dataset.parent.glob(".data.*"))  # no temporary folder left behind


def test_dicom_series_matches_nifti(dataset: Path) -> None:
    import nibabel as nib
    import pydicom
    import SimpleITK as sitk  # noqa: N813

    row = _manifest(dataset)[0]
    folder = dataset / row["image"]
    reader = sitk.ImageSeriesReader()
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    assert len(series) == 1
    files = reader.GetGDCMSeriesFileNames(str(folder), series[0])
    reader.SetFileNames(files)
    image = reader.Execute()
    nii = nib.load(dataset / row["case_id"] / "image.nii.gz")
    np.testing.assert_allclose(_lps_affine_from_sitk(image), nii.affine, atol=1e-3)
    volume = np.asarray(nii.dataobj)
    assert volume.dtype == np.uint16
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image).transpose(2, 1, 0), volume)
    mask = nib.load(dataset / row["mask"])
    assert mask.get_data_dtype() == np.uint8 and mask.shape == volume.shape
    np.testing.assert_allclose(mask.affine, nii.affine)

    ds = pydicom.dcmread(files[0])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert "SYNTHETIC" in ds.SeriesDescription
    assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert ds.Rows == ds.Columns == SIZE and ds.BitsAllocated == 16
    np.testing.assert_array_equal(ds.pixel_array, volume[:, :, 0].T)
    uids = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}
    assert len(uids) == len(files)


def test_masks_nonempty_and_in_head() -> None:
    for i, label in enumerate(CLASSES):
        case = synth.generate_case(label, np.random.default_rng(i), 40)
        assert case.mask.sum() > 0, label
        assert not (case.mask.astype(bool) & ~case.head).any(), label
        assert case.volume.dtype == np.uint16 and case.mask.shape == case.volume.shape


def _centroids(label: str, n: int = 6) -> np.ndarray:
    out = []
    for i in range(n):
        case = synth.generate_case(label, np.random.default_rng([11, i]), 32, "easy")
        ijk = np.argwhere(case.mask).mean(axis=0)
        out.append(case.affine[:3, :3] @ ijk + case.affine[:3, 3])
    return np.array(out)


def test_class_priors() -> None:
    pituitary = _centroids("pituitary_adenoma")
    schwannoma = _centroids("schwannoma")
    chordoma = _centroids("chordoma")
    meningioma = _centroids("meningioma")
    assert np.abs(pituitary[:, 0]).max() < 10  # sella: midline
    assert np.abs(schwannoma[:, 0]).min() > 15  # cerebellopontine angle: lateral
    assert chordoma[:, 2].mean() < pituitary[:, 2].mean() - 5  # clivus: below the sella
    assert chordoma[:, 2].mean() < meningioma[:, 2].mean()


def test_deterministic(tmp_path: Path) -> None:
    a = synth.generate_case("schwannoma", synth.case_rng(5, 2), 32)
    b = synth.generate_case("schwannoma", synth.case_rng(5, 2), 32)
    c = synth.generate_case("schwannoma", synth.case_rng(6, 2), 32)
    np.testing.assert_array_equal(a.volume, b.volume)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert not np.array_equal(a.volume, c.volume)
    import pydicom

    def uids(out: Path) -> list[str]:
        synth.write_dataset(out, cases=5, seed=1, size=32, fmt="dicom")
        files = sorted(out.glob("*/dicom/*.dcm"))
        return [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]

    assert uids(tmp_path / "a") == uids(tmp_path / "b")
    assert (tmp_path / "a" / "manifest.csv").read_text() == (tmp_path / "b" / "manifest.csv").read_text()


def test_class_counts() -> None:
    counts = synth.class_counts(300)
    assert sum(counts) == 300 and counts[3] == max(counts) and counts[4] == min(counts)
    assert synth.class_counts(10, balanced=True) == [2] * 5
    assert synth.class_counts(5) == [1] * 5
    for n in (10, 11, 17, 23):
        counts = synth.class_counts(n)
        assert sum(counts) == n and min(counts) >= 2
    with pytest.raises(InputError):
        synth.class_counts(4)


def test_size_320_geometry() -> None:
    from medenc.synth.anatomy import output_grid

    grid = output_grid(320)
    assert grid.n_slices == 90 and grid.spacing[0] == pytest.approx(0.75)
    assert output_grid(128).n_slices == 36


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--cases", "3"], "fewer than the 5 classes"),
        (["--cases", "6", "--size", "8"], "size 8"),
        (["--cases", "6", "--format", "png"], "unknown format"),
        (["--cases", "6", "--difficulty", "insane"], "unknown difficulty"),
    ],
)
def test_cli_rejects_bad_arguments(tmp_path: Path, args: list[str], needle: str) -> None:
    from typer.testing import CliRunner

    from medenc.cli import app

    result = CliRunner().invoke(app, ["synth", str(tmp_path / "out"), *args])
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert not (tmp_path / "out").exists()


def test_cli_writes_and_refuses_existing(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medenc.cli import app

    out = tmp_path / "out"
    runner = CliRunner()
    png = tmp_path / "montage.png"
    result = runner.invoke(app, ["synth", str(out), "--cases", "5", "--size", "32", "--format", "nifti",
                                 "--montage", str(png)])
    assert result.exit_code == 0, result.output
    rows = _manifest(out)
    assert len(rows) == 5 and all(r["image"].endswith("image.nii.gz") for r in rows)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = runner.invoke(app, ["synth", str(out), "--cases", "5", "--size", "32"])
    assert result.exit_code == 2 and "already exists" in result.output
    result = runner.invoke(app, ["synth", str(out), "--cases", "6", "--size", "32", "--force"])
    assert result.exit_code == 0, result.output
    assert len(_manifest(out)) == 6
