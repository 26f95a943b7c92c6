"""Write one reader's packet for one session: PNG and DICOM images, the offline viewer, a README and an
empty answers sheet. Nothing written here may reveal a case, a label or which version an image is.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from medenc.reader_study.render import StoredImage, dicom_bytes, random_uid

ANSWER_COLUMNS = ("code", "diagnosis", "confidence", "comment")
CONFIDENCE_LEVELS = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class PacketImage:
    """One image of a packet: its blinded code, pixels and pre-encoded PNGs (display and packed 16-bit)."""

    code: str
    image: StoredImage
    display_png: bytes
    packed_png: bytes
    pixel_spacing: tuple[float, float] | None


def answers_filename(reader: str, session: int) -> str:
    """Name of the answers file the viewer downloads for a packet."""
    return f"answers-{reader}-session-{session}.csv"


def _viewer_html(title: str, payload: dict) -> str:
    template = resources.files("medenc.reader_study").joinpath("viewer.html").read_text(encoding="utf-8")
    # "<" escaped so that no string in the data can close the <script> element
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=True).replace("<", "\\u003c")
    html_title = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return template.replace("__TITLE__", html_title).replace("__STUDY_DATA__", data)


def _readme(reader: str, session: int, sessions: int, images: list[PacketImage], classes: list[str]) -> str:
    filename = answers_filename(reader, session)
    return f"""Reader study - reader {reader}, session {session} of {sessions}

This folder holds {len(images)} brain MRI slices to diagnose, one image at a time. Each image
has a random code (for example {images[0].code}); neither the codes nor the order say anything
about the cases.

How to read
1. Open index.html in a current web browser (Chrome, Edge, Firefox or Safari). It works
   offline, straight from this folder; nothing is sent anywhere.
2. For every image choose one diagnosis and your confidence (1 = guess ... 5 = certain);
   a comment is optional. Drag on the image to change window and level, use the mouse wheel
   to zoom. Keys: Right/Left arrow = next/previous image, 1-9 = diagnosis, Shift+1-5 =
   confidence, U = next image without a diagnosis.
3. Your answers are kept in this browser as you go: you may close the page and go on later
   on the same computer with the same browser.
4. When you are done, click "Export answers" and send the downloaded file
   ({filename}) to the study coordinator.

Diagnoses to choose from: {", ".join(classes)}

Please read on your own, without discussing the images, and keep to this folder: do not
compare it with any other session's folder.

Other ways to read the same images
- png/    PNG files, windowed for display, full resolution.
- dicom/  DICOM files for your own viewer or PACS; the code is the file name and the
          Image Comments field.
If you read them there, fill in answers.csv instead (columns code,diagnosis,confidence,comment;
one line per code; the diagnosis spelled as in the list above; confidence 1-5) and send it.
"""


def write_packet(
    folder: Path,
    *,
    reader: str,
    session: int,
    sessions: int,
    images: list[PacketImage],
    classes: list[str],
    rng: np.random.Generator,
) -> None:
    """Write a packet folder (it must not exist yet).

    Args:
        folder: ``.../packets/<reader>/session-<n>``.
        reader: the reader's name.
        session: the session number (1-based).
        sessions: how many sessions the study has.
        images: the images in the reader's (shuffled) order.
        classes: the diagnoses the reader chooses from.
        rng: seeded generator for the packet's UIDs and local-storage token.
    """
    (folder / "png").mkdir(parents=True)
    (folder / "dicom").mkdir()
    study_uid, series_uid = random_uid(rng), random_uid(rng)
    description = f"Reader study - reader {reader} session {session}"
    for position, item in enumerate(images, start=1):
        (folder / "png" / f"{item.code}.png").write_bytes(item.display_png)
        (folder / "dicom" / f"{item.code}.dcm").write_bytes(
            dicom_bytes(
                item.image,
                code=item.code,
                instance_number=position,
                series_number=session,
                study_uid=study_uid,
                series_uid=series_uid,
                sop_uid=random_uid(rng),
                description=description,
                pixel_spacing=item.pixel_spacing,
            )
        )
    sheet = [",".join(ANSWER_COLUMNS)] + [f"{item.code},,," for item in images]
    (folder / "answers.csv").write_text("\n".join(sheet) + "\n", encoding="utf-8")
    (folder / "README.txt").write_text(_readme(reader, session, sessions, images, classes), encoding="utf-8")
    title = f"Reader study - reader {reader}, session {session} of {sessions}"
    payload = {
        "packet": rng.bytes(12).hex(),
        "title": title,
        "filename": answers_filename(reader, session),
        "classes": classes,
        "images": [
            {
                "code": item.code,
                "rows": int(item.image.stored.shape[0]),
                "cols": int(item.image.stored.shape[1]),
                "slope": item.image.slope,
                "intercept": item.image.intercept,
                "center": item.image.center,
                "width": item.image.width,
                "px": base64.b64encode(item.packed_png).decode("ascii"),
            }
            for item in images
        ],
    }
    (folder / "index.html").write_text(_viewer_html(title, payload), encoding="utf-8")
