"""Write one reader's packet: PNG and DICOM images, the offline viewer, a README and an empty answers sheet.

Two kinds: a diagnostic session (one image per code, the reader picks a diagnosis) and the forced-choice
session (two images per code, the two versions of one case side by side as A and B; the reader marks the
changed one). Nothing written here may reveal a case, a label or which version an image is.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from medenc.reader_study.dicom import DicomIdentity, sc_image, write_file_set
from medenc.reader_study.orientation import DisplayGeometry
from medenc.reader_study.render import StoredImage
from medenc.reader_study.secret import StudySecret

ANSWER_COLUMNS = ("code", "diagnosis", "confidence", "comment")
FORCED_CHOICE_COLUMNS = ("code", "changed", "confidence", "comment")
SIDES = ("A", "B")
CONFIDENCE_LEVELS = (1, 2, 3, 4, 5)
FORCED_CHOICE = "forced-choice"


@dataclass(frozen=True)
class PacketImage:
    """One rendered image: stored pixels in screen order, its geometry and pre-encoded PNGs."""

    image: StoredImage
    geometry: DisplayGeometry
    display_png: bytes
    packed_png: bytes


@dataclass(frozen=True)
class PacketItem:
    """One code of a packet: one image (diagnostic session) or the pair A, B (forced choice)."""

    code: str
    views: tuple[PacketImage, ...]


def answers_filename(reader: str, session: int | str) -> str:
    """Name of the answers file the viewer downloads for a packet."""
    return f"answers-{reader}-{FORCED_CHOICE}.csv" if session == FORCED_CHOICE else \
        f"answers-{reader}-session-{session}.csv"


def _viewer_html(title: str, payload: dict) -> str:
    template = resources.files("medenc.reader_study").joinpath("viewer.html").read_text(encoding="utf-8")
    # "<" escaped so that no string in the data can close the <script> element
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=True).replace("<", "\\u003c")
    html_title = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return template.replace("__TITLE__", html_title).replace("__STUDY_DATA__", data)


_OTHER_WAYS = """Other ways to read the same images
- png/    PNG files, windowed for display, full resolution, oriented as on the
          screen of a DICOM viewer (anterior or head at the top, the patient's
          right on the left).
- dicom/  a DICOM folder for your own viewer or PACS: open dicom/DICOMDIR, or
          import the folder. Each image is a series of its own, numbered in
          reading order, its code in the series description and Image Comments.
"""


def _readme(reader: str, session: int, sessions: int, items: list[PacketItem], classes: list[str]) -> str:
    filename = answers_filename(reader, session)
    return f"""Reader study - reader {reader}, session {session} of {sessions}

This folder holds {len(items)} brain MRI slices to diagnose, one image at a time. Each image
has a random code (for example {items[0].code}); neither the codes nor the order say anything
about the cases.

How to read
1. Open index.html in a current web browser (Chrome, Edge, Firefox or Safari). It works
   offline, straight from this folder; nothing is sent anywhere.
2. For every image choose one diagnosis and your confidence (1 = guess ... 5 = certain);
   a comment is optional. The letters at the edges give the patient's directions
   (A anterior, P posterior, R right, L left, S superior, I inferior). Drag on the image
   to change window and level, use the mouse wheel to zoom. Keys: Right/Left arrow =
   next/previous image, 1-9 = diagnosis, Shift+1-5 = confidence, U = next image without
   a diagnosis.
3. Your answers are kept in this browser as you go: you may close the page and go on later
   on the same computer with the same browser.
4. When you are done, click "Export answers" and send the downloaded file
   ({filename}) to the study coordinator.

Diagnoses to choose from: {", ".join(classes)}

Please read on your own, without discussing the images, and keep to this folder: do not
compare it with any other session's folder.

{_OTHER_WAYS}
If you read them there, fill in answers.csv instead (columns code,diagnosis,confidence,comment;
one line per code; the diagnosis spelled as in the list above; confidence 1-5) and send it.
"""


def _forced_choice_readme(reader: str, items: list[PacketItem]) -> str:
    filename = answers_filename(reader, FORCED_CHOICE)
    return f"""Reader study - reader {reader}, forced choice

This folder holds {len(items)} pairs of brain MRI slices. The two images of a pair, A (left)
and B (right), show the same slice: one is the image as acquired, the other has been
changed by the processing under study. Which one is changed is decided at random for each
pair. Each pair has a random code (for example {items[0].code}).

How to read
1. Open index.html in a current web browser; it works offline, straight from this folder.
2. For every pair mark the image you think is the changed one, A or B, and your confidence
   (1 = guess ... 5 = certain). When you cannot tell, guess: every pair needs an answer.
   Window, level and zoom act on both images together. Keys: A or 1 = A, B or 2 = B,
   Shift+1-5 = confidence, Right/Left arrow = next/previous pair, U = next pair without
   an answer.
3. Your answers are kept in this browser as you go.
4. When you are done, click "Export answers" and send the downloaded file
   ({filename}) to the study coordinator.

Please read on your own, and only after you have finished and returned both diagnostic
sessions.

{_OTHER_WAYS}          Pair images are named <code>-A and <code>-B.
If you read them there, fill in answers.csv instead (columns code,changed,confidence,comment;
one line per code; changed is A or B; confidence 1-5) and send it.
"""


def _view_payload(view: PacketImage) -> dict:
    stored = view.image.stored
    return {
        "rows": int(stored.shape[0]),
        "cols": int(stored.shape[1]),
        "slope": view.image.slope,
        "intercept": view.image.intercept,
        "center": view.image.center,
        "width": view.image.width,
        "orient": list(view.geometry.letters),
        "px": base64.b64encode(view.packed_png).decode("ascii"),
    }


def write_packet(
    folder: Path,
    *,
    reader: str,
    session: int | str,
    sessions: int,
    items: list[PacketItem],
    classes: list[str],
    secret: StudySecret,
) -> None:
    """Write a packet folder (it must not exist yet).

    Args:
        folder: ``.../packets/<reader>/session-<n>`` or ``.../packets/<reader>/forced-choice``.
        reader: the reader's name.
        session: the session number (1-based), or :data:`FORCED_CHOICE`.
        sessions: how many diagnostic sessions the study has.
        items: the codes in the reader's (shuffled) order; one view each, or two (A, B) for forced choice.
        classes: the diagnoses the reader chooses from.
        secret: the study secret (DICOM UIDs and the viewer's storage token are drawn from it).
    """
    forced = session == FORCED_CHOICE
    (folder / "png").mkdir(parents=True)
    title = (f"Reader study - reader {reader}, forced choice" if forced
             else f"Reader study - reader {reader}, session {session} of {sessions}")
    study_uid = secret.uid("study", reader, session)
    datasets = []
    for position, item in enumerate(items, start=1):
        for k, view in enumerate(item.views):
            name = f"{item.code}-{SIDES[k]}" if forced else item.code
            (folder / "png" / f"{name}.png").write_bytes(view.display_png)
            what = f"Pair {position} of {len(items)}" if forced else f"Image {position} of {len(items)}"
            identity = DicomIdentity(
                study_uid=study_uid,
                series_uid=secret.uid("series", reader, session, position, k),
                sop_uid=secret.uid("sop", reader, session, position, k),
                series_number=len(item.views) * (position - 1) + k + 1,
                study_id="FC" if forced else str(session),
                study_description=title,
                series_description=f"{what} - {name}",
                code=name,
            )
            datasets.append(sc_image(view.image, view.geometry, identity))
    write_file_set(folder / "dicom", datasets, secret.uid("file-set", reader, session))
    columns = FORCED_CHOICE_COLUMNS if forced else ANSWER_COLUMNS
    sheet = [",".join(columns)] + [f"{item.code},,," for item in items]
    (folder / "answers.csv").write_text("\n".join(sheet) + "\n", encoding="utf-8")
    readme = _forced_choice_readme(reader, items) if forced else _readme(reader, int(session), sessions, items,
                                                                         classes)
    (folder / "README.txt").write_text(readme, encoding="utf-8")
    payload = {
        "packet": secret.digest("viewer-token", reader, session)[:12].hex(),
        "title": title,
        "filename": answers_filename(reader, session),
        "field": "changed" if forced else "diagnosis",
        "choices": list(SIDES) if forced else classes,
        "sides": list(SIDES) if forced else [],
        "images": [{"code": item.code, "views": [_view_payload(v) for v in item.views]} for item in items],
    }
    (folder / "index.html").write_text(_viewer_html(title, payload), encoding="utf-8")
