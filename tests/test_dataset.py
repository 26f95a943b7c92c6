"""Manifests: validation with file/line in every error, slice loading, the data fingerprint."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel
import numpy as np
import pytest
import torch

from medenc.core.mapping import Preprocess
from medenc.errors import InputError
from medenc.experiment.dataset import load_images, load_slice, read_manifest, sort_class_names
from medenc.io import read_image


def write_slice(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(nibabel.Nifti1Image(array, np.eye(4)), str(path))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    lines = ["case_id,label,split,image,extra"]
    for i in range(6):
        shape = (12, 10) if i % 2 else (12, 10, 1)
        write_slice(tmp_path / f"c{i}" / "slice.nii.gz", rng.integers(0, 500, shape).astype(np.int16))
        label = ["glioma", "meningioma", "10"][i % 3]
        lines.append(f"c{i},{label},{'test' if i >= 4 else 'train'},c{i}/slice.nii.gz,x")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_read_manifest(folder: Path) -> None:
    m = read_manifest(folder / "manifest.csv")
    assert len(m) == 6
    assert m.classes == ("10", "glioma", "meningioma")
    assert m.labels() == [1, 2, 0, 1, 2, 0]
    assert len(m.subset("train")) == 4 and len(m.subset("test")) == 2
    assert m.rows[1].path == folder / "c1" / "slice.nii.gz" and m.rows[1].line == 3
    explicit = read_manifest(folder / "manifest.csv", classes=["meningioma", "glioma", "10"])
    assert explicit.labels()[:3] == [1, 0, 2]


def test_sort_class_names_numeric() -> None:
    assert sort_class_names(["10", "2", "1", "2"]) == ("1", "2", "10")
    assert sort_class_names(["b", "a", "10"]) == ("10", "a", "b")


def _edit(folder: Path, old: str, new: str) -> Path:
    path = folder / "manifest.csv"
    path.write_text(path.read_text().replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("case_id,label,split,image", "case_id,diagnosis,split,image", "missing column.*label"),
        ("c2/slice.nii.gz", "c2/missing.nii.gz", "line 4: image file 'c2/missing.nii.gz' not found"),
        ("c3,glioma,train", "c3,glioma,validation", "line 5: unknown split 'validation'"),
        ("c1,meningioma,train", "c1,,train", "line 3: empty label"),
        ("c5,10,test", "c0,10,test", "line 7: case 'c0' is in split 'test' but line 2"),
        # issue #22 item 3: a case id becomes a file name under --out; it must not climb out of it
        ("c1,meningioma", "../../../x,meningioma", r"line 3: case id '\.\./\.\./\.\./x' cannot be used as a file"),
        ("c1,meningioma", "..,meningioma", r"line 3: case id '\.\.' cannot be used as a file name"),
        ("c1,meningioma", "a\\b,meningioma", r"line 3: case id 'a\\\\b' cannot be used as a file name"),
    ],
)
def test_manifest_errors_name_file_and_line(folder: Path, old: str, new: str, message: str) -> None:
    path = _edit(folder, old, new)
    with pytest.raises(InputError, match=message) as info:
        read_manifest(path)
    assert str(info.value).startswith(str(path))
    assert "\n" not in str(info.value)


def test_unknown_label_with_given_classes(folder: Path) -> None:
    with pytest.raises(InputError, match="line 3: unknown label 'meningioma'; expected one of glioma, 10"):
        read_manifest(folder / "manifest.csv", classes=["glioma", "10"])


def test_missing_or_empty_manifest(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="manifest not found"):
        read_manifest(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("case_id,label,split,image\n")
    with pytest.raises(InputError, match="no rows"):
        read_manifest(tmp_path / "empty.csv")


def test_load_slices_squeezes_and_checks(folder: Path, tmp_path: Path) -> None:
    m = read_manifest(folder / "manifest.csv")
    x = load_images(m)
    assert x.shape == (6, 1, 10, 12) and x.dtype == torch.float32  # stored (12, 10) = (X, Y)
    raw = np.asarray(nibabel.load(str(folder / "c0" / "slice.nii.gz")).dataobj)[..., 0]  # stored (X, Y)
    canonical = read_image(folder / "c0" / "slice.nii.gz").voxels[0]  # (Y, X), LPS: as encrypt-study reads
    assert canonical.shape == raw.T.shape and torch.equal(x[0, 0], torch.from_numpy(canonical.astype(np.float32)))
    mapped = load_images(m.rows[:2], preprocess=Preprocess(size=(16, 16)))
    assert mapped.shape == (2, 1, 16, 16)
    write_slice(tmp_path / "vol.nii.gz", np.zeros((4, 4, 3), np.float32))
    with pytest.raises(InputError, match=r"expected a 2D slice, got a volume of 3 slices of 4x4"):
        load_slice(tmp_path / "vol.nii.gz")
    (tmp_path / "bad.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(InputError, match="not a NIfTI file"):
        load_slice(tmp_path / "bad.nii.gz")


def test_different_sizes_need_a_preprocess(folder: Path) -> None:
    write_slice(folder / "c5" / "slice.nii.gz", np.ones((8, 8), np.float32))
    m = read_manifest(folder / "manifest.csv")
    with pytest.raises(InputError, match="slice is \\(8, 8\\)"):
        load_images(m)
    assert load_images(m, preprocess=Preprocess(size=(8, 8))).shape == (6, 1, 8, 8)


def test_fingerprint_tracks_content_not_location(folder: Path, tmp_path: Path) -> None:
    first = read_manifest(folder / "manifest.csv").fingerprint()
    assert len(first) == 16 and int(first, 16) >= 0
    moved = tmp_path.parent / (tmp_path.name + "_moved")
    shutil.copytree(folder, moved)
    assert read_manifest(moved / "manifest.csv").fingerprint() == first
    write_slice(moved / "c3" / "slice.nii.gz", np.ones((12, 10), np.int16))
    assert read_manifest(moved / "manifest.csv").fingerprint() != first
    _edit(folder, "c1,meningioma,train", "c1,glioma,train")
    assert read_manifest(folder / "manifest.csv").fingerprint() != first
