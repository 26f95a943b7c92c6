"""``medenc reader-study build``: choose the test cases, blind and shuffle them, write packets and the key.

Session 1 holds the clean images, session 2 the encrypted ones (the paper's order, Fig. 5); the optional
forced-choice session shows both versions of each case side by side in random order. Each reader gets an
independent shuffle per session; every code in the study is distinct. Codes, orders, sides and UIDs come
from a fresh study secret (:mod:`medenc.reader_study.secret`); ``--seed`` only picks the cases. The answer
key and the secret go to ``STUDY_DIR/key/`` only.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medenc.atomic import atomic_directory
from medenc.errors import InputError
from medenc.files import check_output, manifest_inputs, sha256_file
from medenc.reader_study.manifest import StudyCase, load_affine, load_stored_slice, pair_test_cases, stratified_choice
from medenc.reader_study.orientation import display_geometry
from medenc.reader_study.packet import FORCED_CHOICE, SIDES, PacketImage, PacketItem, write_packet
from medenc.reader_study.render import WINDOW_PERCENTILES, display_uint8, packed_png_bytes, png_bytes, to_stored_pair
from medenc.reader_study.secret import StudySecret

# session number -> version shown in it (the paper: clean first, then encrypted)
SESSION_VERSIONS = {1: "original", 2: "encrypted"}
VERSIONS = ("original", "encrypted")
DEFAULT_READERS = ("R1", "R2", "R3")
KEY_COLUMNS = ("code", "reader", "session", "position", "case_id", "version", "label")
FORCED_CHOICE_KEY_COLUMNS = ("code", "reader", "position", "case_id", "label", "changed")
STUDY_FORMAT = "medenc-reader-study"
STUDY_FORMAT_VERSION = 2
# no vowels (no words), no look-alikes (0/O, 1/I/L, 8/B)
CODE_ALPHABET = "CDFGHJKMNPQRTVWXYZ2345679"
CODE_LENGTH = 6
KEY_README = (
    "The answer key of this reader study: which code is which case and version, and the study secret\n"
    "every code, order and UID was drawn from. Never give this folder to a reader; hand out only\n"
    "packets/<reader>/session-<n>/ and packets/<reader>/forced-choice/.\n"
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
    forced_choice: bool = False


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


def draw_codes(slots: Sequence[tuple], secret: StudySecret) -> dict[tuple, str]:
    """A distinct code for every slot (``(reader, session, position)``), each drawn from the secret alone.

    A code depends only on the secret and its slot, so a reader's codes say nothing about anyone else's.
    A code already taken is drawn again with a retry number in its label.
    """
    codes: dict[tuple, str] = {}
    taken: set[str] = set()
    for slot in slots:
        retry = 0
        code = secret.code(CODE_ALPHABET, CODE_LENGTH, "code", *slot)
        while code in taken:
            retry += 1
            code = secret.code(CODE_ALPHABET, CODE_LENGTH, "code", *slot, "retry", retry)
        taken.add(code)
        codes[slot] = code
    return codes


def _render(cases: list[StudyCase]) -> dict[tuple[str, str], PacketImage]:
    """Load, orient and encode every image once (validates everything before anything is written)."""
    rendered: dict[tuple[str, str], PacketImage] = {}
    for case in cases:
        clean, encrypted = load_stored_slice(case.clean), load_stored_slice(case.encrypted)
        if clean.shape != encrypted.shape:
            raise InputError(
                f"case {case.case_id!r}: encrypted slice has shape {encrypted.shape}, clean {clean.shape}",
                path=case.encrypted,
            )
        # one geometry for both versions (the clean slice's): no metadata difference between them
        geometry = display_geometry(load_affine(case.clean), where=case.clean)
        other = display_geometry(load_affine(case.encrypted), where=case.encrypted)
        if (other.transpose, other.flip_rows, other.flip_cols) != (geometry.transpose, geometry.flip_rows,
                                                                   geometry.flip_cols):
            raise InputError(
                f"case {case.case_id!r}: the encrypted slice is stored in another orientation than the clean one",
                path=case.encrypted,
                tip="pass the encrypted manifest made from the same clean slices (same affines)",
            )
        pair = to_stored_pair(geometry.apply(clean), geometry.apply(encrypted))
        for version, stored in zip(VERSIONS, pair, strict=True):
            rendered[case.case_id, version] = PacketImage(
                stored, geometry, png_bytes(display_uint8(stored)), packed_png_bytes(stored)
            )
    return rendered


def _csv(rows: list[dict], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def _same_mtime(folder: Path, stamp: float) -> None:
    """Give every file and folder under ``folder`` one modification time: the write order stays unknown."""
    for path in sorted(folder.rglob("*"), reverse=True):
        os.utime(path, (stamp, stamp), follow_symlinks=False)
    os.utime(folder, (stamp, stamp))


def build_study(
    clean_manifest: str | Path,
    encrypted_manifest: str | Path,
    out: str | Path,
    *,
    cases: int | None = None,
    readers: Sequence[str] = DEFAULT_READERS,
    seed: int | None = None,
    forced_choice: bool = True,
    force: bool = False,
    secret: StudySecret | None = None,
) -> BuildResult:
    """Build a blinded two-session reader study, plus a forced-choice session.

    Args:
        clean_manifest: manifest of the clean slices (``split == test`` rows are used).
        encrypted_manifest: manifest of the encrypted slices (same ``case_id`` values and labels).
        out: the study folder to create.
        cases: how many test cases to use, stratified by label; all when None.
        readers: reader names (folder names of their packets).
        seed: seed of the case selection; a fresh one (recorded in the key) when None.
        forced_choice: also write a forced-choice packet per reader (pairs of both versions).
        force: replace an existing study folder.
        secret: the study secret every code, order, side and UID is drawn from; a fresh one when None
            (pass the one recorded in ``key/study.json`` to rebuild the same study byte for byte).

    Returns:
        A summary of what was written.

    Raises:
        InputError: bad manifests, slices, reader names or case count.
        OutputExistsError: ``out`` exists and ``force`` is False.
    """
    readers = check_readers(readers)
    if seed is None:
        seed = secrets.randbits(63)
    if seed < 0:
        raise InputError(f"--seed must be >= 0; got {seed}")
    secret = secret or StudySecret.fresh()
    candidates, class_names = pair_test_cases(clean_manifest, encrypted_manifest)
    classes = list(class_names)
    if cases is not None:
        chosen = stratified_choice([c.label for c in candidates], cases, np.random.default_rng([seed, 0]))
        candidates = [candidates[i] for i in chosen]
    out = Path(out)
    inputs = [*manifest_inputs(clean_manifest), *manifest_inputs(encrypted_manifest),
              *(p for c in candidates for p in (c.clean, c.encrypted))]
    check_output(out, inputs=inputs, force=force, what="study folder")
    rendered = _render(candidates)
    label_of = {c.case_id: c.label for c in candidates}
    ids = [c.case_id for c in candidates]
    sessions: list[int | str] = [*SESSION_VERSIONS, *([FORCED_CHOICE] if forced_choice else [])]
    orders = {(r, s): secret.shuffle(ids, "order", r, s) for r in readers for s in sessions}
    codes = draw_codes([(r, s, p) for r in readers for s in sessions for p in range(1, len(ids) + 1)], secret)

    key_rows: list[dict] = []
    choice_rows: list[dict] = []
    packets: list[Path] = []
    stamp = float(int(time.time()))
    with atomic_directory(out, force=force, inputs=inputs) as tmp:
        for reader in readers:
            for session in sessions:
                items = []
                for position, case_id in enumerate(orders[reader, session], start=1):
                    code = codes[reader, session, position]
                    if session == FORCED_CHOICE:
                        changed = SIDES[int(secret.coin("side", reader, case_id))]
                        views = (rendered[case_id, "encrypted"], rendered[case_id, "original"])
                        items.append(PacketItem(code, views if changed == "A" else views[::-1]))
                        choice_rows.append({"code": code, "reader": reader, "position": position, "case_id": case_id,
                                            "label": label_of[case_id], "changed": changed})
                    else:
                        version = SESSION_VERSIONS[int(session)]
                        items.append(PacketItem(code, (rendered[case_id, version],)))
                        key_rows.append({"code": code, "reader": reader, "session": session, "position": position,
                                         "case_id": case_id, "version": version, "label": label_of[case_id]})
                name = FORCED_CHOICE if session == FORCED_CHOICE else f"session-{session}"
                folder = Path("packets") / reader / name
                write_packet(tmp / folder, reader=reader, session=session, sessions=len(SESSION_VERSIONS),
                             items=items, classes=classes, secret=secret)
                packets.append(out / folder)
        _same_mtime(tmp / "packets", stamp)
        key_dir = tmp / "key"
        key_dir.mkdir(mode=0o700)
        study = {
            "format": STUDY_FORMAT,
            "format_version": STUDY_FORMAT_VERSION,
            "seed": seed,
            "secret": secret.hex(),
            "classes": classes,
            "readers": list(readers),
            "sessions": {str(s): v for s, v in SESSION_VERSIONS.items()},
            "forced_choice": forced_choice,
            "selection": "all test cases" if cases is None else f"{cases} test cases, stratified by label",
            "cases": [{"case_id": c.case_id, "label": c.label} for c in candidates],
            "window_percentiles": list(WINDOW_PERCENTILES),
            "inputs": {
                name: {"path": str(Path(path).resolve()), "sha256": sha256_file(path)}
                for name, path in (("clean_manifest", clean_manifest), ("encrypted_manifest", encrypted_manifest))
            },
        }
        files = [("key.csv", _csv(key_rows, KEY_COLUMNS)), ("study.json", json.dumps(study, indent=2) + "\n"),
                 ("README.txt", KEY_README)]
        if forced_choice:
            files.append(("forced-choice.csv", _csv(choice_rows, FORCED_CHOICE_KEY_COLUMNS)))
        for name, text in files:
            _write_private(key_dir / name, text)
    return BuildResult(out, seed, len(ids), readers, tuple(classes), tuple(packets), forced_choice)
