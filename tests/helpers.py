"""Helpers shared by the tests: synthetic DICOM series and NIfTI volumes, a phantom, dataset diffs, a tiny encryptor.

Their own tests are in tests/test_helpers.py.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medenc.core.encrypt import Encryptor
from medenc.core.key import EncryptionKey, PGDSettings
from medenc.core.mapping import Preprocess

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
DATA_STORE = Path(__import__("data_store").__file__).parent / "data"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
_WORD = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}

# plane name -> (row direction, column direction) of ImageOrientationPatient, LPS
PLANES = {
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
}


def tiny_model(num_classes: int = 3, seed: int = 1234) -> torch.nn.Module:
    """Two conv layers with random weights."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(16, num_classes),
    )


def tiny_encryptor(steps: int = 2, combiner: str = "hconcat", model: torch.nn.Module | None = None) -> Encryptor:
    """A random model and a random key: enough to move pixels through the whole pipeline."""
    key = EncryptionKey.generate(("a", "b", "c"), combiner, seed=7, pgd=PGDSettings(eps=2.0, step=1.0, steps=steps))
    return Encryptor(model or tiny_model(), key, device="cpu", batch_size=64, precision="fp32")


SMALL_INPUT = Preprocess(size=(16, 16))


def canonical_to_plane(canonical: np.ndarray, plane: str) -> list[np.ndarray]:
    """Slices (rows, columns) of a canonical LPS (Z, Y, X) volume as acquired in ``plane``.

    The slices come in order of increasing position along the slice normal.
    """
    z_size = canonical.shape[0]
    if plane == "axial":  # normal +z: slice k holds canonical z = k
        return [canonical[k] for k in range(z_size)]
    if plane == "sagittal":  # rows go inferior (z down), columns posterior (y); normal -x: L -> R
        return [canonical[::-1, :, x] for x in range(canonical.shape[2])[::-1]]
    # coronal: rows go inferior, columns to the left (x); normal = x cross -z = +y: A -> P
    return [canonical[::-1, y, :] for y in range(canonical.shape[1])]


def make_series(
    folder: Path,
    canonical: np.ndarray,
    plane: str = "axial",
    *,
    spacing: tuple[float, float, float] = (2.0, 1.0, 1.0),
    slope: float = 1.0,
    intercept: float = 0.0,
    signed: bool = False,
    shuffle_instance_numbers: bool = True,
    private: bool = True,
) -> list[Path]:
    """Write a synthetic single-frame MR series of a canonical (Z, Y, X) stored-value volume.

    Args:
        folder: where the files go (created).
        canonical: stored values in canonical LPS order, indexed (z, y, x).
        plane: acquisition plane (``axial``, ``sagittal``, ``coronal``).
        spacing: voxel size (z, y, x) in mm.
        slope: RescaleSlope.
        intercept: RescaleIntercept.
        signed: PixelRepresentation 1 (int16) instead of uint16.
        shuffle_instance_numbers: give InstanceNumbers that do not follow the position.
        private: add a private block and an icon to check they are kept / removed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    row, col = PLANES[plane]
    dz, dy, dx = spacing
    z_top = (canonical.shape[0] - 1) * dz
    x_size = canonical.shape[2]
    # per plane: IPP of slice k, PixelSpacing (between rows, between columns), slice thickness
    geometry = {
        "axial": (lambda k: (0.0, 0.0, k * dz), (dy, dx), dz),
        "sagittal": (lambda k: ((x_size - 1 - k) * dx, 0.0, z_top), (dz, dy), dx),
        "coronal": (lambda k: (0.0, k * dy, z_top), (dz, dx), dy),
    }[plane]
    slices = canonical_to_plane(canonical, plane)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    rng = np.random.default_rng(0)
    numbers = rng.permutation(len(slices)) + 1 if shuffle_instance_numbers else np.arange(len(slices)) + 1
    paths = []
    for k, pixels in enumerate(slices):
        origin = geometry[0](k)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = MR_IMAGE_STORAGE
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NORM"]
        ds.Modality = "MR"
        ds.PatientName, ds.PatientID = "Synthetic^Phantom", "SYN001"
        ds.PatientBirthDate, ds.PatientSex, ds.ReferringPhysicianName = "", "O", ""
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240101", "120000", "1", ""
        ds.Manufacturer = "medenc tests"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SeriesNumber, ds.InstanceNumber = 3, int(numbers[k])
        ds.SeriesDescription = f"T1 {plane}"
        ds.ImagePositionPatient = [f"{v:.4f}" for v in origin]
        ds.ImageOrientationPatient = [f"{v:.1f}" for v in (*row, *col)]
        ds.PixelSpacing = [f"{geometry[1][0]:g}", f"{geometry[1][1]:g}"]
        ds.SliceThickness = f"{geometry[2]:g}"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = pixels.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 1 if signed else 0
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
        if private:
            ds.add_new(0x00290010, "LO", "MEDENC TEST")
            ds.add_new(0x00291010, "OB", b"\x01\x02\x03\x04")
            ds.add_new(0x00291011, "LO", "vendor note")
            icon = Dataset()
            icon.Rows, icon.Columns, icon.BitsAllocated = 2, 2, 8
            icon.PixelData = bytes(4)
            ds.IconImageSequence = [icon]
        ds.PixelData = np.ascontiguousarray(pixels.astype("<i2" if signed else "<u2")).tobytes()
        path = folder / f"slice{numbers[k]:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _values_equal(a: Any, b: Any, source_big_endian: bool) -> bool:
    if a.VR == "SQ" or b.VR == "SQ":
        if len(a.value) != len(b.value):
            return False
        return all(not _dataset_diff(x, y, source_big_endian) for x, y in zip(a.value, b.value))
    va, vb = a.value, b.value
    if source_big_endian and a.VR in _WORD and isinstance(va, bytes):
        va = np.frombuffer(va, dtype=f">u{_WORD[a.VR]}").astype(f"<u{_WORD[a.VR]}").tobytes()
    return bool(va == vb)


def _dataset_diff(src: Dataset, out: Dataset, source_big_endian: bool = False) -> set[str]:
    names = set()
    for tag in set(src.keys()) | set(out.keys()):
        a, b = src.get(tag), out.get(tag)
        name = "GroupLength" if tag.element == 0 and tag.group != 2 else (a or b).keyword or str(tag)
        if a is None or b is None or not _values_equal(a, b, source_big_endian):
            names.add(name)
    return names


def dataset_diff(src: Dataset, out: Dataset) -> set[str]:
    """Keywords (or tags) of top-level elements that differ in value, or exist in only one dataset."""
    big = (
        str(src.file_meta.get("TransferSyntaxUID", "")) == "1.2.840.10008.1.2.2" if hasattr(src, "file_meta") else False
    )
    return _dataset_diff(src, out, big)


def read_any(path: Path) -> Dataset:
    """Read a DICOM file, gzip-compressed or not."""
    import gzip
    import io

    data = path.read_bytes()
    return pydicom.dcmread(io.BytesIO(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data))


def raw_value_bytes(path: Path) -> dict[int, bytes]:
    """Raw value bytes of the top-level non-sequence elements of an Explicit VR LE file, as read."""
    ds = read_any(path)
    out = {}
    for tag in ds.keys():  # noqa: SIM118 (iterating a Dataset yields parsed elements, not raw ones)
        elem = ds.get_item(tag)
        if getattr(elem, "VR", None) != "SQ" and isinstance(elem.value, bytes):
            out[int(tag)] = elem.value
    return out


# ---------------------------------------------------------------- NIfTI and phantom volumes
def ras_affine(spacing: tuple[float, float, float] = (1.0, 1.2, 2.0)) -> np.ndarray:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-10.0, -20.0, 5.0]
    return affine


def save(path: Path, data: np.ndarray, affine: np.ndarray, *, slope: float = 1.0, inter: float = 0.0) -> Path:
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(data.dtype)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=2)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = b"test volume"
    img.header.set_slope_inter(slope, inter)
    # nibabel would rescale on save: write the stored values with the wanted slope/inter directly
    blob = img.to_bytes()
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(blob))
    header.set_slope_inter(slope, inter)
    blob = header.binaryblock + blob[len(header.binaryblock) :]
    path.write_bytes(gzip.compress(blob) if path.name.endswith(".gz") else blob)
    return path


SHAPE = (9, 12, 10)  # canonical (Z, Y, X)
TUMOR_Z = 6


def phantom() -> tuple[np.ndarray, np.ndarray]:
    """Stored values (12-bit) and a tumor mask whose largest axial slice is TUMOR_Z."""
    rng = np.random.default_rng(5)
    stored = rng.integers(100, 3000, size=SHAPE).astype(np.uint16)
    mask = np.zeros(SHAPE, dtype=bool)
    mask[TUMOR_Z - 2 : TUMOR_Z + 3, 3:8, 2:6] = True
    mask[TUMOR_Z, 2:10, 1:8] = True  # the widest cross-section
    return stored, mask


def dciodvfy(path: Path) -> list[str]:
    """The findings of the DICOM validator (Debian dicom3tools' ``dciodvfy``) on one file.

    Every line it prints that starts with ``Error`` or ``Warning``. The caller compares them with the
    source's own findings (a derived file must add none) or asserts there is no ``Error``. Skips the test
    when dciodvfy is not installed (``scripts/install-dicom3tools.sh`` installs it; ``./run.sh test`` runs it).
    """
    import shutil
    import subprocess

    import pytest

    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy not installed (scripts/install-dicom3tools.sh)")
    run = subprocess.run([exe, "-new", str(path)], capture_output=True, text=True, timeout=60)
    lines = (run.stdout + run.stderr).splitlines()
    return [line.strip() for line in lines if line.startswith(("Error", "Warning"))]
