"""The offline ``index.html`` viewer in a real headless browser (Debian chromium driven by Playwright).

Installed by ``scripts/install-browser.sh`` (``./run.sh test`` calls it); skipped with a reason otherwise.
Set ``MEDENC_VIEWER_SCREENSHOT=path.png`` to also write the documentation screenshot.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medenc.reader_study import build_study, score_study
from medenc.reader_study.answers import load_study, read_answers
from tests.test_reader_study_build import CLASSES, read_key, write_dataset

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def playwright():
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed at /usr/bin/chromium (run scripts/install-browser.sh)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is missing (run scripts/install-browser.sh)"
    )
    with sync_api.sync_playwright() as driver:
        yield driver


def open_browser(playwright, profile: Path, **options):
    """Chromium with a fresh profile folder; a second call with the same folder is a browser restart."""
    return playwright.chromium.launch_persistent_context(
        str(profile), executable_path=str(CHROMIUM), headless=True, args=ARGS, accept_downloads=True,
        viewport={"width": 1200, "height": 720}, **options,
    )


def watch(page) -> tuple[list[str], list[str]]:
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return requests, errors


def test_viewer_reads_answers_keeps_them_and_exports_a_scorable_csv(playwright, tmp_path):
    clean, enc = write_dataset(tmp_path / "data", [CLASSES[i % 3] for i in range(6)])
    study = tmp_path / "study"
    build_study(clean, enc, study, readers=["R1"], seed=11)
    packet = study / "packets" / "R1" / "session-1"
    key = sorted((r for r in read_key(study) if r["reader"] == "R1" and r["session"] == "1"),
                 key=lambda r: int(r["position"]))
    profile = tmp_path / "profile"

    context = open_browser(playwright, profile)
    page = context.new_page()
    requests, errors = watch(page)
    page.goto((packet / "index.html").as_uri())
    page.wait_for_function(f"document.body.dataset.shown === {key[0]['code']!r}")
    assert page.inner_text("#code") == key[0]["code"]
    assert page.inner_text("#progress-text") == "0 of 6 answered"
    # the first image is on screen, and the viewer decoded exactly the DICOM's stored values
    lit = page.evaluate("""() => { const c = document.getElementById('canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 0) n++; return n / (d.length / 4); }""")
    assert lit > 0.2
    stored = np.array(page.evaluate("window.readerViewer.decode(0)"))
    dicom = pydicom.dcmread(packet / "dicom" / f"{key[0]['code']}.dcm").pixel_array
    assert np.array_equal(stored.reshape(dicom.shape), dicom)

    # answer: keys for most images, clicks for some, one deliberate mistake, the last left open
    expected = {}
    for i, row in enumerate(key[:-1]):
        true = CLASSES.index(row["label"])
        pick = (true + 1) % 3 if i == 2 else true
        if i == 1:
            page.click(f"#diagnosis label.choice:has-text('{CLASSES[pick]}')")
            page.click("#confidence label.choice:has-text('2')")
        else:
            page.keyboard.press(f"Digit{pick + 1}")
            page.keyboard.press("Shift+Digit4")
        expected[row["code"]] = CLASSES[pick]
        page.keyboard.press("ArrowRight")
        page.wait_for_function(f"document.body.dataset.shown === {key[i + 1]['code']!r}")
    assert page.inner_text("#progress-text") == "5 of 6 answered"

    # window/level by dragging, zoom by wheel, reset by key
    box = page.locator("#canvas").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    before = page.evaluate("window.readerViewer.state().view")
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 60, y + 30, steps=4)
    page.mouse.up()
    page.mouse.wheel(0, -300)
    after = page.evaluate("window.readerViewer.state().view")
    assert after["width"] > before["width"] and after["center"] > before["center"] and after["zoom"] > 1
    page.keyboard.press("r")
    assert page.evaluate("window.readerViewer.state().view") == before

    # closing the browser loses nothing: same profile, same page, same answers and position
    context.close()
    context = open_browser(playwright, profile)
    page = context.new_page()
    more_requests, more_errors = watch(page)
    page.goto((packet / "index.html").as_uri())
    page.wait_for_function(f"document.body.dataset.shown === {key[-1]['code']!r}")
    assert page.inner_text("#progress-text") == "5 of 6 answered"
    state = page.evaluate("window.readerViewer.state()")
    assert {c: a["diagnosis"] for c, a in state["answers"].items()} == expected
    # typing a comment with digits does not change the diagnosis; U finds the image still open
    page.keyboard.press("Home")
    page.keyboard.press("u")
    page.wait_for_function(f"document.body.dataset.shown === {key[-1]['code']!r}")
    page.keyboard.press(f"Digit{CLASSES.index(key[-1]['label']) + 1}")
    expected[key[-1]["code"]] = key[-1]["label"]
    page.click("#comment")
    page.keyboard.type('rim 2 mm, "odd" 3')
    page.keyboard.press("Escape")
    page.reload()
    page.wait_for_function("document.body.dataset.shown")
    assert page.inner_text("#progress-text") == "6 of 6 answered"

    with page.expect_download() as download_info:
        page.click("#export")
    download = download_info.value
    assert download.suggested_filename == "answers-R1-session-1.csv"
    exported = tmp_path / download.suggested_filename
    download.save_as(exported)
    context.close()

    with exported.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["code"] for r in rows] == [r["code"] for r in key]
    answers = read_answers([exported], load_study(study), partial=True)
    assert {c: a.diagnosis for c, a in answers.answers.items()} == expected
    assert answers.answers[key[1]["code"]].confidence == 2 and answers.answers[key[0]["code"]].confidence == 4
    assert answers.answers[key[-1]["code"]].comment == 'rim 2 mm, "odd" 3'
    report = score_study(study, [exported], tmp_path / "report", partial=True).report
    assert report["per_reader"]["R1"]["accuracy"]["original"]["correct"] == 5
    assert report["per_reader"]["R1"]["accuracy"]["original"]["answered"] == 6
    assert report["validation"]["missing"] == 6  # session 2 was not read

    for url in requests + more_requests:
        assert url.startswith(("file://", "data:", "blob:")), url
    assert errors == [] and more_errors == []


def _brain_dataset(root: Path) -> tuple[Path, Path]:
    """One synthetic brain slice per class (medenc.synth.generate) as 2D NIfTI, for the documentation screenshot."""
    import nibabel as nib

    from medenc.synth.generate import generate_case
    from medenc.synth.tumors import CLASSES as SYNTH_CLASSES

    rows = []
    (root / "slices").mkdir(parents=True)
    for i, label in enumerate(SYNTH_CLASSES):
        case = generate_case(label, np.random.default_rng(i), size=192)
        data = case.volume[:, :, case.largest_slice()].T[::-1]  # rows top = anterior, for display
        nib.save(nib.Nifti1Image(np.ascontiguousarray(data), np.eye(4)), root / "slices" / f"c{i}.nii.gz")
        rows.append([f"case-{i}", label, "test", f"slices/c{i}.nii.gz"])
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        csv.writer(handle).writerows([["case_id", "label", "split", "image"], *rows])
    return manifest, manifest


@pytest.mark.skipif(
    not os.environ.get("MEDENC_VIEWER_SCREENSHOT"), reason="set MEDENC_VIEWER_SCREENSHOT=path.png"
)
def test_viewer_screenshot_for_docs(playwright, tmp_path):
    clean, enc = _brain_dataset(tmp_path / "data")
    build_study(clean, enc, tmp_path / "study", readers=["R1"], seed=5)
    context = open_browser(playwright, tmp_path / "profile")
    page = context.new_page()
    page.goto((tmp_path / "study" / "packets" / "R1" / "session-1" / "index.html").as_uri())
    page.wait_for_function("document.body.dataset.shown")
    page.keyboard.press("Digit3")
    page.keyboard.press("Shift+Digit4")
    page.wait_for_timeout(300)
    page.screenshot(path=os.environ["MEDENC_VIEWER_SCREENSHOT"])
    context.close()
