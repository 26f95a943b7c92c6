"""Blinded DICOM for the readers' own viewers: highdicom Secondary Capture images and a DICOMDIR.

Each packet image is a Secondary Capture Image (built by :class:`highdicom.sc.SCImage`) of its own series,
with the pixels in radiological display order, Patient Orientation letters for 2D viewers and, as a
Standard Extended SOP Class, Image Orientation/Position (Patient) so that 3D-aware viewers (3D Slicer, OHIF,
ITK) orient it too. Nothing in a file names the case, the label or the version: patient and study are
``READER^STUDY`` with a fixed date, every UID is drawn from the study secret under ``2.25``, no creation
time is kept, the true slice position is replaced by a centred one. The packet's ``dicom/`` folder is a
DICOM File-set (``DICOMDIR``, written by :class:`pydicom.fileset.FileSet`) that media-aware viewers and PACS
import directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from medenc.reader_study.orientation import DisplayGeometry
from medenc.reader_study.render import StoredImage, ds_round

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset

BLINDED_PATIENT_NAME = "READER^STUDY"
BLINDED_PATIENT_ID = "READER-STUDY"
#: a fixed study date and time (a DICOMDIR needs them; a real date would only add information)
BLINDED_DATE, BLINDED_TIME = "20000101", "000000"
MANUFACTURER = "Reader study packet"
DEIDENTIFICATION = "Reader study blinding: IDs replaced, dates fixed, new UIDs"  # LO: 64 characters at most
#: brain MRI: an unpaired body part (so no Laterality)
BODY_PART = "HEAD"
FILE_SET_ID = "READERSTUDY"
#: elements with the time an object was made, which would tell the order in which images were written
_TIMESTAMPS = ("InstanceCreationDate", "InstanceCreationTime", "ContentDate", "ContentTime",
               "DateOfSecondaryCapture", "TimeOfSecondaryCapture")


@dataclass(frozen=True)
class DicomIdentity:
    """The identifiers of one packet image: UIDs, numbers, descriptions (none may reveal case or version)."""

    study_uid: str
    series_uid: str
    sop_uid: str
    series_number: int
    study_id: str
    study_description: str
    series_description: str
    code: str


def sc_image(image: StoredImage, geometry: DisplayGeometry, identity: DicomIdentity) -> Dataset:
    """One blinded Secondary Capture image (16-bit, rescaled to the slice's units, default window).

    Args:
        image: the stored values, already in screen order (rows top to bottom, columns left to right).
        geometry: the display geometry the pixels follow (orientation and pixel spacing).
        identity: UIDs, numbers and descriptions.

    Returns:
        The dataset, with its file meta information (Explicit VR Little Endian).

    Shape:
        image.stored: ``(rows, columns)`` uint16.
    """
    from highdicom.sc import SCImage
    from pydicom.uid import ExplicitVRLittleEndian

    ds = SCImage(
        pixel_array=image.stored,
        photometric_interpretation="MONOCHROME2",
        bits_allocated=16,
        coordinate_system="PATIENT",
        study_instance_uid=identity.study_uid,
        series_instance_uid=identity.series_uid,
        series_number=identity.series_number,
        sop_instance_uid=identity.sop_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_id=BLINDED_PATIENT_ID,
        patient_name=BLINDED_PATIENT_NAME,
        patient_birth_date="",
        patient_sex="",
        accession_number="",
        study_id=identity.study_id,
        study_date=BLINDED_DATE,
        study_time=BLINDED_TIME,
        referring_physician_name="",
        pixel_spacing=(ds_round(geometry.spacing[0]), ds_round(geometry.spacing[1])),
        patient_orientation=("L", "P"),  # replaced below: highdicom accepts single letters only
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    for keyword in _TIMESTAMPS:
        if keyword in ds:
            delattr(ds, keyword)
    for item in ds.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            del item.ContributionDateTime
    ds.PatientOrientation = list(geometry.patient_orientation)
    ds.ImageOrientationPatient = [ds_round(v) for v in (*geometry.row_cosines, *geometry.col_cosines)]
    ds.ImagePositionPatient = [ds_round(v) for v in geometry.centred_position(image.stored.shape)]
    ds.ConversionType = "WSD"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = DEIDENTIFICATION
    ds.BodyPartExamined = BODY_PART
    ds.StudyDescription = identity.study_description
    ds.SeriesDescription = identity.series_description
    ds.ImageComments = identity.code
    ds.BurnedInAnnotation = "NO"
    ds.RescaleIntercept = image.intercept
    ds.RescaleSlope = image.slope
    ds.RescaleType = "US"
    ds.WindowCenter = image.center
    ds.WindowWidth = image.width
    return ds


def write_file_set(folder: Path, datasets: list[Dataset], uid: str) -> Path:
    """Write ``datasets`` as a DICOM File-set into ``folder`` (``DICOMDIR`` plus ``PT*/ST*/SE*/IM*`` files).

    Args:
        folder: created; must not exist.
        datasets: the images, in the order their series folders are numbered.
        uid: the File-set UID.

    Returns:
        The ``DICOMDIR`` path.
    """
    from pydicom.fileset import FileSet

    file_set = FileSet()
    file_set.ID = FILE_SET_ID
    file_set.UID = uid
    for ds in datasets:
        file_set.add(ds)
    folder.mkdir(parents=True)
    file_set.write(folder)
    return folder / "DICOMDIR"
