"""Simulated readers with known behaviour, to try out and test scoring (they read the answer key).

Each simulated reader diagnoses a case's clean image correctly with probability ``accuracy_original``
(otherwise a uniformly drawn wrong class). On the encrypted image it repeats its first diagnosis with
probability ``consistency``; otherwise it reads afresh and is correct with probability
``accuracy_encrypted``. The expected accuracy on encrypted images is therefore
``consistency * accuracy_original + (1 - consistency) * accuracy_encrypted``. In the forced-choice session
it marks the encrypted image of a pair as the changed one with probability ``detection`` (0.5: it cannot
tell them apart).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from medenc.atomic import atomic_write_text
from medenc.errors import InputError
from medenc.files import check_output
from medenc.reader_study.answers import load_study
from medenc.reader_study.packet import ANSWER_COLUMNS, FORCED_CHOICE, FORCED_CHOICE_COLUMNS, answers_filename


def _read(label: str, p: float, classes: list[str], rng: np.random.Generator) -> str:
    if len(classes) == 1 or rng.random() < p:
        return label
    others = [c for c in classes if c != label]
    return others[int(rng.integers(len(others)))]


def simulate_answers(
    study_dir: str | Path,
    out: str | Path,
    *,
    accuracy_original: float = 0.8,
    accuracy_encrypted: float = 0.8,
    consistency: float = 0.8,
    skip: float = 0.0,
    detection: float = 0.5,
    seed: int = 0,
    force: bool = False,
) -> list[Path]:
    """Write one answers CSV per reader and session, as the viewer's export would.

    Args:
        study_dir: a built study.
        out: folder for the answer files.
        accuracy_original: chance of a correct diagnosis on a clean image.
        accuracy_encrypted: chance of a correct diagnosis on a fresh read of an encrypted image.
        consistency: chance the encrypted image gets the same diagnosis as the clean one.
        skip: chance an image is left without an answer (to exercise ``--partial``).
        detection: chance of marking the encrypted image of a forced-choice pair as the changed one.
        seed: seed of the simulation.
        force: write into a folder that is not empty, replacing answer files there.

    Returns:
        The written files.
    """
    for name, p in (("accuracy_original", accuracy_original), ("accuracy_encrypted", accuracy_encrypted),
                    ("consistency", consistency), ("skip", skip), ("detection", detection)):
        if not 0.0 <= p <= 1.0:
            raise InputError(f"{name} must be between 0 and 1; got {p}")
    study = load_study(study_dir)
    check_output(out, inputs=[study_dir], force=force, what="answers folder")
    classes = study.classes
    by_packet: dict[tuple[str, int], list] = {}
    for entry in study.key.values():
        by_packet.setdefault((entry.reader, entry.session), []).append(entry)
    session_of = {version: int(s) for s, version in study.info["sessions"].items()}
    written = []
    for r, reader in enumerate(study.readers):
        rng = np.random.default_rng([seed, r])
        diagnoses: dict[tuple[str, str], str] = {}
        for case in study.info["cases"]:
            first = _read(case["label"], accuracy_original, classes, rng)
            second = (first if rng.random() < consistency
                      else _read(case["label"], accuracy_encrypted, classes, rng))
            diagnoses[case["case_id"], "original"] = first
            diagnoses[case["case_id"], "encrypted"] = second
        for version in ("original", "encrypted"):
            session = session_of[version]
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(ANSWER_COLUMNS)
            for entry in sorted(by_packet[reader, session], key=lambda e: e.position):
                dx = diagnoses[entry.case_id, version]
                if rng.random() < skip:
                    writer.writerow([entry.code, "", "", ""])
                    continue
                confidence = int(rng.integers(3, 6)) if dx == entry.label else int(rng.integers(1, 5))
                writer.writerow([entry.code, dx, confidence, ""])
            path = Path(out) / answers_filename(reader, session)
            written.append(atomic_write_text(path, buffer.getvalue(), force=force))
        trials = sorted((t for t in study.trials.values() if t.reader == reader), key=lambda t: t.position)
        if trials:
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(FORCED_CHOICE_COLUMNS)
            for trial in trials:
                found = rng.random() < detection
                other = "B" if trial.changed == "A" else "A"
                writer.writerow([trial.code, trial.changed if found else other, int(rng.integers(1, 4)), ""])
            path = Path(out) / answers_filename(reader, FORCED_CHOICE)
            written.append(atomic_write_text(path, buffer.getvalue(), force=force))
    return written
