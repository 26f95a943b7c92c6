"""Writers for the synthetic data set: one axial MR DICOM series per case, and NIfTI volumes.

The DICOM files are well-formed MR Image Storage instances (16-bit, 12 bits stored, uncompressed)
whose geometry matches the NIfTI affine; patient, study and series attributes are synthetic and say
so, and every UID is derived deterministically from the data set's parameters and the case.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
_LPS = np.diag([-1.0, -1.0, 1.0])


def _uid(dataset_key: str, case_id: str, *parts: object, root: str | None = None) -> str:
    from medenc.io.uids import new_uid

    return new_uid(root, ["medenc-synth", dataset_key, case_id, *map(str, parts)])


def _ds(value: float) -> str:
    """A decimal string (DS) of at most 16 characters."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text if text not in ("-0", "") else "0"


def write_series(
    folder: str | Path,
    volume: np.ndarray,
    affine: np.ndarray,
    *,
    case_id: str,
    number: int,
    dataset_key: str,
    uid_root: str | None = None,
) -> list[Path]:
    """Write ``volume`` as an axial MR series, one file per slice (``IM0001.dcm`` = most inferior).

    Args:
        folder: created; must not exist.
        volume: uint16 (W, H, S) in NIfTI axis order (column, row, slice).
        affine: voxel -> RAS affine, axis-aligned with negative x/y steps (as made by ``medenc.synth.generate``).
        case_id: patient and accession identifier.
        number: case number (used for the synthetic study time).
        dataset_key: identifies the data set's parameters; with ``case_id`` it seeds the UIDs.
        uid_root: the organisation's UID root of the UIDs (default: pydicom's; :mod:`medenc.io.uids`).

    Returns:
        The written files, in slice order.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    if volume.dtype != np.uint16 or volume.ndim != 3:
        raise ValueError(f"expected a 3-D uint16 volume, got {volume.dtype} {volume.shape}")
    lps = _LPS @ affine[:3, :3]
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    row_dir, col_dir = lps[:, 0] / spacing[0], lps[:, 1] / spacing[1]
    folder = Path(folder)
    folder.mkdir(parents=True)

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20200101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = f"{8 + number % 10:02d}{number % 60:02d}00"
    ds.AccessionNumber = case_id[-16:]
    ds.Modality = "MR"
    ds.Manufacturer = "medenc (synthetic)"
    ds.InstitutionName = "SYNTHETIC"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "SYNTHETIC brain MRI (medenc synth)"
    ds.SeriesDescription = "SYNTHETIC T1 post-contrast axial - not patient data"
    ds.ManufacturerModelName = "medenc synth"
    ds.PatientName = f"SYNTHETIC^{case_id}"
    ds.PatientID = case_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.PatientIdentityRemoved = "YES"
    ds.BodyPartExamined = "HEAD"
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = "SP"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "3D"
    ds.SliceThickness = _ds(spacing[2])
    ds.SpacingBetweenSlices = _ds(spacing[2])
    ds.RepetitionTime = "8.1"
    ds.EchoTime = "3.7"
    ds.EchoTrainLength = 1
    ds.MagneticFieldStrength = "3"
    ds.ContrastBolusAgent = "gadolinium (simulated)"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = _uid(dataset_key, case_id, "study", root=uid_root)
    ds.SeriesInstanceUID = _uid(dataset_key, case_id, "series", root=uid_root)
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.FrameOfReferenceUID = _uid(dataset_key, case_id, "frame", root=uid_root)
    ds.PositionReferenceIndicator = ""
    ds.ImageOrientationPatient = [_ds(v) for v in (*row_dir, *col_dir)]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(volume.shape[1]), int(volume.shape[0])
    ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # between rows, between columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.BurnedInAnnotation = "NO"
    high = float(np.percentile(volume, 99.5))
    ds.WindowCenter, ds.WindowWidth = _ds(high / 2), _ds(max(high, 1.0))

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta

    paths = []
    for k in range(volume.shape[2]):
        position = lps @ np.array([0.0, 0.0, k]) + _LPS @ affine[:3, 3]
        uid = _uid(dataset_key, case_id, "image", k, root=uid_root)
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID = uid
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.SliceLocation = _ds(position[2])
        ds.PixelData = np.ascontiguousarray(volume[:, :, k].T).astype("<u2").tobytes()
        path = folder / f"IM{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_nifti(path: str | Path, array: np.ndarray, affine: np.ndarray) -> Path:
    """Save ``array`` (NIfTI axis order) with ``affine`` as qform and sform (scanner space, mm)."""
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = b"medenc synth: SYNTHETIC, not patient data"
    nib.save(img, str(path))
    return Path(path)
