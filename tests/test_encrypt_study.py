"""``medenc encrypt-study``: synthetic and real series, NIfTI, every --slices mode, bad input, batches.

Every test checks (autouse fixture) that the input files' checksums are the same after it as before.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from typer.testing import CliRunner

from medenc.cli import app
from medenc.core.slices import largest_tumor_slice, tumor_slices
from medenc.errors import InputError
from medenc.io import read_image, read_mask
from tests.helpers import TEST_FILES, make_series

runner = CliRunner()
CT5N = TEST_FILES / "dicomdirtests/98892001/CT5N"
EPS = 2.0
WATCHED: list[Path] | None = None  # input paths the audit hook watches while a test sets it
WRITE_OPENS: list[str] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event != "open" or WATCHED is None or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    path, mode, flags = args
    writing = any(c in str(mode or "") for c in "wax+") or bool(
        (flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
    )
    if writing:
        target = Path(os.fsdecode(path)).resolve()
        if any(target == w or w in target.parents for w in WATCHED):
            WRITE_OPENS.append(str(target))


sys.addaudithook(_audit)


def _checksums(*roots: Path) -> dict[str, str]:
    found = {}
    for root in roots:
        for path in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if path.is_file():
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny synthetic data set (DICOM + NIfTI + masks), a random smallcnn checkpoint and keys."""
    from medenc.core.key import EncryptionKey, PGDSettings
    from medenc.core.mapping import Preprocess
    from medenc.learn.checkpoint import ModelInfo, save_checkpoint
    from medenc.learn.models import build_model
    from medenc.synth.generate import write_dataset

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is much faster on a shared machine
    root = tmp_path_factory.mktemp("encrypt_study")
    manifest = write_dataset(root / "data", 5, seed=1, size=32, fmt="both")
    rows = list(csv.DictReader(manifest.open()))
    classes = ("meningioma", "chordoma", "schwannoma", "pituitary_adenoma", "craniopharyngioma")
    torch.manual_seed(0)
    model = build_model("smallcnn", 1, len(classes))
    save_checkpoint(root / "model.pt", model, ModelInfo("smallcnn", classes, preprocess=Preprocess((32, 32)).to_dict()))
    pgd = PGDSettings(eps=EPS, step=0.5, steps=3)
    key = EncryptionKey.generate(classes, "hconcat", seed=0, pgd=pgd)
    key.save(root / "key.json")
    EncryptionKey.generate(("a", "b", "c"), "hconcat", seed=0, pgd=pgd).save(root / "other-key.json")
    icon_series = make_series(root / "icons" / "T1", np.random.default_rng(3).integers(0, 3000, (4, 20, 24)))
    yield {
        "root": root,
        "data": root / "data",
        "manifest": manifest,
        "rows": rows,
        "model": root / "model.pt",
        "key": root / "key.json",
        "key_obj": key,
        "other_key": root / "other-key.json",
        "icons": icon_series[0].parent,
    }
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def inputs_unchanged(request: pytest.FixtureRequest) -> Any:
    """The input folders' checksums are identical before and after every test."""
    if "env" not in request.fixturenames:
        yield
        return
    env = request.getfixturevalue("env")
    roots = (env["data"], env["icons"], env["model"], env["key"], CT5N, TEST_FILES / "MR_truncated.dcm")
    before = _checksums(*roots)
    yield
    assert _checksums(*roots) == before


def _case(env: dict[str, Any], i: int = 0) -> dict[str, Path | str]:
    row = env["rows"][i]
    data = env["data"]
    return {
        "dicom": data / row["image"],
        "nifti": data / row["case_id"] / "image.nii.gz",
        "mask": data / row["mask"],
        "label": row["label"],
    }


def _run(*args: Any) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def _encrypt(env: dict[str, Any], study: Path, out: Path, *extra: Any, label: str | None = None) -> Any:
    label = label or _case(env)["label"]
    return _run(
        "encrypt-study",
        study,
        "--model",
        env["model"],
        "--key",
        env["key"],
        "--label",
        label,
        "--out",
        out,
        "--device",
        "cpu",
        *extra,
    )


def _sitk_volume(folder: Path) -> Any:
    import SimpleITK

    reader = SimpleITK.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def test_largest_slice_of_a_dicom_study(env: dict[str, Any], tmp_path: Path) -> None:
    from SimpleITK import GetArrayFromImage

    case = _case(env)
    global WATCHED
    probe = tmp_path / "probe"
    WATCHED, WRITE_OPENS[:] = [probe.resolve()], []
    try:
        with probe.open("ab"):  # the audit hook sees a write-open of a watched path
            pass
        assert [str(probe.resolve())] == WRITE_OPENS
        WATCHED = [Path(p).resolve() for p in (case["dicom"], case["mask"], env["model"], env["key"])]
        WRITE_OPENS.clear()
        flags = ("--mask", case["mask"], "--slices", "largest", "--allow-original-slices")
        result = _encrypt(env, case["dicom"], tmp_path / "out", *flags)
    finally:
        WATCHED = None
    assert result.exit_code == 0, result.output
    assert WRITE_OPENS == []  # no input file was ever opened for writing
    assert "encrypted 1 of 9 slices (largest)" in result.output

    volume = read_image(case["dicom"])
    k = largest_tumor_slice(read_mask(case["mask"], like=volume))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.json", "series"]
    assert report["slices"] == {
        "mode": "largest",
        "encrypted": [k],
        "total": 9,
        "copied_unchanged": 8,
        "allow_original_slices": True,
    }
    (row,) = report["per_slice"]
    assert row["index"] == k and row["tumor_voxels"] > 0
    assert sum(row["probabilities_before"].values()) == pytest.approx(1, abs=1e-4)
    assert sum(row["probabilities_after"].values()) == pytest.approx(1, abs=1e-4)
    assert 20 < row["psnr_db"] < 80 and 0.5 < row["ssim"] < 1 and row["linf_stored"] >= 1
    assert row["l2_model"] <= math.sqrt(2) * EPS * 1.25  # two halves, each within eps (resize makes it approximate)
    assert report["key_fingerprint"] == env["key_obj"].fingerprint()
    tumor = read_mask(case["mask"], like=volume)
    with_tumor = sum(bool(tumor[z].any()) for z in range(9) if z != k)
    assert report["sharing"] == {
        "allow_original_slices": True,
        "unencrypted_slices_written": 8,
        "unencrypted_slices": [z for z in range(9) if z != k],
        "unencrypted_slices_with_tumor": with_tumor,
        "slices_left_out": 0,
    }
    warning = f"--allow-original-slices: wrote 8 unencrypted slice(s) with their original pixels ({with_tumor} of them"
    assert warning in " ".join(result.output.split()) and warning in report["warnings"][-1]
    assert report["input"]["series_uid"] == str(volume.info["series_uid"])
    assert report["timing_s"]["pgd"] > 0 and report["timing_s"]["io"] > 0
    assert set(report["versions"]) >= {"medenc", "torch", "pydicom", "nibabel", "numpy"}

    # the derived series: one volume with the source geometry, same study, new UIDs, only slice k changed
    source, derived = _sitk_volume(case["dicom"]), _sitk_volume(tmp_path / "out" / "series")
    assert derived.GetSize() == source.GetSize() == (32, 32, 9)
    assert derived.GetSpacing() == pytest.approx(source.GetSpacing())
    assert derived.GetOrigin() == pytest.approx(source.GetOrigin())
    assert derived.GetDirection() == pytest.approx(source.GetDirection())
    changed = np.flatnonzero((GetArrayFromImage(derived) != GetArrayFromImage(source)).any(axis=(1, 2)))
    assert changed.tolist() == [k]
    headers = [pydicom.dcmread(p) for p in sorted((tmp_path / "out" / "series").iterdir())]
    sources = {str(f.header.SOPInstanceUID) for f in volume.frames}
    assert {h.StudyInstanceUID for h in headers} == {volume.info["study_uid"]}
    assert {h.SeriesInstanceUID for h in headers} == {report["output"]["series_uid"]} != {volume.info["series_uid"]}
    assert not {str(h.SOPInstanceUID) for h in headers} & sources
    assert row["source_sop_uid"] in sources and row["output_sop_uid"] in {str(h.SOPInstanceUID) for h in headers}
    assert all(h.ImageType[:2] == ["DERIVED", "SECONDARY"] for h in headers)

    # no key material anywhere in the output
    text = (tmp_path / "out" / "report.json").read_text()
    secret = env["key_obj"].to_dict()
    assert "targets" not in text and "ratios" not in text and json.dumps(secret["targets"]) not in text
    for path in (tmp_path / "out" / "series").iterdir():
        assert b"targets" not in path.read_bytes()


@pytest.mark.parametrize(("mode", "allow_original"), [("tumor", True), ("all", False), ("tumor", False)])
def test_slice_modes(env: dict[str, Any], tmp_path: Path, mode: str, allow_original: bool) -> None:
    from medenc.study.encrypt import encrypt_study

    case = _case(env, 1)
    volume = read_image(case["dicom"])
    tumor = read_mask(case["mask"], like=volume)
    expected = tumor_slices(tumor) if mode == "tumor" else list(range(9))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = encrypt_study(
            case["dicom"],
            model=env["model"],
            key=env["key"],
            label=case["label"],
            out=tmp_path / "out",
            mask=case["mask"] if mode == "tumor" else None,
            slices=mode,
            allow_original_slices=allow_original,
            device="cpu",
        )
    messages = [str(w.message) for w in caught if "--allow-original-slices" in str(w.message)]
    assert len(messages) == (1 if allow_original else 0)  # only the flag writes original slices, with a warning
    assert report["slices"]["encrypted"] == expected and len(report["per_slice"]) == len(expected)
    files = sorted((tmp_path / "out" / "series").iterdir())
    again = read_image(tmp_path / "out" / "series")
    if not allow_original:
        assert len(files) == len(expected) and again.shape == (len(expected), 32, 32)
        assert report["slices"]["copied_unchanged"] == 0
        return
    assert len(files) == 9 and again.shape == volume.shape
    np.testing.assert_allclose(again.affine, volume.affine, atol=1e-4)
    changed = np.flatnonzero((again.voxels != volume.voxels).any(axis=(1, 2))).tolist()
    assert changed and set(changed) <= set(expected)
    assert report["timing_s"]["pgd"] > 0 and report["pgd_batches"]["samples"] == 2 * len(expected)


def _pixel_bytes_by_source(folder: Path) -> dict[str, bytes]:
    """PixelData of each file of a series, keyed by its own SOP Instance UID and by the one it derives from."""
    found = {}
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        found[str(ds.SOPInstanceUID)] = ds.PixelData
        if "SourceImageSequence" in ds:
            found["from:" + str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID)] = ds.PixelData
    return found


def _shared_counts(source: Path, shared: Path, tumor: np.ndarray) -> dict[str, int]:
    """Slices of the shared series whose pixel bytes are those of their source file: all, and with tumor."""
    volume = read_image(source)
    derived = _pixel_bytes_by_source(shared)
    stored_to_canonical = {int(s): z for z, s in enumerate(volume.layout.stored_slices_of(np.arange(volume.shape[0])))}
    identical = []
    for s, frame in enumerate(volume.frames):
        original = pydicom.dcmread(frame.path).PixelData
        if derived.get("from:" + str(frame.header.SOPInstanceUID)) == original:
            identical.append(stored_to_canonical[s])
    return {
        "files": len([k for k in derived if not k.startswith("from:")]),
        "identical": len(identical),
        "identical_with_tumor": sum(bool(tumor[z].any()) for z in identical),
    }


def test_the_default_shares_no_original_slice(env: dict[str, Any], tmp_path: Path) -> None:
    """The issue's check: a synthetic study with a mask, shared with the defaults, then each --slices mode."""
    case = _case(env, 3)
    volume = read_image(case["dicom"])
    tumor = read_mask(case["mask"], like=volume)
    n_tumor = len(tumor_slices(tumor))
    assert 1 < n_tumor < 9  # the study has tumor slices and tumor-free ones: the counts below can tell

    result = _encrypt(env, case["dicom"], tmp_path / "default", "--mask", case["mask"], label=case["label"])
    assert result.exit_code == 0, result.output
    assert "shared series: 9 slices, all encrypted" in result.output and "warning" not in result.output
    counts = _shared_counts(case["dicom"], tmp_path / "default" / "series", tumor)
    assert counts == {"files": 9, "identical": 0, "identical_with_tumor": 0}
    again = read_image(tmp_path / "default" / "series")
    assert not any(np.array_equal(again.voxels[z], volume.voxels[z]) for z in range(9))
    report = json.loads((tmp_path / "default" / "report.json").read_text())
    assert report["slices"]["mode"] == "all" and report["sharing"]["unencrypted_slices_written"] == 0
    assert report["sharing"]["unencrypted_slices_with_tumor"] == 0 and report["warnings"] == []

    # largest / tumor without the flag: only the encrypted slices are written
    for mode, n in (("largest", 1), ("tumor", n_tumor)):
        result = _encrypt(env, case["dicom"], tmp_path / mode, "--mask", case["mask"], "--slices", mode,
                          label=case["label"])
        assert result.exit_code == 0, result.output
        assert f"shared series: {n} slices, all encrypted, {9 - n} not encrypted and left out" in result.output
        counts = _shared_counts(case["dicom"], tmp_path / mode / "series", tumor)
        assert counts == {"files": n, "identical": 0, "identical_with_tumor": 0}
        assert json.loads((tmp_path / mode / "report.json").read_text())["sharing"]["slices_left_out"] == 9 - n

    # the flag: a complete volume, the other slices original, counted and warned about
    result = _encrypt(env, case["dicom"], tmp_path / "flag", "--mask", case["mask"], "--slices", "largest",
                      "--allow-original-slices", label=case["label"])
    assert result.exit_code == 0, result.output
    counts = _shared_counts(case["dicom"], tmp_path / "flag" / "series", tumor)
    assert counts == {"files": 9, "identical": 8, "identical_with_tumor": n_tumor - 1}
    assert f"8 of them UNENCRYPTED (original pixels; {n_tumor - 1} with tumor)" in result.output
    assert "medenc: warning: --allow-original-slices: wrote 8 unencrypted slice(s)" in result.output
    sharing = json.loads((tmp_path / "flag" / "report.json").read_text())["sharing"]
    assert sharing["allow_original_slices"] and sharing["unencrypted_slices_with_tumor"] == n_tumor - 1

    # the old --only-selected (now the default) contradicts the flag
    result = _encrypt(env, case["dicom"], tmp_path / "bad", "--slices", "largest", "--mask", case["mask"],
                      "--only-selected", "--allow-original-slices", label=case["label"])
    assert result.exit_code == 2 and "contradict" in result.output


def test_nifti_input(env: dict[str, Any], tmp_path: Path) -> None:
    case = _case(env, 2)
    args = ("--mask", case["mask"], "--slices", "largest", "--allow-original-slices")
    result = _encrypt(env, case["nifti"], tmp_path / "out", *args, label=case["label"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out" / "image.nii.gz"
    source, derived = nib.load(case["nifti"]), nib.load(out)
    np.testing.assert_array_equal(derived.affine, source.affine)
    assert derived.shape == source.shape and derived.get_data_dtype() == source.get_data_dtype()
    changed = np.flatnonzero((np.asanyarray(derived.dataobj) != np.asanyarray(source.dataobj)).any(axis=(0, 1)))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert changed.tolist() == report["slices"]["encrypted"]  # NIfTI z runs inferior -> superior, as canonical
    assert report["input"]["format"] == report["output"]["format"] == "nifti" and report["output"]["files"] == 1


def test_real_ct_series(env: dict[str, Any], tmp_path: Path) -> None:
    """pydicom's CT5N (5 slices, 16x16): every slice, then the largest slice of a mask made on its grid."""
    result = _encrypt(env, CT5N, tmp_path / "all", "--slices", "all")
    assert result.exit_code == 0, result.output
    source, derived = _sitk_volume(CT5N), _sitk_volume(tmp_path / "all" / "series")
    assert derived.GetSize() == source.GetSize() == (16, 16, 5)
    assert derived.GetOrigin() == pytest.approx(source.GetOrigin())
    assert derived.GetSpacing() == pytest.approx(source.GetSpacing())
    report = json.loads((tmp_path / "all" / "report.json").read_text())
    assert report["slices"]["encrypted"] == [0, 1, 2, 3, 4] and report["input"]["modality"] == "CT"

    volume = read_image(CT5N)
    mask = np.zeros(volume.shape, dtype=np.uint8)
    mask[3, 4:12, 4:12] = 1
    mask[1, 6:8, 6:8] = 1
    nib.save(nib.Nifti1Image(mask.transpose(2, 1, 0), volume.affine), tmp_path / "mask.nii.gz")
    result = _encrypt(env, CT5N, tmp_path / "largest", "--mask", tmp_path / "mask.nii.gz", "--slices", "largest")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "largest" / "report.json").read_text())
    assert report["slices"]["encrypted"] == [3] and report["output"]["files"] == 1
    (header,) = [pydicom.dcmread(p) for p in (tmp_path / "largest" / "series").iterdir()]
    assert header.SourceImageSequence[0].ReferencedSOPInstanceUID == report["per_slice"][0]["source_sop_uid"]


def test_icons_and_private_tags_removed(env: dict[str, Any], tmp_path: Path) -> None:
    result = _encrypt(env, env["icons"], tmp_path / "out", "--slices", "all")
    assert result.exit_code == 0, result.output
    for path in (tmp_path / "out" / "series").iterdir():
        ds = pydicom.dcmread(path)
        assert "IconImageSequence" not in ds and 0x00291011 not in ds  # private data may hold original pixels


def test_a_sagittal_series_comes_back_whole(env: dict[str, Any], tmp_path: Path) -> None:
    """Every stored (sagittal) file holds a row of each axial slice: all are written, UIDs are not per slice."""
    stored = np.random.default_rng(4).integers(0, 3000, (6, 10, 8))
    files = make_series(tmp_path / "sag", stored, "sagittal")
    mask = np.zeros(stored.shape, np.uint8)
    mask[2:4, 3:7, 2:6] = 1
    volume = read_image(tmp_path / "sag")
    nib.save(nib.Nifti1Image(mask.transpose(2, 1, 0), volume.affine), tmp_path / "mask.nii.gz")
    args = ("--mask", tmp_path / "mask.nii.gz", "--slices", "largest")
    result = _encrypt(env, tmp_path / "sag", tmp_path / "refused", *args)  # other axial slices cannot be left out
    assert result.exit_code == 2 and "sagittal or coronal" in result.output and not (tmp_path / "refused").exists()
    result = _encrypt(env, tmp_path / "sag", tmp_path / "out", *args, "--allow-original-slices")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["slices"]["encrypted"] == [2] and report["output"]["files"] == len(files) == 8
    assert report["per_slice"][0]["source_sop_uid"] is None
    again = read_image(tmp_path / "out" / "series")
    changed = np.flatnonzero((again.voxels != volume.voxels).any(axis=(1, 2))).tolist()
    assert again.shape == volume.shape and changed == [2]


def _bad(env: dict[str, Any], tmp_path: Path) -> dict[str, tuple[list[Any], str]]:
    case = _case(env)
    dicom, mask = case["dicom"], case["mask"]
    empty, wrong_grid = tmp_path / "empty.nii.gz", tmp_path / "grid.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 9), np.uint8), nib.load(mask).affine), empty)
    nib.save(nib.Nifti1Image(np.ones((8, 8, 3), np.uint8), np.eye(4)), wrong_grid)
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "key.json").write_bytes(env["key"].read_bytes())
    (tmp_path / "keys" / "key.json").chmod(0o600)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    out = tmp_path / "out"
    return {
        "unknown label": ([dicom, "--mask", mask, "--label", "glioma", "--out", out], "label 'glioma' is not one"),
        "model/key mismatch": ([dicom, "--mask", mask, "--out", out, "--key", env["other_key"]], "do not match"),
        "output inside input": ([dicom, "--mask", mask, "--out", Path(dicom) / "enc"], "lies inside the input folder"),
        "output is the input": ([dicom, "--mask", mask, "--out", dicom, "--force"], "is the input"),
        "output holds the input": ([dicom, "--mask", mask, "--out", Path(dicom).parent, "--force"], "holds the input"),
        "output holds the key": (
            [dicom, "--mask", mask, "--out", tmp_path / "keys", "--key", tmp_path / "keys" / "key.json", "--force"],
            "holds the input",
        ),
        "missing mask, largest": ([dicom, "--out", out, "--slices", "largest"], "--slices largest needs a tumor mask"),
        "missing mask, tumor": ([dicom, "--out", out, "--slices", "tumor"], "--slices tumor needs a tumor mask"),
        "bad slice mode": ([dicom, "--out", out, "--slices", "some"], "--slices must be one of"),
        "empty mask": ([dicom, "--mask", empty, "--out", out, "--slices", "largest"], "empty mask"),
        "mask on another grid": ([dicom, "--mask", wrong_grid, "--out", out], "does not match the image grid"),
        "output exists": ([dicom, "--mask", mask, "--out", tmp_path / "taken"], "already exists"),
        "no such study": ([tmp_path / "nothing", "--out", out, "--slices", "all"], "study not found"),
        "not DICOM": ([TEST_FILES / "README.txt", "--out", out, "--slices", "all"], "not a DICOM file"),
        "no pixel data": ([TEST_FILES / "rtplan.dcm", "--out", out, "--slices", "all"], "no PixelData"),
        "RGB": ([TEST_FILES / "examples_rgb_color.dcm", "--out", out, "--slices", "all"], "photometric"),
        "palette colour": ([TEST_FILES / "examples_palette.dcm", "--out", out, "--slices", "all"], "PALETTE COLOR"),
        "truncated": ([TEST_FILES / "MR_truncated.dcm", "--out", out, "--slices", "all"], "truncated"),
        "mixed orientations": (
            [TEST_FILES / "dicomdirtests/98892003/MR700", "--out", out, "--slices", "all"],
            "different orientations",
        ),
        "mixed series, no choice": (
            [TEST_FILES / "dicomdirtests/98892003/MR2", "--out", out, "--slices", "all"],
            "mixed series",
        ),
    }


BAD_CASES = [
    "unknown label",
    "model/key mismatch",
    "output inside input",
    "output is the input",
    "output holds the input",
    "output holds the key",
    "missing mask, largest",
    "missing mask, tumor",
    "bad slice mode",
    "empty mask",
    "mask on another grid",
    "output exists",
    "no such study",
    "not DICOM",
    "no pixel data",
    "RGB",
    "palette colour",
    "truncated",
    "mixed orientations",
    "mixed series, no choice",
]


@pytest.mark.parametrize("name", BAD_CASES)
def test_bad_input_is_one_clear_line_and_writes_nothing(env: dict[str, Any], tmp_path: Path, name: str) -> None:
    args, message = _bad(env, tmp_path)[name]
    args = list(args)
    if "--key" not in args:
        args += ["--key", env["key"]]
    if "--label" not in args:
        args += ["--label", _case(env)["label"]]
    before = sorted(p.name for p in tmp_path.iterdir())
    result = _run("encrypt-study", *args, "--model", env["model"], "--device", "cpu")
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("medenc: error:")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no temporary left


def test_library_errors_are_input_errors(env: dict[str, Any], tmp_path: Path) -> None:
    from medenc.study.encrypt import encrypt_study

    case = _case(env)
    with pytest.raises(InputError, match="not one of the model's classes"):
        encrypt_study(case["dicom"], model=env["model"], key=env["key"], label="nope", out=tmp_path / "o", slices="all")


def test_an_interrupted_run_leaves_no_half_output(env: dict[str, Any], tmp_path: Path, monkeypatch: Any) -> None:
    import medenc.study.encrypt as module

    case = _case(env)
    assert _encrypt(env, case["dicom"], tmp_path / "out", "--slices", "all").exit_code == 0
    before = _checksums(tmp_path / "out")

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "verify_output", interrupted)
    with pytest.raises(KeyboardInterrupt):
        module.encrypt_study(
            case["dicom"],
            model=env["model"],
            key=env["key"],
            label=case["label"],
            out=tmp_path / "out",
            slices="all",
            force=True,
        )
    with pytest.raises(KeyboardInterrupt):
        module.encrypt_study(
            case["dicom"], model=env["model"], key=env["key"], label=case["label"], out=tmp_path / "new", slices="all"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no half series, no temporary
    assert _checksums(tmp_path / "out") == before  # the earlier output is intact


def test_a_key_readable_by_others_gives_a_warning(env: dict[str, Any], tmp_path: Path) -> None:
    key = tmp_path / "key.json"
    key.write_bytes(env["key"].read_bytes())
    key.chmod(0o644)
    case = _case(env)
    result = _run(
        "encrypt-study",
        case["dicom"],
        "--model",
        env["model"],
        "--key",
        key,
        "--label",
        case["label"],
        "--slices",
        "all",
        "--out",
        tmp_path / "out",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    assert "medenc: warning:" in result.output and "readable by others" in result.output
    assert key.read_bytes() == env["key"].read_bytes() and (key.stat().st_mode & 0o777) == 0o644


def _write_batch(path: Path, env: dict[str, Any], bad_label: str) -> Path:
    rows = [(r["case_id"], r["label"], f"data/{r['image']}", f"data/{r['mask']}") for r in env["rows"][:3]]
    rows.insert(1, ("bad-case", bad_label, "data/" + env["rows"][3]["image"], "data/" + env["rows"][3]["mask"]))
    lines = ["case_id,label,image,mask"] + [",".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_batch_with_a_bad_case_then_resumed(env: dict[str, Any], tmp_path: Path) -> None:
    batch = _write_batch(env["root"] / "batch-test.csv", env, bad_label="glioma")  # paths relative to it
    out = tmp_path / "batch"
    args = (
        "encrypt-study",
        "--batch",
        batch,
        "--model",
        env["model"],
        "--key",
        env["key"],
        "--out",
        out,
        "--device",
        "cpu",
    )
    try:
        result = _run(*args)
        assert result.exit_code == 1, result.output
        assert "4 cases: 3 encrypted, 0 skipped (already done), 1 failed" in result.output
        assert "failed: bad-case: label 'glioma' is not one of the model's classes" in result.output
        summary = json.loads((out / "batch-summary.json").read_text())
        assert [r["status"] for r in summary["results"]] == ["encrypted", "failed", "encrypted", "encrypted"]
        reports = sorted(out.glob("*/report.json"))
        assert len(reports) == 3 and not (out / "bad-case").exists()
        stamps = {p: p.stat().st_mtime_ns for p in reports}

        result = _run(*args)  # resumed: the finished cases are skipped, the bad one fails again
        assert result.exit_code == 1 and "0 encrypted, 3 skipped (already done), 1 failed" in result.output

        _write_batch(batch, env, bad_label=env["rows"][3]["label"])  # fixed
        result = _run(*args)
        assert result.exit_code == 0, result.output
        assert "1 encrypted, 3 skipped (already done), 0 failed" in result.output
        assert {p: p.stat().st_mtime_ns for p in reports} == stamps

        # an output replaced by its original since (same name, same count) is not "already done": redone
        first = json.loads(reports[0].read_text())
        series = reports[0].parent / Path(first["output"]["path"]).name
        written = sorted(series.iterdir())[0]
        source = sorted(Path(first["input"]["path"]).iterdir())[0]
        written.write_bytes(source.read_bytes())
        result = _run(*args)
        assert result.exit_code == 0, result.output
        assert "1 encrypted, 3 skipped (already done), 0 failed" in result.output
        assert "no longer matches its report" in result.output
        assert written.read_bytes() != source.read_bytes()
        result = _run(*args)  # and now it is done again
        assert "0 encrypted, 4 skipped (already done), 0 failed" in result.output

        result = _run(*args, "--slices", "largest")  # another request: existing outputs are not replaced...
        assert result.exit_code == 1 and "0 encrypted, 0 skipped (already done), 4 failed" in result.output
        assert "already exists" in result.output
        result = _run(*args, "--slices", "largest", "--force")  # ...unless asked
        assert result.exit_code == 0 and "4 encrypted" in result.output
        assert all(json.loads(p.read_text())["slices"]["mode"] == "largest" for p in out.glob("*/report.json"))
    finally:
        batch.unlink()


def test_batch_file_errors(env: dict[str, Any], tmp_path: Path) -> None:
    from medenc.study.batch import read_batch

    (tmp_path / "a.csv").write_text("case_id,image\nx,y\n")
    with pytest.raises(InputError, match="missing column"):
        read_batch(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("case_id,label,image\na/b,l,x\na_b,l,y\n")
    with pytest.raises(InputError, match="clashes"):
        read_batch(tmp_path / "b.csv")
    result = _run(
        "encrypt-study",
        "--batch",
        tmp_path / "b.csv",
        "--label",
        "x",
        "--model",
        env["model"],
        "--key",
        env["key"],
        "--out",
        tmp_path / "o",
    )
    assert result.exit_code == 2 and "--label cannot be used with --batch" in result.output


def test_batch_paths_leading_out_of_its_folder_are_refused(env: dict[str, Any], tmp_path: Path) -> None:
    """Issue #22 item 3: absolute paths, '..' and links leading out need --allow-external-paths."""
    import shutil

    case = _case(env)
    here = tmp_path / "batch"
    here.mkdir()
    shutil.copytree(case["dicom"], here / "study")
    (here / "outside-link").symlink_to(case["dicom"], target_is_directory=True)
    shutil.copytree(case["dicom"], here / "mixed")
    first = sorted((here / "mixed").iterdir())[0]
    first.unlink()
    first.symlink_to(sorted(case["dicom"].iterdir())[0])  # one file of the folder is a link leading out
    outside = {
        "absolute": (str(case["dicom"]), "is absolute"),
        "dotdot": (f"../{case['dicom'].name}", "climbs out with '..'"),
        "link": ("outside-link", "is a link leading out"),
        "inner-link": ("mixed", f"holds a link leading out ({first.name})"),
    }
    for name, (image, why) in outside.items():
        batch = here / f"{name}.csv"
        batch.write_text(f"case_id,label,image\n{name},{case['label']},{image}\n")
        args = ("encrypt-study", "--batch", batch, "--model", env["model"], "--key", env["key"], "--slices", "all",
                "--device", "cpu", "--out", tmp_path / f"out-{name}")  # fmt: skip
        result = _run(*args)
        assert result.exit_code == 2, (name, result.output)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and f"line 2: image {image!r} {why} of the batch file's folder" in lines[0]
        assert "--allow-external-paths" in lines[0] and not (tmp_path / f"out-{name}").exists()
    inside = here / "inside.csv"
    inside.write_text(f"case_id,label,image\nin,{case['label']},study\n")
    args = ("encrypt-study", "--batch", inside, "--model", env["model"], "--key", env["key"], "--slices", "all",
            "--device", "cpu", "--out", tmp_path / "out-in")  # fmt: skip
    assert _run(*args).exit_code == 0
    result = _run(*args[:3], "--allow-external-paths", *args[3:-1], tmp_path / "out-abs")
    assert result.exit_code == 0, result.output  # an inside path is accepted with the flag too
    batch = here / "absolute.csv"
    result = _run("encrypt-study", "--batch", batch, "--allow-external-paths", *args[3:-1], tmp_path / "out-abs2")
    assert result.exit_code == 0 and "1 encrypted" in result.output, result.output


@pytest.mark.gpu
def test_cuda_runs_a_study_in_one_batched_call(env: dict[str, Any], tmp_path: Path) -> None:
    from medenc.study.encrypt import encrypt_study

    case = _case(env)
    report = encrypt_study(
        case["dicom"],
        model=env["model"],
        key=env["key"],
        label=case["label"],
        out=tmp_path / "out",
        slices="all",
        device="cuda",
    )
    assert report["pgd_batches"]["calls"] == 1 and report["device"].startswith("cuda")


def test_progress_has_a_real_total_and_all_slices_go_in_one_pgd_call(env: dict[str, Any], tmp_path: Path) -> None:
    from medenc.study.encrypt import encrypt_study

    case = _case(env, 4)
    seen: list[tuple[str, float, float]] = []
    common = dict(model=env["model"], key=env["key"], label=case["label"], device="cpu")
    report = encrypt_study(case["dicom"], out=tmp_path / "one", progress=lambda *a: seen.append(a), **common)
    assert report["pgd_batches"] == {"calls": 1, "slices_per_call": 9, "samples": 18}  # 9 slices x 2 targets
    pgd = [(done, total) for phase, done, total in seen if phase == "pgd"]
    steps = env["key_obj"].pgd.steps
    assert len(pgd) == 1 + steps and {total for _, total in pgd} == {9}  # a real total, advanced every PGD step
    assert [done for done, _ in pgd] == pytest.approx([9 * i / steps for i in range(steps + 1)])
    assert [p for p, *_ in seen if p != "pgd"] == ["read", "measure", "write", "write"]
    assert seen[-1] == ("write", 1, 1)
    timing = report["timing_s"]
    assert timing["io"] == pytest.approx(timing["read"] + timing["write"] + timing["verify"], abs=1e-3)

    report = encrypt_study(case["dicom"], out=tmp_path / "small", batch_size=4, **common)
    assert report["pgd_batches"] == {"calls": 5, "slices_per_call": 2, "samples": 18}
    first = read_image(tmp_path / "one" / "series").voxels
    np.testing.assert_array_equal(read_image(tmp_path / "small" / "series").voxels, first)  # batching changes nothing


def test_cpu_batch_takes_a_whole_study_up_to_a_pixel_budget() -> None:
    from types import SimpleNamespace

    from medenc.study.encrypt import cpu_batch_size

    def session(size: int) -> Any:
        return SimpleNamespace(key=SimpleNamespace(num_targets=2), base=SimpleNamespace(preprocess=SimpleNamespace(
            size=(size, size))))

    assert cpu_batch_size(SimpleNamespace(shape=(150, 64, 64)), session(64), 150) == 300  # the whole study
    assert cpu_batch_size(SimpleNamespace(shape=(150, 512, 512)), session(64), 150) == 8  # 8 x 512^2 = 2^21
    assert cpu_batch_size(SimpleNamespace(shape=(150, 64, 64)), session(2048), 150) == 2  # at least one slice


def test_the_cli_draws_each_phase_with_its_total() -> None:
    from medenc.cli.encrypt_study import _drawer

    calls: list[dict[str, Any]] = []

    class Bars:
        def update(self, task: int, **fields: Any) -> None:
            calls.append(fields)

    draw = _drawer(Bars(), 0, "s1: ")
    draw("pgd", 37.5, 150)
    draw("write", 1, 1)
    assert calls == [
        {"description": "s1: PGD (slices)", "completed": 37.5, "total": 150},
        {"description": "s1: writing", "completed": 1, "total": 1},
    ]


def test_coherent_slices_make_one_smooth_field_through_the_plane(env: dict[str, Any], tmp_path: Path) -> None:
    case = _case(env, 1)
    result = _encrypt(env, case["dicom"], tmp_path / "out", "--coherent-slices", "4", label=case["label"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["request"]["coherent_slices"] == 4 and report["pgd_batches"]["calls"] == 1
    source = read_image(case["dicom"]).voxels.astype(float)
    delta = read_image(tmp_path / "out" / "series").voxels.astype(float) - source
    margin = np.abs(delta[:5]).max()  # pixels that no bound (1..4095 here) clips on slices 0..4 (knots at 0 and 4)
    inside = ((source[:5] > 1 + margin) & (source[:5] < 4095 - margin)).all(axis=0)
    assert inside.sum() > 100 and np.abs(delta[0][inside]).max() > 5
    for z in (1, 2, 3):  # linear between the knots, up to the rounding to stored integers
        expected = ((4 - z) * delta[0] + z * delta[4]) / 4
        assert np.abs(delta[z] - expected)[inside].max() <= 1.5
    bad = _encrypt(env, case["dicom"], tmp_path / "bad", "--coherent-slices", "0", label=case["label"])
    assert bad.exit_code == 2 and "--coherent-slices must be >= 1" in bad.output
