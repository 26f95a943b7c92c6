"""Radiological orientation of every packet image, from the slice's own affine.

An asymmetric phantom with a known screen layout (``SCREEN``: unique values, a bright block where the
patient's anterior-right corner must appear, i.e. top left) is stored in many ways, each with the matching
NIfTI affine (axes swapped, reversed, axial, coronal or sagittal). Whatever the storage, the packet must
show ``SCREEN``: in the PNG, the DICOM pixels, the viewer's letters, and read back by two DICOM readers that
place images by their geometry (medenc's own and SimpleITK/GDCM, as 3D Slicer does). A synthetic case made
by ``medenc synth`` + ``medenc prepare`` must look in its packet as its source DICOM looks in a DICOM viewer;
``MEDENC_ORIENTATION_FIGURE=docs/img/reader-orientation.png`` also writes the two side by side.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from medenc.errors import InputError
from medenc.reader_study import build_study
from medenc.reader_study.orientation import direction_letters, display_geometry
from medenc.reader_study.render import display_uint8, to_stored_pair
from tests.test_reader_study_build import packet_dicoms, read_key

ROWS, COLS = 12, 16
SPACING = {"x": 0.5, "y": 0.8, "z": 2.0}
_AXIS = {"x": 0, "y": 1, "z": 2}
#: plane -> screen right and screen down as (LPS axis, sign); its letters (top, right, bottom, left)
PLANES = {
    "axial": (("x", 1), ("y", 1), ["A", "L", "P", "R"]),
    "coronal": (("x", 1), ("z", -1), ["S", "L", "I", "R"]),
    "sagittal": (("y", 1), ("z", -1), ["S", "P", "I", "A"]),
}
#: (name, plane, stored axis 0, stored axis 1) as (LPS axis, sign)
VARIANTS = [
    ("axial-as-prepare-writes", "axial", ("x", 1), ("y", 1)),  # (X, Y): rows run right to left
    ("axial-nifti-ras", "axial", ("x", -1), ("y", -1)),  # i -> right, j -> anterior
    ("axial-as-on-screen", "axial", ("y", 1), ("x", 1)),
    ("axial-upside-down", "axial", ("y", -1), ("x", -1)),
    ("coronal-nifti-ras", "coronal", ("x", -1), ("z", 1)),
    ("coronal-transposed", "coronal", ("z", -1), ("x", 1)),
    ("sagittal-nifti-ras", "sagittal", ("y", -1), ("z", 1)),
    ("sagittal-transposed", "sagittal", ("z", 1), ("y", 1)),
]


def screen_layout() -> np.ndarray:
    """What a radiologist must see: unique values, a bright 3x3 block at the top left."""
    screen = 100.0 + np.arange(ROWS * COLS, dtype=float).reshape(ROWS, COLS)
    screen[:3, :3] = 2000.0
    return screen


def stored_phantom(plane: str, axis0: tuple[str, int], axis1: tuple[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """The stored array and its RAS affine: stored pixel (i, j) lies where screen pixel (r, c) shows it.

    Built from the geometry alone (no call to the code under test): screen pixel (r, c) is at
    ``c`` steps along screen right and ``r`` steps along screen down from the top-left corner.
    """
    (right, right_sign), (down, down_sign), _ = PLANES[plane]
    extent = {right: COLS, down: ROWS}
    n0, n1 = extent[axis0[0]], extent[axis1[0]]
    screen = screen_layout()
    stored = np.zeros((n0, n1))
    for i in range(n0):
        for j in range(n1):
            step = {axis0[0]: i if axis0[1] > 0 else n0 - 1 - i, axis1[0]: j if axis1[1] > 0 else n1 - 1 - j}
            # step counts from the low-coordinate end; screen index counts along the screen direction
            c = step[right] if right_sign > 0 else extent[right] - 1 - step[right]
            r = step[down] if down_sign > 0 else extent[down] - 1 - step[down]
            stored[i, j] = screen[r, c]
    lps = np.zeros((3, 4))
    for column, (axis, sign) in enumerate((axis0, axis1)):
        lps[_AXIS[axis], column] = sign * SPACING[axis]
    normal = ({"x", "y", "z"} - {axis0[0], axis1[0]}).pop()
    lps[_AXIS[normal], 2] = SPACING[normal]
    for column, (axis, sign) in enumerate((axis0, axis1)):  # the origin: stored (0, 0) at its own end
        if sign < 0:
            lps[_AXIS[axis], 3] += (stored.shape[column] - 1) * SPACING[axis]
    affine = np.eye(4)
    affine[:3, :] = np.diag([-1.0, -1.0, 1.0]) @ lps
    return stored, affine


@pytest.fixture(scope="module")
def phantom_study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantom")
    data = root / "data"
    (data / "slices").mkdir(parents=True)
    rows = []
    for name, plane, axis0, axis1 in VARIANTS:
        stored, affine = stored_phantom(plane, axis0, axis1)
        nib.save(nib.Nifti1Image(stored.astype(np.float32), affine), data / "slices" / f"{name}.nii.gz")
        rows.append([name, plane, "test", f"slices/{name}.nii.gz"])
    with (data / "manifest.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["case_id", "label", "split", "image"], *rows])
    build_study(data / "manifest.csv", data / "manifest.csv", root / "study", readers=["R1"], seed=0,
                forced_choice=False)
    return root / "study"


def test_display_geometry_of_each_storage():
    for _name, plane, axis0, axis1 in VARIANTS:
        stored, affine = stored_phantom(plane, axis0, axis1)
        geometry = display_geometry(affine)
        assert geometry.plane == plane
        assert np.array_equal(geometry.apply(stored), screen_layout())
        (right, rs), (down, ds), letters = PLANES[plane]
        assert geometry.letters == tuple(letters)
        assert geometry.spacing == (SPACING[down], SPACING[right])
        assert geometry.row_cosines[_AXIS[right]] == rs and geometry.col_cosines[_AXIS[down]] == ds
    assert direction_letters(np.array([0.9, -0.3, 0.0])) == "LA"  # oblique: both letters, largest first
    assert direction_letters(np.array([0.0, 0.0, -1.0]), "dicom") == "F"
    with pytest.raises(InputError, match="orientation"):
        display_geometry(np.diag([1.0, 0.0, 1.0, 1.0]))


def test_packet_images_show_the_expected_screen_layout(phantom_study):
    screen = screen_layout()
    expected_png = display_uint8(to_stored_pair(screen, screen)[0])
    assert expected_png[0, 0] == 255 and expected_png[-1, -1] < 255  # the bright block is at the top left
    packet = phantom_study / "packets" / "R1" / "session-1"
    dicoms = packet_dicoms(packet)
    html = (packet / "index.html").read_text()
    for row in read_key(phantom_study):
        if row["session"] != "1":
            continue
        plane = row["label"]
        (right, rs), (down, ds), letters = PLANES[plane]
        png = np.asarray(Image.open(packet / "png" / f"{row['code']}.png"))
        assert np.array_equal(png, expected_png), row["case_id"]
        ds_ = dicoms[row["code"]]
        values = ds_.pixel_array * float(ds_.RescaleSlope) + float(ds_.RescaleIntercept)
        assert np.abs(values - screen).max() <= float(ds_.RescaleSlope), row["case_id"]
        orientation = [float(v) for v in ds_.ImageOrientationPatient]
        row_cos, col_cos = np.zeros(3), np.zeros(3)
        row_cos[_AXIS[right]], col_cos[_AXIS[down]] = rs, ds
        assert orientation == [*row_cos, *col_cos]
        assert list(ds_.PatientOrientation) == [direction_letters(row_cos, "dicom"),
                                                direction_letters(col_cos, "dicom")]
        assert [float(v) for v in ds_.PixelSpacing] == [SPACING[down], SPACING[right]]
        assert f'"orient":{str(letters).replace(" ", "")}'.replace("'", '"') in html


def _series_folders(packet: Path) -> dict[str, Path]:
    return {pydicom.dcmread(f).ImageComments: f.parent for f in (packet / "dicom").rglob("IM*")}


def test_dicom_readers_that_place_images_by_geometry_see_the_screen_layout(phantom_study):
    sitk = pytest.importorskip("SimpleITK")
    from medenc.io import read_image

    screen = screen_layout()
    packet = phantom_study / "packets" / "R1" / "session-1"
    folders = _series_folders(packet)
    for row in read_key(phantom_study):
        if row["session"] != "1":
            continue
        folder = folders[row["code"]]
        (right, rs), (down, ds), _ = PLANES[row["label"]]
        # SimpleITK / GDCM: sorts a series by Image Position along the normal, orients by Image Orientation
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
        image = reader.Execute()
        direction = np.array(image.GetDirection()).reshape(3, 3)
        assert direction[_AXIS[right], 0] == pytest.approx(rs) and direction[_AXIS[down], 1] == pytest.approx(ds)
        slope = float(pydicom.dcmread(next(folder.iterdir())).RescaleSlope)
        assert np.abs(sitk.GetArrayFromImage(image)[0] - screen).max() <= slope
        # medenc's reader (sorts by position along the normal); an axial image comes back in canonical LPS
        volume = read_image(folder)
        assert np.abs(volume.voxels[0] - screen).max() <= slope, row["case_id"]


def synthetic_study(root: Path, size: int) -> tuple[Path, Path]:
    """``medenc synth`` + ``medenc prepare`` + ``medenc reader-study build`` (the clean slices as both
    versions): returns the studies folder and the reader study."""
    from typer.testing import CliRunner

    from medenc.cli import app

    runner = CliRunner()
    for args in (
        ["synth", str(root / "studies"), "--cases", "10", "--size", str(size), "--seed", "0", "--balanced"],
        ["prepare", str(root / "studies" / "manifest.csv"), "--out", str(root / "dataset")],
        ["reader-study", "build", "--clean", str(root / "dataset" / "manifest.csv"), "--encrypted",
         str(root / "dataset" / "manifest.csv"), "--out", str(root / "study"), "--readers", "R1", "--seed", "0"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    return root / "studies", root / "study"


def source_dicom_of(studies: Path, study: Path, case_id: str) -> Path:
    """The source DICOM file at the prepared slice's position (matched by Image Position z)."""
    z = float(nib.load(str(study.parent / "dataset" / "slices" / f"{case_id}.nii.gz")).affine[2, 3])
    for path in sorted((studies / case_id / "dicom").iterdir()):
        if abs(float(pydicom.dcmread(path, stop_before_pixels=True).ImagePositionPatient[2]) - z) < 1e-3:
            return path
    raise AssertionError(f"no source slice at z = {z}")


def test_a_synthetic_case_looks_as_its_source_dicom(tmp_path):
    studies, study = synthetic_study(tmp_path, 64)
    packet = study / "packets" / "R1" / "session-1"
    dicoms = packet_dicoms(packet)
    rows = [r for r in read_key(study) if r["session"] == "1"]
    assert len(rows) == 5
    for row in rows:
        source = pydicom.dcmread(source_dicom_of(studies, study, row["case_id"]))
        # the source is displayed as stored: rows run anterior -> posterior, columns right -> left
        assert [float(v) for v in source.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        ds = dicoms[row["code"]]
        values = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert values.shape == source.pixel_array.shape
        assert np.abs(values - source.pixel_array).max() <= float(ds.RescaleSlope)
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([float(v) for v in source.PixelSpacing])
        assert list(ds.PatientOrientation) == ["L", "P"]


def _letters_box(ax, letters: tuple[str, str, str, str]) -> None:
    style = {"color": "#ffcc66", "fontsize": 13, "fontweight": "bold", "transform": ax.transAxes}
    ax.text(0.5, 0.98, letters[0], ha="center", va="top", **style)
    ax.text(0.98, 0.5, letters[1], ha="right", va="center", **style)
    ax.text(0.5, 0.02, letters[2], ha="center", va="bottom", **style)
    ax.text(0.02, 0.5, letters[3], ha="left", va="center", **style)


@pytest.mark.skipif(not os.environ.get("MEDENC_ORIENTATION_FIGURE"),
                    reason="set MEDENC_ORIENTATION_FIGURE=docs/img/reader-orientation.png")
def test_orientation_figure_for_docs(tmp_path):
    from matplotlib.figure import Figure

    studies, study = synthetic_study(tmp_path, 256)
    row = next(r for r in read_key(study) if r["session"] == "1" and r["position"] == "1")
    source = pydicom.dcmread(source_dicom_of(studies, study, row["case_id"]))
    low = float(source.WindowCenter) - float(source.WindowWidth) / 2
    shown = np.clip((source.pixel_array - low) / float(source.WindowWidth), 0, 1)
    iop = np.array([float(v) for v in source.ImageOrientationPatient])
    source_letters = (direction_letters(-iop[3:]), direction_letters(iop[:3]), direction_letters(iop[3:]),
                      direction_letters(-iop[:3]))
    png = np.asarray(Image.open(study / "packets" / "R1" / "session-1" / "png" / f"{row['code']}.png"))
    ds = packet_dicoms(study / "packets" / "R1" / "session-1")[row["code"]]
    packet_letters = display_geometry(nib.load(str(study.parent / "dataset" / "slices" /
                                                   f"{row['case_id']}.nii.gz")).affine).letters
    assert list(ds.PatientOrientation) == ["L", "P"] and packet_letters == source_letters
    # what the packets showed before issue 17: the prepared slice array as stored, (X, Y)
    prepared = nib.load(str(study.parent / "dataset" / "slices" / f"{row['case_id']}.nii.gz"))
    stored = np.asarray(prepared.dataobj)[..., 0].astype(float)
    lps = np.diag([-1.0, -1.0, 1.0]) @ prepared.affine[:3, :2]  # stored axes 0 (rows) and 1 (columns)
    stored_letters = (direction_letters(-lps[:, 0]), direction_letters(lps[:, 1]), direction_letters(lps[:, 0]),
                      direction_letters(-lps[:, 1]))
    fig = Figure(figsize=(12.0, 4.8))
    axes = fig.subplots(1, 3)
    for ax, image, letters, title in (
        (axes[0], shown, source_letters, f"source DICOM ({row['case_id']}, {Path(source.filename).name}),\n"
                                         "as a DICOM viewer shows it"),
        (axes[1], png / 255.0, packet_letters, f"reader packet PNG now (code {row['code']}),\n"
                                               "session 1, default window"),
        (axes[2], np.clip((stored - low) / float(source.WindowWidth), 0, 1), stored_letters,
         "the prepared NIfTI slice as stored (X, Y):\nwhat the packets showed before"),
    ):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        _letters_box(ax, letters)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.88, wspace=0.04)
    fig.savefig(os.environ["MEDENC_ORIENTATION_FIGURE"], dpi=100)
