"""``medenc reader-study build``: choose the test cases, blind and shuffle them, write packets and the key.

Session 1 holds the clean images, session 2 the encrypted ones (the paper's order, Fig. 5). Each reader
gets an independent shuffle per session; every image in the study gets its own random code. The answer
key goes to ``STUDY_DIR/key/`` only.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medenc.atomic import atomic_directory
from medenc.errors import InputError
from medenc.files import check_output, manifest_inputs
from medenc.reader_study.manifest import (
    StudyCase,
    file_sha256,
    load_pixel_spacing,
    pair_test_cases,
    stratified_choice,
)
from medenc.reader_study.packet import PacketImage, write_packet
from medenc.reader_study.render import (
    WINDOW_PERCENTILES,
    display_uint8,
    packed_png_bytes,
    png_bytes,
    to_stored,
)

# session number -> version shown in it (the paper: clean first, then encrypted)
SESSION_VERSIONS = {1: "original", 2: "encrypted"}
DEFAULT_READERS = ("R1", "R2", "R3")
KEY_COLUMNS = ("code", "reader", "session", "position", "case_id", "version", "label")
STUDY_FORMAT = "medenc-reader-study"
# no vowels (no words), no look-alikes (0/O, 1/I/L, 8/B)
CODE_ALPHABET = "CDFGHJKMNPQRTVWXYZ2345679"
CODE_LENGTH = 6
KEY_README = (
    "The answer key of this reader study: which code is which case and version.\n"
    "Never give this folder to a reader; hand out only packets/<reader>/session-<n>/.\n"
)
_READER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build_study` wrote."""

    study_dir: Path
    seed: int
    cases: int
    readers: tuple[str, ...]
    classes: tuple[str, ...]
    packets: tuple[Path, ...]


def check_readers(readers: Sequence[str]) -> tuple[str, ...]:
    """Validate reader names (used as folder names): 1-32 letters, digits, ``_`` or ``-``, unique."""
    names = tuple(r.strip() for r in readers)
    if not names:
        raise InputError("at least one reader is needed", tip="e.g. --readers R1,R2,R3")
    for name in names:
        if not _READER_NAME.match(name):
            raise InputError(
                f"reader name {name!r} is not allowed",
                tip="use 1-32 letters, digits, '_' or '-', starting with a letter or digit",
            )
    if len(set(names)) != len(names):
        raise InputError(f"reader names repeat: {', '.join(names)}")
    return names


def draw_codes(count: int, rng: np.random.Generator) -> list[str]:
    """``count`` distinct random codes of :data:`CODE_LENGTH` characters from :data:`CODE_ALPHABET`."""
    codes: list[str] = []
    seen: set[str] = set()
    alphabet = np.array(list(CODE_ALPHABET))
    while len(codes) < count:
        code = "".join(alphabet[rng.integers(0, len(alphabet), CODE_LENGTH)])
        if code not in seen:
            seen.add(code)
            codes.append(code)
    return codes


def _prepare(cases: list[StudyCase]) -> dict[tuple[str, str], tuple]:
    """Load and encode every image once (validates everything before anything is written)."""
    from medenc.experiment.dataset import load_slice

    prepared: dict[tuple[str, str], tuple] = {}
    for case in cases:
        clean, encrypted = load_slice(case.clean), load_slice(case.encrypted)
        if clean.shape != encrypted.shape:
            raise InputError(
                f"case {case.case_id!r}: encrypted slice has shape {encrypted.shape}, clean {clean.shape}",
                path=case.encrypted,
            )
        spacing = load_pixel_spacing(case.clean)  # the same for both versions: no metadata difference
        for version, data in (("original", clean), ("encrypted", encrypted)):
            stored = to_stored(data)
            prepared[case.case_id, version] = (
                stored,
                png_bytes(display_uint8(stored)),
                packed_png_bytes(stored),
                spacing,
            )
    return prepared


def _key_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=KEY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def build_study(
    clean_manifest: str | Path,
    encrypted_manifest: str | Path,
    out: str | Path,
    *,
    cases: int | None = None,
    readers: Sequence[str] = DEFAULT_READERS,
    seed: int | None = None,
    force: bool = False,
) -> BuildResult:
    """Build a blinded two-session reader study.

    Args:
        clean_manifest: manifest of the clean slices (``split == test`` rows are used).
        encrypted_manifest: manifest of the encrypted slices (same ``case_id`` values and labels).
        out: the study folder to create.
        cases: how many test cases to use, stratified by label; all when None.
        readers: reader names (folder names of their packets).
        seed: seed of every random choice; a fresh one (recorded in the key) when None.
        force: replace an existing study folder.

    Returns:
        A summary of what was written.

    Raises:
        InputError: bad manifests, slices, reader names or case count.
        OutputExistsError: ``out`` exists and ``force`` is False.
    """
    readers = check_readers(readers)
    out = Path(out)
    inputs = [*manifest_inputs(clean_manifest), *manifest_inputs(encrypted_manifest)]
    check_output(out, inputs=inputs, force=force)  # before any work: never an input, never inside one
    if seed is None:
        seed = secrets.randbits(63)
    if seed < 0:
        raise InputError(f"--seed must be >= 0; got {seed}")
    candidates, class_names = pair_test_cases(clean_manifest, encrypted_manifest)
    classes = list(class_names)
    if cases is not None:
        chosen = stratified_choice([c.label for c in candidates], cases, np.random.default_rng([seed, 0]))
        candidates = [candidates[i] for i in chosen]
    prepared = _prepare(candidates)

    n = len(candidates)
    codes = iter(draw_codes(len(readers) * len(SESSION_VERSIONS) * n, np.random.default_rng([seed, 1])))
    uid_rng = np.random.default_rng([seed, 2])
    key_rows: list[dict] = []
    packets: list[Path] = []
    inputs += [path for case in candidates for path in (case.clean, case.encrypted)]
    with atomic_directory(out, force=force, inputs=inputs) as tmp:
        for r, reader in enumerate(readers):
            for session, version in SESSION_VERSIONS.items():
                order = np.random.default_rng([seed, 3, r, session]).permutation(n)
                items = []
                for position, i in enumerate(order, start=1):
                    case = candidates[int(i)]
                    stored, display, packed, spacing = prepared[case.case_id, version]
                    code = next(codes)
                    items.append(PacketImage(code, stored, display, packed, spacing))
                    key_rows.append(
                        {"code": code, "reader": reader, "session": session, "position": position,
                         "case_id": case.case_id, "version": version, "label": case.label}
                    )
                folder = Path("packets") / reader / f"session-{session}"
                write_packet(
                    tmp / folder, reader=reader, session=session, sessions=len(SESSION_VERSIONS),
                    images=items, classes=classes, rng=uid_rng,
                )
                packets.append(out / folder)
        key_dir = tmp / "key"
        key_dir.mkdir(mode=0o700)
        study = {
            "format": STUDY_FORMAT,
            "format_version": 1,
            "seed": seed,
            "classes": classes,
            "readers": list(readers),
            "sessions": {str(s): v for s, v in SESSION_VERSIONS.items()},
            "selection": "all test cases" if cases is None else f"{cases} test cases, stratified by label",
            "cases": [{"case_id": c.case_id, "label": c.label} for c in candidates],
            "window_percentiles": list(WINDOW_PERCENTILES),
            "inputs": {
                "clean_manifest": {"path": str(Path(clean_manifest).resolve()),
                                   "sha256": file_sha256(Path(clean_manifest))},
                "encrypted_manifest": {"path": str(Path(encrypted_manifest).resolve()),
                                       "sha256": file_sha256(Path(encrypted_manifest))},
            },
        }
        for name, text in (
            ("key.csv", _key_csv(key_rows)),
            ("study.json", json.dumps(study, indent=2) + "\n"),
            ("README.txt", KEY_README),
        ):
            fd = os.open(key_dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
    return BuildResult(out, seed, n, readers, tuple(classes), tuple(packets))
