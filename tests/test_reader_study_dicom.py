"""The packets' DICOM: valid for the DICOM validator (``dciodvfy``), a File-set (DICOMDIR) that media readers
walk, one Secondary Capture series per image, and nothing that records when or in what order it was made.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.fileset import FileSet

from medenc.reader_study import build_study
from tests.helpers import dciodvfy
from tests.test_reader_study_build import CLASSES, read_key, write_dataset

#: what dciodvfy says of every packet image, and why it is right: the Image Plane attributes are added to
#: the Secondary Capture (a Standard Extended SOP Class) so that 3D-aware viewers orient the image
EXPECTED_WARNINGS = {
    "Warning - </ImagePositionPatient(0020,0032)> - Attribute is not present in standard DICOM IOD",
    "Warning - </ImageOrientationPatient(0020,0037)> - Attribute is not present in standard DICOM IOD",
}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dicom")
    clean, enc = write_dataset(root / "data", [CLASSES[i % 3] for i in range(5)])
    build_study(clean, enc, root / "study", readers=["R1"], seed=1)
    return root / "study"


def packets(study: Path) -> list[Path]:
    return sorted(p for p in (study / "packets" / "R1").iterdir())


def test_validator_finds_no_error_in_packet_images_and_dicomdir(study):
    for packet in packets(study):
        images = sorted((packet / "dicom").rglob("IM*"))
        for path in images[:2]:
            findings = dciodvfy(path)
            assert [f for f in findings if f.startswith("Error")] == [], (path, findings)
            assert set(findings) == EXPECTED_WARNINGS, (path, findings)
        findings = dciodvfy(packet / "dicom" / "DICOMDIR")
        assert [f for f in findings if f.startswith("Error")] == [], findings


def test_dicomdir_lists_every_image_as_its_own_series(study):
    for packet in packets(study):
        file_set = FileSet(packet / "dicom" / "DICOMDIR")
        instances = list(file_set)
        pngs = sorted(p.stem for p in (packet / "png").iterdir())
        assert len(instances) == len(pngs) and len(list((packet / "dicom").rglob("IM*"))) == len(pngs)
        datasets = [instance.load() for instance in instances]
        assert sorted(ds.ImageComments for ds in datasets) == pngs
        assert len({ds.SeriesInstanceUID for ds in datasets}) == len(datasets)  # one series per image
        assert len({ds.StudyInstanceUID for ds in datasets}) == 1  # one study per packet
        numbers = sorted(int(ds.SeriesNumber) for ds in datasets)
        assert numbers == list(range(1, len(datasets) + 1))
        for ds in datasets:
            assert ds.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
            assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
            assert ds.ImageComments in ds.SeriesDescription and ds.BurnedInAnnotation == "NO"
            assert (ds.BitsAllocated, ds.BitsStored, ds.PhotometricInterpretation) == (16, 16, "MONOCHROME2")
            assert ds.ConversionType == "WSD" and ds.BodyPartExamined == "HEAD"
            assert ds.Modality == "OT" and list(ds.ImageType) == ["DERIVED", "SECONDARY", "OTHER"]


def test_reading_order_is_the_series_number(study):
    key = {r["code"]: int(r["position"]) for r in read_key(study) if r["session"] == "1"}
    file_set = FileSet(study / "packets" / "R1" / "session-1" / "dicom" / "DICOMDIR")
    for instance in file_set:
        ds = instance.load()
        assert int(ds.SeriesNumber) == key[ds.ImageComments]
        assert ds.SeriesDescription == f"Image {key[ds.ImageComments]} of 5 - {ds.ImageComments}"
    trials = {t["code"]: (int(t["position"]), t["changed"]) for t in read_key(study, "forced-choice.csv")}
    for instance in FileSet(study / "packets" / "R1" / "forced-choice" / "dicom" / "DICOMDIR"):
        ds = instance.load()
        code, side = ds.ImageComments.split("-")
        assert int(ds.SeriesNumber) == 2 * trials[code][0] - (side == "A")  # A then B, pair after pair


def test_no_creation_time_is_kept(study):
    for path in (study / "packets").rglob("IM*"):
        ds = pydicom.dcmread(path)
        keywords = {e.keyword for e in ds.iterall()}
        assert not keywords & {"InstanceCreationDate", "InstanceCreationTime", "ContentDate", "ContentTime",
                               "DateOfSecondaryCapture", "TimeOfSecondaryCapture", "ContributionDateTime"}
        assert (ds.StudyDate, ds.StudyTime) == ("20000101", "000000")
