"""What a derived *enhanced* (multi-frame functional group) image changes besides the common derived changes.

Enhanced MR / CT / PET ... images (PS3.3 C.7.6.16, C.8.13, C.8.15) describe a derived image otherwise
than classic single-frame images do:

- ImageType and FrameType: value 1 becomes ``DERIVED``; value 2 stays as it was (the enhanced IODs
  allow only ``PRIMARY`` there), values 3+ stay;
- the source reference goes into each frame's **Derivation Image** functional group
  (``PerFrameFunctionalGroupsSequence[i].DerivationImageSequence``: the derivation description, a
  derivation code and a SourceImageSequence item naming the source instance and frame), and the
  source instance is listed in the top-level ``SourceImageEvidenceSequence``; there is no top-level
  SourceImageSequence or DerivationDescription in these IODs;
- attributes the IOD conditions on ImageType value 1 being ORIGINAL or MIXED and the validator
  (dicom3tools' ``dciodvfy``) refuses otherwise are removed (:data:`ORIGINAL_ONLY`): for Enhanced MR,
  the MR Pulse Sequence module and the bulk motion technique. The per-frame acquisition groups stay;
- a source without per-frame functional groups (pydicom-data's ``emri_small.dcm``, itself not
  valid) has no place for a derivation group: its derivation description goes into ImageComments
  and no source reference is written (adding functional groups would invent frame attributes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: SOP classes written as enhanced images even without functional groups in the source
ENHANCED_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
        "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image Storage
        "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image Storage
        "1.2.840.10008.5.1.4.1.1.4.3",  # Enhanced MR Color Image Storage
        "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR Image Storage
        "1.2.840.10008.5.1.4.1.1.128.1",  # Legacy Converted Enhanced PET Image Storage
        "1.2.840.10008.5.1.4.1.1.130",  # Enhanced PET Image Storage
    }
)
_ENHANCED_MR = ("1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.4.3")
#: per SOP class: top-level attributes required only in ORIGINAL or MIXED images, removed once DERIVED
ORIGINAL_ONLY: dict[str, tuple[str, ...]] = {
    uid: (
        # MR Pulse Sequence module (C.8.13.4): every attribute is 1C "ImageType value 1 ORIGINAL or MIXED"
        "PulseSequenceName",
        "MRAcquisitionType",
        "EchoPulseSequence",
        "MultipleSpinEcho",
        "MultiPlanarExcitation",
        "PhaseContrast",
        "TimeOfFlightContrast",
        "SteadyStatePulseSequence",
        "EchoPlanarPulseSequence",
        "SaturationRecovery",
        "SpectrallySelectedSuppression",
        "OversamplingPhase",
        "GeometryOfKSpaceTraversal",
        "RectilinearPhaseEncodeReordering",
        "SegmentedKSpaceTraversal",
        "CoverageOfKSpace",
        "NumberOfKSpaceTrajectories",
        # Bulk Motion Synchronization module (C.7.6.18.3)
        "BulkMotionCompensationTechnique",
        "BulkMotionSignalSource",
    )
    for uid in _ENHANCED_MR
}
#: the derivation code of every medenc derived frame: the pixel values are the source's plus a
#: perturbation (DCM 113042 of CID 7203 "Image Derivation")
DERIVATION_CODE = ("113042", "DCM", "Pixel by pixel addition")


def is_enhanced(header: Any) -> bool:
    """Whether a source is an enhanced (functional group) image: by its SOP class or its functional groups."""
    return (
        str(header.get("SOPClassUID", "")) in ENHANCED_SOP_CLASSES
        or "PerFrameFunctionalGroupsSequence" in header
        or "SharedFunctionalGroupsSequence" in header
    )


def _code(value: tuple[str, str, str]) -> Any:
    from pydicom.dataset import Dataset

    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value
    return code


def _derived_type(values: Any, vm: int) -> list[str]:
    """``DERIVED`` as value 1; value 2 kept (``PRIMARY`` if there was none); values 3+ kept."""
    old = [str(v) for v in values] if vm > 1 else ([str(values)] if values else [])
    return ["DERIVED", old[1] if len(old) > 1 and old[1] else "PRIMARY", *old[2:]]


def _set_frame_types(groups: Any) -> None:
    for item in groups or []:
        for elem in item:
            if elem.VR == "SQ" and elem.keyword.endswith("FrameTypeSequence"):
                for inner in elem.value:
                    if "FrameType" in inner:
                        inner.FrameType = _derived_type(inner.FrameType, inner["FrameType"].VM)


def _derivation_item(header: Any, frame: int, description: str, purpose: tuple[str, str, str]) -> Any:
    from pydicom.dataset import Dataset

    source = Dataset()
    source.ReferencedSOPClassUID = header.SOPClassUID
    source.ReferencedSOPInstanceUID = header.SOPInstanceUID
    source.ReferencedFrameNumber = frame + 1
    source.PurposeOfReferenceCodeSequence = [_code(purpose)]
    item = Dataset()
    item.DerivationDescription = description
    item.DerivationCodeSequence = [_code(DERIVATION_CODE)]
    item.SourceImageSequence = [source]
    return item


def _evidence(header: Any) -> Any:
    """A SourceImageEvidenceSequence item (Hierarchical SOP Instance Reference) naming the source instance."""
    from pydicom.dataset import Dataset

    instance = Dataset()
    instance.ReferencedSOPClassUID = header.SOPClassUID
    instance.ReferencedSOPInstanceUID = header.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = header.SeriesInstanceUID
    series.ReferencedSOPSequence = [instance]
    study = Dataset()
    study.StudyInstanceUID = header.StudyInstanceUID
    study.ReferencedSeriesSequence = [series]
    return study


def derive_enhanced(
    ds: Any, header: Any, frames: Sequence[int], description: str, purpose: tuple[str, str, str]
) -> list[str]:
    """Mark ``ds`` (a copy of the enhanced ``header``, frames already cut) as a derived enhanced image, in place.

    Args:
        ds: the derived dataset; its PerFrameFunctionalGroupsSequence holds the written frames in order.
        header: the source dataset (not modified).
        frames: 0-based source frame indices written, in the order of ``ds``'s frames.
        description: the DerivationDescription text.
        purpose: the source reference's purpose code (value, scheme, meaning).

    Returns:
        The keywords removed because the IOD allows them only in ORIGINAL or MIXED images.
    """
    ds.ImageType = _derived_type(ds.get("ImageType"), ds["ImageType"].VM if "ImageType" in ds else 0)
    _set_frame_types(ds.get("SharedFunctionalGroupsSequence"))
    _set_frame_types(ds.get("PerFrameFunctionalGroupsSequence"))
    for keyword in ("SourceImageSequence", "DerivationDescription"):  # not in the enhanced IODs' top level
        if keyword in ds:
            delattr(ds, keyword)
    removed = [k for k in ORIGINAL_ONLY.get(str(header.get("SOPClassUID", "")), ()) if k in ds]
    for keyword in removed:
        delattr(ds, keyword)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) == len(frames):
        for item, frame in zip(per_frame, frames):
            item.DerivationImageSequence = [_derivation_item(header, frame, description, purpose)]
        ds.SourceImageEvidenceSequence = [_evidence(header)]
    else:
        old = str(ds.get("ImageComments", "") or "").strip()
        ds.ImageComments = f"{old} | {description}" if old else description
        if "SourceImageEvidenceSequence" in ds:  # it would name the source's own sources, not this one
            del ds.SourceImageEvidenceSequence
    return removed
