"""Derived files meet the standard as the DICOM validator reads it, Modality LUTs, the organisation UID root.

- every MR / CT file of the corpora (pydicom's test files and pydicom-data; the Enhanced MR and CT
  ones among them), pydicom's ``mlut_18.dcm``, the classic CT and MR series and a synthetic series:
  ``dciodvfy`` (Debian dicom3tools) finds nothing in the derived file that it does not find in the
  source. A finding that quotes a value the source's findings quote too (a non-conformant source UID
  the derived file references) is the source's, not new;
- enhanced images: ImageType / FrameType ``DERIVED`` with value 2 kept, the source reference per
  frame in a Derivation Image group, the source instance in SourceImageEvidenceSequence;
- Modality LUT sources are read through their table and written back through it;
- every new UID lies under the organisation root given with ``uid_root`` / ``--uid-root``.
"""

from __future__ import annotations

import gzip
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch

from medenc.errors import InputError
from medenc.io import read_image, write_like
from medenc.io.dicom_enhanced import DERIVATION_CODE, ORIGINAL_ONLY, is_enhanced
from medenc.io.uids import check_uid_root
from medenc.study.encrypt import encrypt_volume
from tests.helpers import DATA_STORE, SMALL_INPUT, TEST_FILES, dciodvfy, make_series, read_any, tiny_encryptor
from tests.test_io_dicom_roundtrip import FILES, _id

MLUT = DATA_STORE / "mlut_18.dcm"
ENHANCED = [p for p in FILES if is_enhanced(read_any(p))]
_PATH = re.compile(r"^(Error|Warning) - </[^>]*> - ")


def _plain(path: Path, tmp: Path) -> Path:
    """A gzipped corpus file unpacked (dciodvfy reads plain files only)."""
    data = path.read_bytes()
    if data[:2] != b"\x1f\x8b":
        return path
    plain = tmp / (path.stem + ".dcm")
    plain.write_bytes(gzip.decompress(data))
    return plain


def new_findings(source: Path, derived: Path, tmp: Path) -> list[str]:
    """The validator's findings on ``derived`` that it does not make on ``source``."""
    before = dciodvfy(_plain(source, tmp))
    quoted = {_PATH.sub("", line) for line in before if "= <" in line}
    after = dciodvfy(derived)
    return [line for line in after if line not in before and not ("= <" in line and _PATH.sub("", line) in quoted)]


def _derive(path: Path, out: Path, slices: list[int] | None = None, **kwargs: object) -> tuple[object, list[Path]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some corpus files make pydicom warn (odd values), not medenc
        volume = read_image(path)
    torch.manual_seed(0)
    chosen = list(range(volume.shape[0])) if slices is None else slices
    encrypted = encrypt_volume(volume, tiny_encryptor(steps=2), 0, slices=chosen, preprocess=SMALL_INPUT)
    return volume, write_like(volume, encrypted, out, slices=slices, **kwargs)


def test_the_enhanced_files_are_all_there() -> None:
    names = {_id(p) for p in ENHANCED}
    assert {"pydicom-data/eCT_Supplemental.dcm", "pydicom-data/emri_small.dcm"} <= names
    assert len(ENHANCED) == 6, names  # eCT + emri_small in 5 transfer syntaxes


@pytest.mark.parametrize("path", [*FILES, MLUT], ids=lambda p: _id(p) if p != MLUT else "pydicom-data/mlut_18.dcm")
def test_a_derived_file_adds_no_validator_findings(path: Path, tmp_path: Path) -> None:
    volume, written = _derive(path, tmp_path / "out")
    for file in written:
        assert new_findings(volume.frames[0].path, file, tmp_path) == []


def test_emri_small_derived_is_as_valid_as_its_source(tmp_path: Path) -> None:
    """The 18 errors the Enhanced MR derivation used to add (issue 18) are gone, and nothing else came."""
    source = DATA_STORE / "emri_small.dcm"
    _, written = _derive(source, tmp_path / "out")
    after = dciodvfy(written[0])
    assert sorted(after) == sorted(dciodvfy(source))
    assert not [line for line in after if "SECONDARY" in line or "SourceImageSequence" in line]
    assert not [line for line in after if "condition unsatisfied" in line]


@pytest.mark.parametrize("path", ENHANCED, ids=_id)
def test_enhanced_derivation_is_per_frame(path: Path, tmp_path: Path) -> None:
    volume, written = _derive(path, tmp_path / "out")
    source, derived = read_any(volume.frames[0].path), pydicom.dcmread(written[0])
    assert derived.ImageType[0] == "DERIVED" and derived.ImageType[1] == source.ImageType[1] == "PRIMARY"
    assert list(derived.ImageType[2:]) == list(source.ImageType[2:])
    assert "SourceImageSequence" not in derived and "DerivationDescription" not in derived
    assert not [k for k in ORIGINAL_ONLY.get(source.SOPClassUID, ()) if k in derived]
    if "PerFrameFunctionalGroupsSequence" not in source:  # emri_small: no group to hold the reference
        assert "PerFrameFunctionalGroupsSequence" not in derived
        assert "medenc" in derived.ImageComments and "SourceImageEvidenceSequence" not in derived
        return
    for number, item in enumerate(derived.PerFrameFunctionalGroupsSequence, start=1):
        derivation = item.DerivationImageSequence[0]
        assert "medenc" in derivation.DerivationDescription
        code = derivation.DerivationCodeSequence[0]
        assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == DERIVATION_CODE
        reference = derivation.SourceImageSequence[0]
        assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert reference.ReferencedFrameNumber == number
        frame_type = item.get("CTImageFrameTypeSequence") or item.get("MRImageFrameTypeSequence")
        if frame_type:
            assert frame_type[0].FrameType[:2] == ["DERIVED", "PRIMARY"]
    evidence = derived.SourceImageEvidenceSequence[0]
    assert evidence.StudyInstanceUID == source.StudyInstanceUID
    series = evidence.ReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == source.SeriesInstanceUID
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID


def test_enhanced_mr_loses_only_the_original_only_attributes(tmp_path: Path) -> None:
    source = read_any(DATA_STORE / "emri_small.dcm")
    _, written = _derive(DATA_STORE / "emri_small.dcm", tmp_path / "out")
    derived = pydicom.dcmread(written[0])
    removed = {k for k in ORIGINAL_ONLY[source.SOPClassUID] if k in source}
    assert len(removed) == 17 and not removed & set(derived.dir())
    assert derived.MagneticFieldStrength == source.MagneticFieldStrength  # the acquisition description stays
    assert derived.AcquisitionDateTime == source.AcquisitionDateTime  # 1C too, but allowed once DERIVED


@pytest.mark.parametrize("name", ["eCT_Supplemental.dcm", "emri_small.dcm"])
def test_one_frame_of_an_enhanced_file(name: str, tmp_path: Path) -> None:
    volume, written = _derive(DATA_STORE / name, tmp_path / "out", slices=[1])
    derived = pydicom.dcmread(written[0])
    assert derived.NumberOfFrames == 1
    assert new_findings(volume.frames[0].path, written[0], tmp_path) == []
    if "PerFrameFunctionalGroupsSequence" in derived:
        frame = volume.frames[volume.layout.stored_slices_of([1])[0]].frame
        reference = derived.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
        assert reference.ReferencedFrameNumber == frame + 1


@pytest.mark.parametrize(
    "series",
    ["dicomdirtests/98892001/CT5N", "dicomdirtests/77654033/CT2"],
    ids=lambda s: s.split("/")[-1],
)
def test_classic_series_add_no_findings(series: str, tmp_path: Path) -> None:
    volume, written = _derive(TEST_FILES / series, tmp_path / "out", slices=[0, 1])
    sources = {f.header.SOPInstanceUID: f.path for f in volume.frames}
    for file in written:
        derived = pydicom.dcmread(file)
        assert derived.ImageType[:2] == ["DERIVED", "SECONDARY"]
        source = sources[derived.SourceImageSequence[0].ReferencedSOPInstanceUID]
        assert new_findings(source, file, tmp_path) == []


def test_a_synthetic_mr_series_adds_no_findings(tmp_path: Path) -> None:
    stored = np.random.default_rng(0).integers(0, 3000, (3, 24, 20))
    files = make_series(tmp_path / "T1", stored)
    _, written = _derive(tmp_path / "T1", tmp_path / "out")
    assert len(written) == 3
    for source, derived in zip(files, written):
        assert new_findings(source, derived, tmp_path) == []


# --- Modality LUT -------------------------------------------------------------------------------------------


def test_a_modality_lut_is_read_through_its_table() -> None:
    from pydicom.pixels import apply_modality_lut

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Modality LUT ignored" warning any more
        volume = read_image(MLUT)
    ds = pydicom.dcmread(MLUT)
    assert np.array_equal(volume.voxels[0], apply_modality_lut(ds.pixel_array, ds))
    assert volume.codec.lut is not None and volume.codec.lut.first == -2048
    assert np.array_equal(volume.to_stored(volume.voxels)[0], ds.pixel_array)  # the inverse is exact
    low, high = volume.bounds([0])
    assert float(low.min()) == volume.voxels.min() and float(high.max()) == 65535.0


def test_a_modality_lut_source_round_trip(tmp_path: Path) -> None:
    volume, written = _derive(MLUT, tmp_path / "out")
    again = read_image(tmp_path / "out")
    derived, source = pydicom.dcmread(written[0]), pydicom.dcmread(MLUT)
    assert derived.ModalityLUTSequence[0].LUTData == source.ModalityLUTSequence[0].LUTData
    assert derived.ModalityLUTSequence[0].LUTDescriptor == source.ModalityLUTSequence[0].LUTDescriptor
    table = volume.codec.lut.table
    assert np.isin(again.voxels, table).all()  # every written value is a table entry
    assert not np.array_equal(again.voxels, volume.voxels)
    assert np.abs(again.voxels - volume.voxels).max() > 16  # moved by more than one table step


def test_a_non_monotonic_lut_writes_the_nearest_entry(tmp_path: Path) -> None:
    stored = np.random.default_rng(1).integers(0, 8, (2, 6, 5))
    files = make_series(tmp_path / "s", stored)
    table = np.array([50, 10, 30, 0, 70, 20, 60, 40], dtype=np.uint16)  # 8 entries, stored 0..7
    for file in files:
        ds = pydicom.dcmread(file)
        item = pydicom.Dataset()
        item.LUTDescriptor = [8, 0, 16]
        item.ModalityLUTType = "US"
        item.add_new(0x00283006, "US", table.tolist())  # LUTData
        ds.ModalityLUTSequence = [item]
        for keyword in ("RescaleSlope", "RescaleIntercept", "RescaleType"):
            if keyword in ds:
                delattr(ds, keyword)
        ds.save_as(file)
    volume = read_image(tmp_path / "s")
    assert set(np.unique(volume.voxels)) <= set(table.tolist())
    wanted = volume.voxels.copy()
    wanted[0, 0, 0], wanted[0, 0, 1] = 33.0, 66.0  # nearest entries 30 (stored 2) and 70 (stored 4); 66 > 65
    written = volume.quantize(wanted)
    assert written[0, 0, 0] == 30.0 and written[0, 0, 1] == 70.0
    write_like(volume, wanted, tmp_path / "out")
    assert np.array_equal(read_image(tmp_path / "out").voxels, written)


def test_different_luts_in_one_series_are_an_error(tmp_path: Path) -> None:
    files = make_series(tmp_path / "s", np.zeros((2, 4, 4), dtype=np.int64))
    ds = pydicom.dcmread(files[1])
    item = pydicom.Dataset()
    item.LUTDescriptor, item.ModalityLUTType = [4, 0, 16], "US"
    item.add_new(0x00283006, "US", [0, 1, 2, 3])
    ds.ModalityLUTSequence = [item]
    ds.save_as(files[1])
    with pytest.raises(InputError, match=r"Modality LUT differs within the series"):
        read_image(tmp_path / "s")


# --- UID root -----------------------------------------------------------------------------------------------


def test_every_new_uid_is_under_the_uid_root(tmp_path: Path) -> None:
    root = "1.2.826.0.1.999999"
    volume, written = _derive(DATA_STORE / "eCT_Supplemental.dcm", tmp_path / "out", uid_root=root)
    derived = pydicom.dcmread(written[0])
    for uid in (derived.SOPInstanceUID, derived.SeriesInstanceUID, derived.file_meta.MediaStorageSOPInstanceUID):
        assert uid.startswith(root + ".") and len(uid) <= 64 and uid.is_valid
    assert derived.StudyInstanceUID == volume.frames[0].header.StudyInstanceUID  # not new: kept
    _, default = _derive(DATA_STORE / "eCT_Supplemental.dcm", tmp_path / "plain")
    assert pydicom.dcmread(default[0]).SOPInstanceUID.startswith("1.2.826.0.1.3680043.8.498.")


@pytest.mark.parametrize(
    ("root", "why"),
    [("1.2.x", "not a DICOM UID root"), ("1.02.3", "not a DICOM UID root"), ("1", "single component"),
     ("1." + "2" * 40, "characters long"), ("", "not a DICOM UID root")],
)
def test_a_bad_uid_root_is_refused(root: str, why: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=why):
        check_uid_root(root)
    with pytest.raises(InputError, match=why):
        _derive(DATA_STORE / "eCT_Supplemental.dcm", tmp_path / "out", uid_root=root)
    assert not (tmp_path / "out").exists()
    assert check_uid_root("1.2.840.99999.") == "1.2.840.99999"


def test_encrypt_study_takes_the_uid_root_from_the_flag_or_the_config(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medenc.cli import app
    from tests.support_cluster import make_env

    env = make_env(tmp_path / "env")
    row = env["rows"][0]
    common = ["--model", env["model"], "--key", env["key"], "--label", row["label"], "--device", "cpu",
              "--mask", env["data"] / row["mask"]]
    study = env["data"] / row["image"]
    config = tmp_path / "site.yaml"
    config.write_text("uid_root: 1.2.826.0.1.777\n")
    runner = CliRunner()
    for extra, root in ((["--uid-root", "1.2.840.99999"], "1.2.840.99999"), (["--config", config], "1.2.826.0.1.777")):
        out = tmp_path / f"out-{root}"
        result = runner.invoke(app, [str(a) for a in ["encrypt-study", study, *common, "--out", out, *extra]])
        assert result.exit_code == 0, result.output
        report = json.loads((out / "report.json").read_text())
        assert report["output"]["series_uid"].startswith(root + ".")
        for file in sorted((out / "series").iterdir()):
            assert pydicom.dcmread(file).SOPInstanceUID.startswith(root + ".")
    bad = runner.invoke(app, [str(a) for a in ["encrypt-study", study, *common, "--out", tmp_path / "bad",
                                                "--uid-root", "1.2.x"]])
    assert bad.exit_code == 2 and "not a DICOM UID root" in bad.output
    assert not (tmp_path / "bad").exists()
