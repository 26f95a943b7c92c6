"""``medenc reader-study build``: determinism, blinding, the key, the images and input errors."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medenc.errors import InputError, OutputExistsError
from medenc.reader_study import build_study
from medenc.reader_study.manifest import stratified_choice
from medenc.reader_study.render import to_stored, to_stored_pair
from medenc.reader_study.secret import StudySecret

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


def read_key(study: Path, name: str = "key.csv") -> list[dict[str, str]]:
    with (study / "key" / name).open(newline="") as handle:
        return list(csv.DictReader(handle))


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def study_secret(study: Path) -> StudySecret:
    return StudySecret.from_hex(json.loads((study / "key" / "study.json").read_text())["secret"])


def packet_dicoms(packet: Path) -> dict[str, pydicom.Dataset]:
    """The packet's DICOM images by their code (Image Comments), read through its DICOMDIR."""
    from pydicom.fileset import FileSet

    return {ds.ImageComments: ds for ds in (i.load() for i in FileSet(packet / "dicom" / "DICOMDIR"))}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, Path]:
    return write_dataset(tmp_path_factory.mktemp("data"), [CLASSES[i % 3] for i in range(10)])


@pytest.fixture(scope="module")
def study(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study") / "study"
    build_study(*dataset, out, readers=["R1", "R2"], seed=7)
    return out


def test_build_is_reproducible_from_its_secret(dataset, study, tmp_path):
    again = tmp_path / "again"
    build_study(*dataset, again, readers=["R1", "R2"], seed=7, secret=study_secret(study))
    assert tree_digest(again) == tree_digest(study)  # byte for byte, packets and key


def test_a_known_seed_gives_away_no_code_order_or_uid(dataset, study, tmp_path):
    """Issue 22 item 6: a reader who knows the seed (and even has the inputs) rebuilds the study himself.

    Before the fix every code, order and UID came from ``--seed``, so the rebuild was identical and paired
    his session-2 images with his session-1 images. Now they come from a secret kept in ``key/``.
    """
    rebuilt = tmp_path / "rebuilt"
    build_study(*dataset, rebuilt, readers=["R1", "R2"], seed=7)
    mine, theirs = read_key(study), read_key(rebuilt)
    assert {r["code"] for r in mine}.isdisjoint({r["code"] for r in theirs})

    def orders(rows: list[dict]) -> dict:
        by_packet: dict = {}
        for r in sorted(rows, key=lambda r: int(r["position"])):
            by_packet.setdefault((r["reader"], r["session"]), []).append(r["case_id"])
        return by_packet

    assert orders(mine) != orders(theirs)  # the shuffles differ too (10 cases: 4 orders of 10! each)
    uids = [{e.value for ds in packet_dicoms(s / "packets" / "R1" / "session-1").values() for e in ds.iterall()
             if e.VR == "UI" and str(e.value).startswith("2.25.")} for s in (study, rebuilt)]
    assert uids[0] and uids[0].isdisjoint(uids[1])
    # the same selection of cases, though: the seed picks the cases
    assert json.loads((study / "key" / "study.json").read_text())["cases"] == \
        json.loads((rebuilt / "key" / "study.json").read_text())["cases"]
    secret = study_secret(study).hex()
    for path in (study / "packets").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes()
    assert (study / "key" / "study.json").stat().st_mode & 0o077 == 0


def test_layout_and_key(study):
    rows = read_key(study)
    trials = read_key(study, "forced-choice.csv")
    codes = [r["code"] for r in rows] + [t["code"] for t in trials]
    assert len(codes) == len(set(codes)) == 2 * 3 * 10  # each code exactly once, across the whole study
    assert all(re.fullmatch(r"[CDFGHJKMNPQRTVWXYZ2345679]{6}", c) for c in codes)
    info = json.loads((study / "key" / "study.json").read_text())
    assert info["seed"] == 7 and info["classes"] == list(CLASSES) and len(info["cases"]) == 10
    assert info["sessions"] == {"1": "original", "2": "encrypted"} and info["forced_choice"] is True
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
            dicoms = packet_dicoms(packet)
            assert sorted(dicoms) == sorted(r["code"] for r in mine)
            for r in mine:  # each image its own series, numbered in reading order
                ds = dicoms[r["code"]]
                assert int(ds.SeriesNumber) == int(r["position"]) and r["code"] in ds.SeriesDescription
            with (packet / "answers.csv").open(newline="") as handle:
                sheet = list(csv.DictReader(handle))
            assert [s["code"] for s in sheet] == [r["code"] for r in mine]
            assert list(sheet[0]) == ["code", "diagnosis", "confidence", "comment"]
            assert (packet / "index.html").is_file() and (packet / "README.txt").is_file()
            orders[reader, session] = tuple(r["case_id"] for r in mine)
        packet = study / "packets" / reader / "forced-choice"
        mine = sorted((t for t in trials if t["reader"] == reader), key=lambda t: int(t["position"]))
        assert sorted(t["case_id"] for t in mine) == sorted(c["case_id"] for c in info["cases"])
        assert {t["changed"] for t in mine} <= {"A", "B"}
        assert sorted(p.stem for p in (packet / "png").iterdir()) == sorted(
            f"{t['code']}-{side}" for t in mine for side in "AB")
        assert sorted(packet_dicoms(packet)) == sorted(f"{t['code']}-{side}" for t in mine for side in "AB")
        assert (packet / "answers.csv").read_text().splitlines()[0] == "code,changed,confidence,comment"
        orders[reader, "fc"] = tuple(t["case_id"] for t in mine)
    assert len(set(orders.values())) == 6  # independent shuffles per reader and session
    sides = [t["changed"] for t in trials]
    assert 0 < sides.count("A") < len(sides)  # a coin per pair (20 pairs: both sides occur)
    assert not list((study / "packets").rglob("key*"))
    for name in ("key.csv", "forced-choice.csv", "study.json"):
        assert (study / "key" / name).stat().st_mode & 0o077 == 0


def test_no_forced_choice_on_request(dataset, tmp_path):
    result = build_study(*dataset, tmp_path / "s", readers=["R1"], seed=1, forced_choice=False)
    assert not result.forced_choice and not (tmp_path / "s" / "key" / "forced-choice.csv").exists()
    assert sorted(p.name for p in (tmp_path / "s" / "packets" / "R1").iterdir()) == ["session-1", "session-2"]


def test_images_match_the_slices(study, dataset):
    from PIL import Image

    rows = {r["code"]: r for r in read_key(study)}
    packet = study / "packets" / "R2" / "session-2"
    for code, ds in packet_dicoms(packet).items():
        row = rows[code]
        source_path = dataset[1].parent / "niisrc" / f"{row['case_id']}.nii.gz"
        source = np.asarray(nib.load(str(source_path)).dataobj)[..., 0]
        # stored (i, j) with i -> patient right, j -> anterior: on screen rows run A -> P, columns R -> L
        screen = source.T[::-1, ::-1]
        values = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert values.shape == screen.shape == (32, 32)
        assert np.abs(values - screen).max() <= float(ds.RescaleSlope)
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([0.9, 0.9])
        assert list(ds.PatientOrientation) == ["L", "P"]
        png = np.asarray(Image.open(packet / "png" / f"{code}.png"))
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


def test_the_two_versions_of_a_case_share_scaling_and_window():
    rng = np.random.default_rng(0)
    clean = rng.normal(500, 100, (16, 16))
    noisy = clean + rng.normal(0, 30, (16, 16))
    a, b = to_stored_pair(clean, noisy)
    for field in ("slope", "intercept", "center", "width"):
        assert getattr(a, field) == getattr(b, field)
    swapped = to_stored_pair(noisy, clean)
    assert (swapped[0].slope, swapped[0].center) == (a.slope, a.center)  # symmetric in the two versions
    assert np.array_equal(swapped[0].stored, b.stored) and np.array_equal(swapped[1].stored, a.stored)
    assert a.intercept == pytest.approx(min(clean.min(), noisy.min()))
    assert min(a.stored.min(), b.stored.min()) == 0 and max(a.stored.max(), b.stored.max()) == 65535
    assert np.abs(a.values - clean).max() <= a.slope and np.abs(b.values - noisy).max() <= b.slope


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
