"""The offline ``index.html`` viewer in a real headless browser (Debian chromium driven by Playwright).

Installed by ``scripts/install-browser.sh`` (``./run.sh test`` calls it); skipped with a reason otherwise.
The viewer's Content-Security-Policy forbids ``eval``, so every wait here is on DOM state through locators
and ``expect`` (never ``wait_for_function`` with a string predicate, which needs ``eval`` in the page and
fails or not depending on timing). Set ``MEDENC_VIEWER_SCREENSHOT=path.png`` (and
``MEDENC_FORCED_CHOICE_SCREENSHOT=path.png``) to also write the documentation screenshots.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np
import pytest

from medenc.reader_study import build_study, score_study
from medenc.reader_study.answers import load_study, read_answers
from tests.test_reader_study_build import CLASSES, packet_dicoms, read_key, write_dataset

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TIMEOUT_MS = 30_000  # generous: the suite runs on 2 shared cores


@pytest.fixture(scope="module")
def sync_api():
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed at /usr/bin/chromium (run scripts/install-browser.sh)")
    return pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is missing (run scripts/install-browser.sh)"
    )


@pytest.fixture(scope="module")
def playwright(sync_api):
    sync_api.expect.set_options(timeout=TIMEOUT_MS)
    with sync_api.sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def expect(sync_api):
    return sync_api.expect


def open_browser(playwright, profile: Path, **options):
    """Chromium with a fresh profile folder; a second call with the same folder is a browser restart."""
    context = playwright.chromium.launch_persistent_context(
        str(profile), executable_path=str(CHROMIUM), headless=True, args=ARGS, accept_downloads=True,
        viewport={"width": 1200, "height": 720}, **options,
    )
    context.set_default_timeout(TIMEOUT_MS)
    return context


def watch(page) -> tuple[list[str], list[str]]:
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return requests, errors


def shown(page, expect, code: str | None = None) -> None:
    """Wait until the viewer has drawn ``code`` (any image when None): DOM state, no eval."""
    expect(page.locator("body")).to_have_attribute("data-shown", code or re.compile(r"^[A-Z0-9]{6}$"))


def letters(page, slot: int = 0) -> list[str]:
    return [page.locator(f'.orient[data-slot="{slot}"][data-edge="{edge}"]').inner_text()
            for edge in ("top", "right", "bottom", "left")]


def test_viewer_reads_answers_keeps_them_and_exports_a_scorable_csv(playwright, expect, tmp_path):
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
    shown(page, expect, key[0]["code"])
    expect(page.locator("#code")).to_have_text(key[0]["code"])
    expect(page.locator("#progress-text")).to_have_text("0 of 6 answered")
    # radiological orientation: anterior at the top, the patient's right on the left
    assert letters(page) == ["A", "L", "P", "R"]
    assert page.locator(".orient").count() == 4 and page.locator(".side").count() == 0
    # the first image is on screen, and the viewer decoded exactly the DICOM's stored values
    lit = page.evaluate("""() => { const c = document.getElementById('canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 0) n++; return n / (d.length / 4); }""")
    assert lit > 0.2
    stored = np.array(page.evaluate("window.readerViewer.decode(0)"))
    dicom = packet_dicoms(packet)[key[0]["code"]].pixel_array
    assert np.array_equal(stored.reshape(dicom.shape), dicom)

    # answer: keys for most images, clicks for some, one deliberate mistake, the last left open
    expected = {}
    for i, row in enumerate(key[:-1]):
        true = CLASSES.index(row["label"])
        pick = (true + 1) % 3 if i == 2 else true
        if i == 1:
            page.click(f"#choices label.choice:has-text('{CLASSES[pick]}')")
            page.click("#confidence label.choice:has-text('2')")
        else:
            page.keyboard.press(f"Digit{pick + 1}")
            page.keyboard.press("Shift+Digit4")
        expected[row["code"]] = CLASSES[pick]
        expect(page.locator("#progress-text")).to_have_text(f"{i + 1} of 6 answered")
        page.keyboard.press("ArrowRight")
        shown(page, expect, key[i + 1]["code"])
    expect(page.locator("#progress-text")).to_have_text("5 of 6 answered")

    # window/level by dragging, zoom by wheel, reset by key
    box = page.locator("#canvas").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    before = page.evaluate("window.readerViewer.state().view")
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 60, y + 30, steps=4)
    page.mouse.up()
    page.mouse.wheel(0, -300)
    expect(page.locator("#overlay")).not_to_contain_text("zoom 100%")
    after = page.evaluate("window.readerViewer.state().view")
    assert after["width"] > before["width"] and after["center"] > before["center"] and after["zoom"] > 1
    page.keyboard.press("r")
    expect(page.locator("#overlay")).to_contain_text("zoom 100%")
    assert page.evaluate("window.readerViewer.state().view") == before

    # closing the browser loses nothing: same profile, same page, same answers and position
    context.close()
    context = open_browser(playwright, profile)
    page = context.new_page()
    more_requests, more_errors = watch(page)
    page.goto((packet / "index.html").as_uri())
    shown(page, expect, key[-1]["code"])
    expect(page.locator("#progress-text")).to_have_text("5 of 6 answered")
    state = page.evaluate("window.readerViewer.state()")
    assert {c: a["diagnosis"] for c, a in state["answers"].items()} == expected
    # typing a comment with digits does not change the diagnosis; U finds the image still open
    page.keyboard.press("Home")
    shown(page, expect, key[0]["code"])
    page.keyboard.press("u")
    shown(page, expect, key[-1]["code"])
    page.keyboard.press(f"Digit{CLASSES.index(key[-1]['label']) + 1}")
    expected[key[-1]["code"]] = key[-1]["label"]
    expect(page.locator("#progress-text")).to_have_text("6 of 6 answered")
    page.click("#comment")
    page.keyboard.type('rim 2 mm, "odd" 3')
    page.keyboard.press("Escape")
    page.reload()
    shown(page, expect)
    expect(page.locator("#progress-text")).to_have_text("6 of 6 answered")

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


def test_forced_choice_viewer_shows_pairs_and_exports_sides(playwright, expect, tmp_path):
    clean, enc = write_dataset(tmp_path / "data", [CLASSES[i % 3] for i in range(4)])
    study = tmp_path / "study"
    build_study(clean, enc, study, readers=["R1"], seed=2)
    packet = study / "packets" / "R1" / "forced-choice"
    trials = sorted(read_key(study, "forced-choice.csv"), key=lambda t: int(t["position"]))
    context = open_browser(playwright, tmp_path / "profile")
    page = context.new_page()
    requests, errors = watch(page)
    page.goto((packet / "index.html").as_uri())
    shown(page, expect, trials[0]["code"])
    expect(page.locator("#choices-legend")).to_have_text("Which image is changed?")
    assert [page.locator(".side").nth(k).inner_text() for k in range(2)] == ["A", "B"]
    assert letters(page, 0) == letters(page, 1) == ["A", "L", "P", "R"]
    dicoms = packet_dicoms(packet)
    for slot, side in enumerate("AB"):  # A on the left, B on the right, each its own stored values
        stored = np.array(page.evaluate(f"window.readerViewer.decode(0, {slot})"))
        dicom = dicoms[f"{trials[0]['code']}-{side}"].pixel_array
        assert np.array_equal(stored.reshape(dicom.shape), dicom)
    picks = {}
    for i, trial in enumerate(trials):
        pick = "AB"[i % 2]
        if i == 3:
            page.click("#choices label.choice:has-text('B (right)')")
        else:
            page.keyboard.press(pick.lower() if i < 2 else f"Digit{'AB'.index(pick) + 1}")
        page.keyboard.press("Shift+Digit3")
        picks[trial["code"]] = "B" if i == 3 else pick
        expect(page.locator("#progress-text")).to_have_text(f"{i + 1} of 4 answered")
        if i + 1 < len(trials):
            page.keyboard.press("ArrowRight")
            shown(page, expect, trials[i + 1]["code"])
    with page.expect_download() as download_info:
        page.click("#export")
    download = download_info.value
    assert download.suggested_filename == "answers-R1-forced-choice.csv"
    exported = tmp_path / download.suggested_filename
    download.save_as(exported)
    context.close()
    assert exported.read_text().splitlines()[0] == "code,changed,confidence,comment"
    report = score_study(study, [exported], tmp_path / "report").report
    detected = sum(picks[t["code"]] == t["changed"] for t in trials)
    assert report["forced_choice"]["per_reader"]["R1"]["detected"] == detected
    assert report["forced_choice"]["per_reader"]["R1"]["trials"] == 4
    assert all(url.startswith(("file://", "data:", "blob:")) for url in requests) and errors == []


def _brain_dataset(root: Path) -> tuple[Path, Path]:
    """One synthetic brain slice per class (medenc.synth.generate) as 2D NIfTI with its own affine, and a
    stand-in "encrypted" copy (Gaussian noise of 1% of the range), for the documentation screenshots."""
    import nibabel as nib

    from medenc.synth.generate import generate_case
    from medenc.synth.tumors import CLASSES as SYNTH_CLASSES

    rows = []
    noise = np.random.default_rng(99)
    for folder in ("clean", "standin"):
        (root / folder).mkdir(parents=True)
    for i, label in enumerate(SYNTH_CLASSES):
        case = generate_case(label, np.random.default_rng(i), size=192)
        k = case.largest_slice()
        affine = case.affine.copy()
        affine[:3, 3] = case.affine[:3, :3] @ [0, 0, k] + case.affine[:3, 3]
        plane = case.volume[:, :, k].astype(np.float32)
        changed = plane + noise.normal(0, 0.01 * float(plane.max()), plane.shape).astype(np.float32)
        for folder, data in (("clean", plane), ("standin", changed)):
            nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), root / folder / f"c{i}.nii.gz")
        rows.append([f"case-{i}", label, "test", f"c{i}.nii.gz"])
    manifests = []
    for folder in ("clean", "standin"):
        manifests.append(root / folder / "manifest.csv")
        with manifests[-1].open("w", newline="") as handle:
            csv.writer(handle).writerows([["case_id", "label", "split", "image"], *rows])
    return manifests[0], manifests[1]


@pytest.mark.skipif(
    not os.environ.get("MEDENC_VIEWER_SCREENSHOT"), reason="set MEDENC_VIEWER_SCREENSHOT=path.png"
)
def test_viewer_screenshot_for_docs(playwright, expect, tmp_path):
    clean, enc = _brain_dataset(tmp_path / "data")
    build_study(clean, enc, tmp_path / "study", readers=["R1"], seed=5)
    context = open_browser(playwright, tmp_path / "profile")
    for packet, variable, keys in (("session-1", "MEDENC_VIEWER_SCREENSHOT", ("Digit3", "Shift+Digit4")),
                                   ("forced-choice", "MEDENC_FORCED_CHOICE_SCREENSHOT", ("b", "Shift+Digit2"))):
        if not os.environ.get(variable):
            continue
        page = context.new_page()
        page.goto((tmp_path / "study" / "packets" / "R1" / packet / "index.html").as_uri())
        shown(page, expect)
        for key in keys:
            page.keyboard.press(key)
        expect(page.locator("#progress-text")).to_have_text(re.compile(r"^1 of \d+ answered$"))
        page.screenshot(path=os.environ[variable])
    context.close()
