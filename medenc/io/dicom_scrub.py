"""What a derived instance never copies from its source: every element that can carry pixels or free data.

Removed at every nesting level (items of sequences too), before the new pixel data is set:

- **private elements** (odd groups), unless their tag is in ``keep_private`` (their private creator
  element is then kept with them): vendors store anything there, and the audit found an original
  slice byte for byte in one;
- **overlays** (groups 6000-601E): OverlayData holds a bitmap of the image, the other elements
  describe it;
- **curves** (retired groups 5000-501E: CurveData, AudioSampleData);
- **waveforms** (group 5400: WaveformSequence, WaveformData);
- **encapsulated documents** (group 0042: EncapsulatedDocument, a PDF or CDA of anything);
- **IconImageSequence** (a thumbnail of the original pixels);
- **any other element with a binary value** (VR OB, OW, OF, OD, OL, OV, UN): FloatPixelData,
  DataSetTrailingPadding, pixel data inside sequence items, unknown elements; except the lookup
  tables listed in :data:`KEPT_BINARY`, which map values to display and depend on no pixel.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

#: why an element is removed, by category (the documentation of each category)
DROPPED: dict[str, str] = {
    "private": "private elements (odd groups), unless in keep_private (their private creator is kept with them)",
    "overlay": "overlay groups 6000-601E (OverlayData and the elements describing it)",
    "curve": "retired curve groups 5000-501E (CurveData, AudioSampleData)",
    "waveform": "waveform group 5400 (WaveformSequence, WaveformData)",
    "document": "encapsulated document group 0042 (EncapsulatedDocument and its description)",
    "icon": "IconImageSequence (0088,0200): a thumbnail of the original pixels",
    "binary": "any other element with a binary VR (OB, OW, OF, OD, OL, OV, UN), e.g. FloatPixelData, "
    "DataSetTrailingPadding, pixel data in sequence items; lookup tables excepted",
}
BINARY_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN", "OB or OW", "US or OW", "US or SS or OW"})
#: binary elements kept: lookup tables (value -> display), not image content
KEPT_BINARY = frozenset(
    {
        0x00283006,  # LUTData (Modality / VOI LUT)
        0x00281201,  # RedPaletteColorLookupTableData
        0x00281202,  # GreenPaletteColorLookupTableData
        0x00281203,  # BluePaletteColorLookupTableData
        0x00281204,  # AlphaPaletteColorLookupTableData
        0x00281221,  # SegmentedRedPaletteColorLookupTableData
        0x00281222,  # SegmentedGreenPaletteColorLookupTableData
        0x00281223,  # SegmentedBluePaletteColorLookupTableData
    }
)
ICON_IMAGE_SEQUENCE = 0x00880200
PIXEL_DATA = 0x7FE00010


def parse_tag(text: str | int | tuple[int, int]) -> int:
    """A tag from ``"0029,1010"`` / ``"(0029,1010)"`` / ``"00291010"``, ``(0x0029, 0x1010)`` or an int.

    Raises:
        ValueError: not a tag.
    """
    if isinstance(text, tuple):
        group, element = (int(v) for v in text)
        if not (0 <= group <= 0xFFFF and 0 <= element <= 0xFFFF):
            raise ValueError(f"not a DICOM tag: {text!r}")
        return (group << 16) | element
    if isinstance(text, int):
        if not 0 <= text <= 0xFFFFFFFF:
            raise ValueError(f"not a DICOM tag: {text!r}")
        return text
    digits = text.strip().strip("()").replace(",", "").replace(" ", "")
    try:
        value = int(digits, 16) if len(digits) == 8 else -1
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"not a DICOM tag: {text!r} (expected gggg,eeee in hex)")
    return value


def keep_set(keep_private: Iterable[str | int | tuple[int, int]] | None) -> frozenset[int]:
    """The private tags to keep, checked: each must be a private data element or private creator.

    Raises:
        ValueError: a tag that is not private (public elements cannot be kept by this list).
    """
    tags = set()
    for item in keep_private or ():
        tag = parse_tag(item)
        if not (tag >> 16) % 2 or (tag >> 16) in (1, 3, 5, 7, 0xFFFF):
            raise ValueError(f"keep_private lists {tag >> 16:04X},{tag & 0xFFFF:04X}, which is not a private tag")
        tags.add(tag)
    return frozenset(tags)


def drop_reason(tag: int, vr: str, keep: frozenset[int] = frozenset()) -> str | None:
    """The :data:`DROPPED` category an element falls in, or ``None`` if it is kept.

    Args:
        tag: the element's tag (an int).
        vr: its value representation.
        keep: private tags to keep (from :func:`keep_set`); a private creator is kept when one of its
            elements is (see :func:`scrub`).
    """
    group, element = tag >> 16, tag & 0xFFFF
    if group % 2:
        return None if tag in keep else "private"
    if 0x6000 <= group <= 0x601E:
        return "overlay"
    if 0x5000 <= group <= 0x501E:
        return "curve"
    if group == 0x5400:
        return "waveform"
    if group == 0x0042:
        return "document"
    if tag == ICON_IMAGE_SEQUENCE:
        return "icon"
    if vr in BINARY_VRS and tag not in KEPT_BINARY and group != 0x0002 and element != 0:
        return "binary"
    return None


def _creators(keep: frozenset[int]) -> frozenset[int]:
    """Private creator tags (gggg,00xx) of the kept private data elements (gggg,xxyy)."""
    return frozenset((t & 0xFFFF0000) | ((t & 0xFF00) >> 8) for t in keep if (t & 0xFFFF) >= 0x1000)


def scrub(ds: Any, keep_private: Sequence[str | int | tuple[int, int]] | None = None) -> dict[str, int]:
    """Remove from ``ds`` (in place, every nesting level) what :func:`drop_reason` drops.

    The top-level PixelData is kept (the writer replaces it); PixelData in sequence items is dropped.

    Returns:
        How many elements were removed per category.
    """
    keep = keep_set(keep_private)
    keep = keep | _creators(keep)
    counts: dict[str, int] = {}
    _scrub(ds, keep, counts, top=True)
    return counts


def _scrub(ds: Any, keep: frozenset[int], counts: dict[str, int], *, top: bool) -> None:
    for tag in list(ds.keys()):
        if top and int(tag) == PIXEL_DATA:
            continue
        elem = ds[tag]
        reason = drop_reason(int(tag), str(elem.VR), keep)
        if reason is not None:
            del ds[tag]
            counts[reason] = counts.get(reason, 0) + 1
        elif elem.VR == "SQ":
            for item in elem.value or []:
                _scrub(item, keep, counts, top=False)
