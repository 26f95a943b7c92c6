"""``medenc reader-study build``: determinism, blinding, the key, the images and input errors."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import struct
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medenc.errors import InputError, OutputExistsError
from medenc.reader_study import build_study
from medenc.reader_study.manifest import stratified_choice
from medenc.reader_study.render import to_stored

CLASSES = ("alphaoma", "betaoma", "gammaoma")
FORBIDDEN_WORDS = ("original", "encrypted", "encrypt", "adversarial", "medenc", "clean")


def write_dataset(
    root: Path, labels: list[str], *, train: int = 2, shape=(32, 32), seed: int = 0
) -> tuple[Path, Path]:
    """Tiny clean + encrypted manifests of 2D NIfTI slices (int16 clean, float32 (H, W, 1) encrypted).

    ``labels`` are the test cases' labels; ``train`` extra training cases are added. Returns the two
    manifest paths.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for i, label in enumerate(list(labels) + [CLASSES[i % 3] for i in range(train)]):
        split = "test" if i < len(labels) else "train"
        case_id = f"subj-{i:04d}"
        clean = (rng.random(shape) * 300 + 20 * i).astype(np.int16)
        encrypted = clean + rng.normal(0, 2.0, shape).astype(np.float32)
        for kind, data in (("clean", clean), ("enc", encrypted[..., None])):
            folder = root / kind / "niisrc"
            folder.mkdir(parents=True, exist_ok=True)
            image = nib.Nifti1Image(data, np.diag([0.9, 0.9, 3.0, 1.0]))
            nib.save(image, folder / f"{case_id}.nii.gz")
        rows.append([case_id, label, split, f"niisrc/{case_id}.nii.gz"])
    paths = []
    for kind in ("clean", "enc"):
        path = root / kind / "manifest.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["case_id", "label", "split", "image"])
            writer.writerows(rows)
        paths.append(path)
    return paths[0], paths[1]


def read_key(study: Path) -> list[dict[str, str]]:
    with (study / "key" / "key.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, Path]:
    return write_dataset(tmp_path_factory.mktemp("data"), [CLASSES[i % 3] for i in range(10)])


@pytest.fixture(scope="module")
def study(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study") / "study"
    build_study(*dataset, out, readers=["R1", "R2"], seed=7)
    return out


def test_build_with_a_seed_is_deterministic(dataset, study, tmp_path):
    again = tmp_path / "again"
    build_study(*dataset, again, readers=["R1", "R2"], seed=7)
    assert tree_digest(again) == tree_digest(study)
    other = tmp_path / "other"
    build_study(*dataset, other, readers=["R1", "R2"], seed=8)
    assert {r["code"] for r in read_key(other)}.isdisjoint({r["code"] for r in read_key(study)})


def test_layout_and_key(study):
    rows = read_key(study)
    codes = [r["code"] for r in rows]
    assert len(codes) == len(set(codes)) == 2 * 2 * 10  # each code exactly once
    info = json.loads((study / "key" / "study.json").read_text())
    assert info["seed"] == 7 and info["classes"] == list(CLASSES) and len(info["cases"]) == 10
    assert info["sessions"] == {"1": "original", "2": "encrypted"}
    orders = {}
    for reader in ("R1", "R2"):
        for session, version in ((1, "original"), (2, "encrypted")):
            packet = study / "packets" / reader / f"session-{session}"
            mine = sorted((r for r in rows if r["reader"] == reader and r["session"] == str(session)),
                          key=lambda r: int(r["position"]))
            assert {r["version"] for r in mine} == {version}
            assert sorted(r["case_id"] for r in mine) == sorted(c["case_id"] for c in info["cases"])
            assert [int(r["position"]) for r in mine] == list(range(1, 11))
            assert sorted(p.stem for p in (packet / "png").iterdir()) == sorted(r["code"] for r in mine)
            assert sorted(p.stem for p in (packet / "dicom").iterdir()) == sorted(r["code"] for r in mine)
            with (packet / "answers.csv").open(newline="") as handle:
                sheet = list(csv.DictReader(handle))
            assert [s["code"] for s in sheet] == [r["code"] for r in mine]
            assert list(sheet[0]) == ["code", "diagnosis", "confidence", "comment"]
            assert (packet / "index.html").is_file() and (packet / "README.txt").is_file()
            orders[reader, session] = tuple(r["case_id"] for r in mine)
    assert len(set(orders.values())) == 4  # independent shuffles per reader and session
    assert not list((study / "packets").rglob("key*"))
    assert (study / "key" / "key.csv").stat().st_mode & 0o077 == 0


def _png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        chunks.append(data[pos + 4:pos + 8])
        pos += 12 + length
    return chunks


def _dicom_texts(ds: pydicom.Dataset) -> list[str]:
    texts = [str(element.value) for element in ds.file_meta]
    for element in ds.iterall():
        if element.tag != 0x7FE00010:
            texts.append(f"{element.keyword} {element.value}")
    return texts


def test_packets_reveal_no_case_label_or_version(study, dataset):
    info = json.loads((study / "key" / "study.json").read_text())
    case_ids = [c["case_id"] for c in info["cases"]] + ["subj-0010", "subj-0011"]
    secrets = [*case_ids, str(dataset[0].parent), str(dataset[1].parent), "niisrc"]
    files = [p for p in (study / "packets").rglob("*") if p.is_file()]
    assert len(files) == 4 * (3 + 2 * 10)
    dicom_tags = None
    for path in files:
        name = str(path.relative_to(study / "packets")).lower()
        data = path.read_bytes()
        low = data.lower()
        for word in (*FORBIDDEN_WORDS, *secrets, *CLASSES):
            assert word.lower() not in name, (path, word)
        for word in (*FORBIDDEN_WORDS, *secrets):
            assert word.lower().encode() not in low, (path, word)
        if path.suffix == ".png":
            assert set(_png_chunks(data)) == {b"IHDR", b"IDAT", b"IEND"}  # no text/time/metadata chunks
            assert not any(c.encode() in low for c in CLASSES)
        elif path.suffix == ".dcm":
            ds = pydicom.dcmread(path)
            texts = " ".join(_dicom_texts(ds)).lower()
            for word in (*FORBIDDEN_WORDS, *secrets, *CLASSES):
                assert word.lower() not in texts, (path, word)
            assert ds.PatientID == ds.PatientName == "READER-STUDY"
            assert ds.ImageComments == path.stem and ds.StudyDate == ""
            tags = {e.keyword for e in ds}
            dicom_tags = dicom_tags or tags
            assert tags == dicom_tags  # every file has the same attributes, whatever its version
        elif path.name == "index.html":
            text = data.decode()
            assert not re.search(r"https?://|src=|href=|@import|url\(", text)
            without_class_list = text.replace(json.dumps(list(CLASSES), separators=(",", ":")), "")
            assert not any(c in without_class_list for c in CLASSES)
        elif path.name == "README.txt":
            text = data.decode()
            assert f"Diagnoses to choose from: {', '.join(CLASSES)}" in text
            rest = "\n".join(line for line in text.splitlines() if not line.startswith("Diagnoses to choose"))
            assert not any(c in rest for c in CLASSES)
        else:
            assert path.name == "answers.csv"
            assert not any(c.encode() in data for c in CLASSES)


def test_images_match_the_slices(study, dataset):
    rows = {r["code"]: r for r in read_key(study)}
    for dcm in (study / "packets" / "R2" / "session-2" / "dicom").iterdir():
        row = rows[dcm.stem]
        source_path = dataset[1].parent / "niisrc" / f"{row['case_id']}.nii.gz"
        source = np.asarray(nib.load(str(source_path)).dataobj)[..., 0]
        ds = pydicom.dcmread(dcm)
        values = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert values.shape == source.shape == (32, 32)
        assert np.abs(values - source).max() <= float(ds.RescaleSlope)
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([0.9, 0.9])
        from PIL import Image

        png = np.asarray(Image.open(dcm.parent.parent / "png" / f"{dcm.stem}.png"))
        assert png.dtype == np.uint8 and png.shape == (32, 32)  # grey, full resolution
        lo = float(ds.WindowCenter) - float(ds.WindowWidth) / 2
        expected = np.rint(np.clip((values - lo) / float(ds.WindowWidth), 0, 1) * 255)
        assert np.abs(png.astype(float) - expected).max() <= 1


def test_to_stored_handles_flat_and_float_images():
    flat = to_stored(np.full((4, 5), 3.0))
    assert flat.stored.max() == 0 and np.allclose(flat.values, 3.0) and flat.width > 0
    ramp = to_stored(np.linspace(-1.5, 2.5, 400).reshape(20, 20))
    assert ramp.stored.min() == 0 and ramp.stored.max() >= 65534
    assert np.abs(ramp.values - np.linspace(-1.5, 2.5, 400).reshape(20, 20)).max() <= ramp.slope


def test_stratified_selection(tmp_path):
    labels = ["alphaoma"] * 6 + ["betaoma"] * 3 + ["gammaoma"] * 1
    rng = np.random.default_rng(0)
    picked = [labels[i] for i in stratified_choice(labels, 5, rng)]
    assert Counter(picked) == {"alphaoma": 3, "betaoma": 1, "gammaoma": 1}
    assert len(stratified_choice(labels, 10, rng)) == 10
    assert Counter(labels[i] for i in stratified_choice(labels, 2, rng)) == {"alphaoma": 1, "betaoma": 1}
    with pytest.raises(InputError):
        stratified_choice(labels, 11, rng)
    clean, enc = write_dataset(tmp_path / "d", labels)
    result = build_study(clean, enc, tmp_path / "s", cases=5, readers=["R1"], seed=1)
    info = json.loads((tmp_path / "s" / "key" / "study.json").read_text())
    assert result.cases == 5 and Counter(c["label"] for c in info["cases"]) == Counter(picked)
    assert info["classes"] == list(CLASSES)


def _edit_manifest(path: Path, edit) -> None:
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    rows = edit(rows)
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda rows: rows[:2] + rows[3:], "missing"),
        (lambda rows: [rows[0], [rows[1][0], "gammaoma", *rows[1][2:]], *rows[2:]], "label"),
        (lambda rows: [["case_id", "label", "image"], *[[r[0], r[1], r[3]] for r in rows[1:]]], "column"),
    ],
)
def test_manifest_errors_leave_nothing_behind(tmp_path, edit, message):
    clean, enc = write_dataset(tmp_path / "d", list(CLASSES))
    _edit_manifest(enc, edit)
    with pytest.raises(InputError, match=message):
        build_study(clean, enc, tmp_path / "s", seed=0)
    assert not (tmp_path / "s").exists()


def test_other_input_errors(tmp_path, dataset):
    clean, enc = write_dataset(tmp_path / "d", list(CLASSES))
    wrong_shape = nib.Nifti1Image(np.zeros((16, 32), np.float32), np.eye(4))
    nib.save(wrong_shape, enc.parent / "niisrc" / "subj-0001.nii.gz")
    with pytest.raises(InputError, match="shape"):
        build_study(clean, enc, tmp_path / "s", seed=0)
    for readers in (["R1", "R1"], ["../x"], []):
        with pytest.raises(InputError, match="reader"):
            build_study(*dataset, tmp_path / "s", readers=readers, seed=0)
    with pytest.raises(InputError, match="cases"):
        build_study(*dataset, tmp_path / "s", cases=11, seed=0)
    build_study(*dataset, tmp_path / "s", readers=["R1"], seed=0)
    with pytest.raises(OutputExistsError):
        build_study(*dataset, tmp_path / "s", readers=["R1"], seed=0)
    build_study(*dataset, tmp_path / "s", readers=["R9"], seed=0, force=True)
    assert [p.name for p in (tmp_path / "s" / "packets").iterdir()] == ["R9"]


def test_random_seed_is_recorded(dataset, tmp_path):
    result = build_study(*dataset, tmp_path / "s", readers=["R1"])
    assert json.loads((tmp_path / "s" / "key" / "study.json").read_text())["seed"] == result.seed
