"""The blinding audit: no channel of a packet other than the pixels tells the original from the encrypted image.

Two studies are built from the same secret, the second with the clean and encrypted manifests swapped: an
image that is "original" in one is "encrypted" in the other. If any channel (file names, PNG chunks, DICOM
UIDs and other elements, windows, sizes, times, order, the HTML) depended on the version, the two studies
would differ there. Each test below checks one row of the audit table in ``docs/reader-study.md``; the
last one scans every file for case ids, labels, paths and words that name a version.
"""

from __future__ import annotations

import functools
import json
import re
import struct
from pathlib import Path

import pydicom
import pytest

from medenc.reader_study import build_study
from tests.test_reader_study_build import (
    CLASSES,
    FORBIDDEN_WORDS,
    read_key,
    study_secret,
    tree_digest,
    write_dataset,
)
from tests.test_reader_study_build import packet_dicoms as read_packet_dicoms

#: DICOM elements that carry the image's slot (position, code, UIDs), the same whichever version fills it
SLOT_ELEMENTS = frozenset({"SOPInstanceUID", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription",
                           "ImageComments", "PixelData"})
UID_ROOT = re.compile(r"^2\.25\.\d{39}$")
packet_dicoms = functools.cache(read_packet_dicoms)


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(study, the same study with the versions swapped, its input folder)."""
    root = tmp_path_factory.mktemp("blind")
    clean, enc = write_dataset(root / "data", [CLASSES[i % 3] for i in range(8)])
    build_study(clean, enc, root / "study", readers=["R1", "R2"], seed=4)
    build_study(enc, clean, root / "swapped", readers=["R1", "R2"], seed=4, secret=study_secret(root / "study"))
    return root / "study", root / "swapped", root / "data"


def packet_files(study: Path) -> list[Path]:
    return sorted(p for p in (study / "packets").rglob("*") if p.is_file())


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk of a PNG file."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        chunks.append((data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return chunks


def header(ds: pydicom.Dataset, leave_out: set[str] = frozenset()) -> dict[str, str]:
    """Every element but the pixel data (and ``leave_out``), meta information included, as text."""
    out = {f"meta:{e.keyword}": str(e.value) for e in ds.file_meta if e.keyword not in leave_out}
    out.update({e.keyword or str(e.tag): str(e.value) for e in ds.iterall()
                if e.keyword not in leave_out | {"PixelData"}})
    return out


def pairs_of_versions(study: Path) -> list[tuple[Path, Path]]:
    """For each forced-choice pair: its A and B PNG files (one of them original, the other encrypted)."""
    out = []
    for trial in read_key(study, "forced-choice.csv"):
        png = study / "packets" / trial["reader"] / "forced-choice" / "png"
        out.append((png / f"{trial['code']}-A.png", png / f"{trial['code']}-B.png"))
    return out


def test_swapping_the_versions_changes_only_pixels(studies):
    study, swapped, _ = studies
    files = packet_files(study)
    assert [p.relative_to(study) for p in files] == [p.relative_to(swapped) for p in packet_files(swapped)]
    changed = {name for name, digest in tree_digest(study / "packets").items()
               if tree_digest(swapped / "packets")[name] != digest}
    # the diagnostic sessions and both sides of the pairs swap their pixels; nothing else changes
    assert changed and all(re.search(r"(/png/|/dicom/PT|index\.html$)", name) for name in changed)
    assert [(r["code"], r["case_id"], r["position"]) for r in read_key(study)] == \
        [(r["code"], r["case_id"], r["position"]) for r in read_key(swapped)]


def test_channel_file_names(studies):
    study, _, _ = studies
    for path in packet_files(study):
        name = path.relative_to(study / "packets").as_posix()
        # the reader, the session, a code (+ side), or the DICOM File-set's own numbering
        assert re.fullmatch(r"R[12]/(session-[12]|forced-choice)/(index\.html|README\.txt|answers\.csv|"
                            r"png/[CDFGHJKMNPQRTVWXYZ2345679]{6}(-[AB])?\.png|dicom/DICOMDIR|"
                            r"dicom/PT000000/ST000000/SE\d{6}/IM000000)", name), name


def test_channel_png_chunks(studies):
    study, swapped, _ = studies
    for path in packet_files(study):
        if path.suffix == ".png":
            chunks = png_chunks(path.read_bytes())
            kinds = [kind for kind, _ in chunks]
            assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and set(kinds[1:-1]) == {b"IDAT"}
            other = png_chunks((swapped / path.relative_to(study)).read_bytes())
            assert [c for c in chunks if c[0] != b"IDAT"] == [c for c in other if c[0] != b"IDAT"]
            assert [len(d) for k, d in chunks] == [len(d) for k, d in other]


def test_channel_dicom_uids_and_roots(studies):
    study, swapped, _ = studies
    for packet in (study / "packets").glob("*/*"):
        for code, ds in packet_dicoms(packet).items():
            uids = [e for e in ds.iterall() if e.VR == "UI" and e.keyword not in ("SOPClassUID",)]
            uids += [e for e in ds.file_meta if e.VR == "UI" and e.keyword in ("MediaStorageSOPInstanceUID",)]
            assert uids and all(UID_ROOT.match(str(e.value)) for e in uids), code  # one root, one length
            twin = packet_dicoms(swapped / packet.relative_to(study))[code]
            assert [str(e.value) for e in uids] == [str(twin[e.tag].value) if e.tag in twin else
                                                    str(twin.file_meta[e.tag].value) for e in uids]
            assert str(ds.file_meta.ImplementationClassUID) == str(twin.file_meta.ImplementationClassUID)


def test_channel_dicom_descriptions_and_every_other_element(studies):
    """ImageType, DerivationDescription, SeriesDescription and all the rest: one value whatever the version."""
    study, swapped, _ = studies
    for packet in (study / "packets").glob("*/*"):
        mine = packet_dicoms(packet)
        theirs = packet_dicoms(swapped / packet.relative_to(study))
        for code, ds in mine.items():
            assert header(ds) == header(theirs[code])
            assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "OTHER"] and "DerivationDescription" not in ds
    # within a forced-choice pair the two images differ in their slot only
    for trial in read_key(study, "forced-choice.csv"):
        dicoms = packet_dicoms(study / "packets" / trial["reader"] / "forced-choice")
        a, b = dicoms[trial["code"] + "-A"], dicoms[trial["code"] + "-B"]
        slot = SLOT_ELEMENTS | {"MediaStorageSOPInstanceUID"}
        assert header(a, slot) == header(b, slot)
        assert a.SeriesDescription.replace("-A", "-B") == b.SeriesDescription


def test_channel_window_and_rescale_values(studies):
    study, _, _ = studies
    for trial in read_key(study, "forced-choice.csv"):
        dicoms = packet_dicoms(study / "packets" / trial["reader"] / "forced-choice")
        a, b = dicoms[trial["code"] + "-A"], dicoms[trial["code"] + "-B"]
        for keyword in ("WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept"):
            assert a[keyword].value == b[keyword].value
    html = (study / "packets" / "R1" / "forced-choice" / "index.html").read_text()
    data = json.loads(re.search(r'id="study-data">(.*?)</script>', html, re.S).group(1))
    for item in data["images"]:
        a, b = ({k: v for k, v in view.items() if k != "px"} for view in item["views"])
        assert a == b


def test_channel_file_sizes(studies):
    study, swapped, _ = studies
    for path in packet_files(study):
        assert path.stat().st_size == (swapped / path.relative_to(study)).stat().st_size, path
    for a, b in pairs_of_versions(study):
        assert a.stat().st_size == b.stat().st_size


def test_channel_modification_times(studies):
    study, _, _ = studies
    times = {p.stat().st_mtime_ns for p in (study / "packets").rglob("*")}
    assert len(times) == 1  # one time for every file and folder: the order of writing is not kept


def test_channel_order(studies):
    study, swapped, _ = studies
    for name in ("key.csv", "forced-choice.csv"):
        mine, theirs = read_key(study, name), read_key(swapped, name)
        assert [(r["code"], r["case_id"], r["position"]) for r in mine] == \
            [(r["code"], r["case_id"], r["position"]) for r in theirs]
    sides = [t["changed"] for t in read_key(study, "forced-choice.csv")]
    assert sides == [t["changed"] for t in read_key(swapped, "forced-choice.csv")]
    assert set(sides) == {"A", "B"}  # a coin per pair, not a fixed side


def test_channel_html(studies):
    study, swapped, _ = studies
    for path in (study / "packets").rglob("index.html"):
        text, other = path.read_text(), (swapped / path.relative_to(study)).read_text()
        strip = re.compile(r'"px":"[A-Za-z0-9+/=]*"')
        assert strip.sub('"px":""', text) == strip.sub('"px":""', other)
        assert [len(m) for m in strip.findall(text)] == [len(m) for m in strip.findall(other)]
        assert not re.search(r"https?://|src=|href=|@import|url\(", text)


def test_packets_name_no_case_label_version_or_path(studies):
    study, _, data = studies
    info = json.loads((study / "key" / "study.json").read_text())
    case_ids = [c["case_id"] for c in info["cases"]] + ["subj-0008", "subj-0009"]
    hidden = [*FORBIDDEN_WORDS, *case_ids, str(data), "niisrc"]
    for path in packet_files(study):
        name = str(path.relative_to(study / "packets")).lower()
        low = path.read_bytes().lower()
        for word in (*hidden, *CLASSES):
            assert word.lower() not in name, (path, word)
        for word in hidden:
            assert word.lower().encode() not in low, (path, word)
        if path.suffix == ".png" or "/dicom/" in path.as_posix():
            assert not any(c.encode() in low for c in CLASSES), path
        elif path.name == "index.html":
            without_class_list = path.read_text().replace(json.dumps(list(CLASSES), separators=(",", ":")), "")
            assert not any(c in without_class_list for c in CLASSES)
        elif path.name == "README.txt":
            text = path.read_text()
            rest = "\n".join(line for line in text.splitlines() if not line.startswith("Diagnoses to choose"))
            assert not any(c in rest for c in CLASSES)
        else:
            assert path.name == "answers.csv" and not any(c.encode() in low for c in CLASSES)
    for ds in (i for packet in (study / "packets").glob("*/*") for i in packet_dicoms(packet).values()):
        assert ds.PatientID == "READER-STUDY" and str(ds.PatientName) == "READER^STUDY"
        assert ds.StudyDate == "20000101" and ds.PatientIdentityRemoved == "YES"
        assert not {"InstanceCreationTime", "ContentTime", "TimeOfSecondaryCapture", "AcquisitionDateTime"} & set(
            e.keyword for e in ds.iterall())
