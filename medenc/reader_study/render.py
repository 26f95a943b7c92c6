"""Turn a slice into what a reader sees: 16-bit stored values, a display window, PNG and blinded DICOM.

Every image, whatever its version, goes through the same path (per-image linear 16-bit scaling, per-image
percentile window), so the files' metadata cannot tell the versions apart.
"""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass

import numpy as np

BLINDED_PATIENT = "READER-STUDY"
WINDOW_PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class StoredImage:
    """A slice as unsigned 16-bit stored values plus the linear map back to its units.

    ``value = stored * slope + intercept``; ``center``/``width`` is the default display window (units).
    """

    stored: np.ndarray  # (H, W) uint16
    slope: float
    intercept: float
    center: float
    width: float

    @property
    def values(self) -> np.ndarray:
        """The slice in its own units, as represented by the stored values.

        Shape:
            ``(H, W)`` float64.
        """
        return self.stored.astype(np.float64) * self.slope + self.intercept


def _ds(value: float) -> float:
    """Round ``value`` to what a DICOM DS (16 characters) holds, so every file agrees with the DICOM."""
    from pydicom.valuerep import format_number_as_ds

    return float(format_number_as_ds(float(value)))


def to_stored(image: np.ndarray) -> StoredImage:
    """Scale a slice linearly onto 0..65535 and compute its default display window.

    Args:
        image: the slice in its own units.

    Returns:
        The stored image; the window spans the 0.5th-99.5th percentiles (the full range if flat).

    Shape:
        ``image``: ``(H, W)`` float; ``stored``: ``(H, W)`` uint16.
    """
    image = np.asarray(image, dtype=np.float64)
    lo, hi = float(image.min()), float(image.max())
    intercept = _ds(lo)
    slope = _ds((hi - intercept) / 65535.0) if hi > intercept else 1.0
    stored = np.clip(np.rint((image - intercept) / slope), 0, 65535).astype(np.uint16)
    w_lo, w_hi = (float(v) for v in np.percentile(image, WINDOW_PERCENTILES))
    if w_hi <= w_lo:
        w_lo, w_hi = lo, hi
    if w_hi <= w_lo:
        w_lo, w_hi = lo - 0.5, lo + 0.5
    return StoredImage(stored, slope, intercept, _ds((w_lo + w_hi) / 2), _ds(w_hi - w_lo))


def display_uint8(image: StoredImage) -> np.ndarray:
    """Apply the default window: linear, clipped, 8-bit, full resolution.

    Shape:
        ``(H, W)`` uint8.
    """
    lo = image.center - image.width / 2
    scaled = (image.values - lo) / image.width
    return np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
    """Encode an 8-bit grey ``(H, W)`` or RGB ``(H, W, 3)`` array as PNG with no metadata chunks."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


def packed_png_bytes(image: StoredImage) -> bytes:
    """Lossless PNG carrying the 16-bit stored values: high byte in red, low byte in green.

    Browsers decode it to exact 8-bit channels, so the viewer recovers the stored values and can window
    them at full depth.
    """
    rgb = np.zeros((*image.stored.shape, 3), dtype=np.uint8)
    rgb[..., 0] = image.stored >> 8
    rgb[..., 1] = image.stored & 0xFF
    return png_bytes(rgb)


def random_uid(rng: np.random.Generator) -> str:
    """A DICOM UID under the ``2.25`` (UUID) root drawn from ``rng`` (deterministic for a seed)."""
    return f"2.25.{uuid.UUID(bytes=rng.bytes(16), version=4).int}"


def dicom_bytes(
    image: StoredImage,
    *,
    code: str,
    instance_number: int,
    series_number: int,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    description: str,
    pixel_spacing: tuple[float, float] | None = None,
) -> bytes:
    """A blinded Secondary Capture DICOM file of one image.

    Patient and study identifiers are replaced (``READER-STUDY``), dates are empty, all UIDs are fresh;
    the only image-specific text is the blinded ``code`` (in ImageComments).

    Args:
        image: the stored image.
        code: the blinded code of the image.
        instance_number: position of the image in the packet (1-based).
        series_number: the session number.
        study_uid: Study Instance UID shared by the packet.
        series_uid: Series Instance UID shared by the packet.
        sop_uid: this image's SOP Instance UID.
        description: study/series description (must reveal nothing).
        pixel_spacing: row and column spacing in mm, if known.

    Returns:
        The DICOM file (Part 10, explicit VR little endian).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.StudyTime = ds.AccessionNumber = ds.ReferringPhysicianName = ""
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.StudyDescription = ds.SeriesDescription = description
    ds.PatientName = BLINDED_PATIENT
    ds.PatientID = BLINDED_PATIENT
    ds.PatientBirthDate = ds.PatientSex = ""
    ds.PatientIdentityRemoved = "YES"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = ""
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.PatientOrientation = ""
    ds.ImageComments = code
    ds.BurnedInAnnotation = "NO"
    if pixel_spacing is not None:
        ds.PixelSpacing = [_ds(pixel_spacing[0]), _ds(pixel_spacing[1])]
    ds.set_pixel_data(image.stored, "MONOCHROME2", 16, generate_instance_uid=False)
    ds.RescaleIntercept = image.intercept
    ds.RescaleSlope = image.slope
    ds.RescaleType = "US"
    ds.WindowCenter = image.center
    ds.WindowWidth = image.width
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
