"""Read a study's answer key and the readers' answer files, and check the answers against the key.

A study has two parts: the diagnostic sessions (codes of ``key/key.csv``, answered with a diagnosis) and,
when built, the forced-choice session (codes of ``key/forced-choice.csv``, answered with the changed side,
A or B). Codes tell the parts apart, so answer files may mix them. A part with no answer at all is not
scored (it may not have been read yet); in a part that has answers, strict checking applies: an unknown
code, a code answered twice, a code without an answer, a diagnosis outside the class list, a side other
than A or B, or a confidence outside 1-5 is an :class:`InputError`. With ``partial=True`` each problem
becomes a warning; the affected images count as missing.
"""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medenc.errors import InputError

_EXAMPLES = 3


@dataclass(frozen=True)
class KeyEntry:
    """One row of the answer key: which case and version a code shows to which reader in which session."""

    code: str
    reader: str
    session: int
    position: int
    case_id: str
    version: str
    label: str


@dataclass(frozen=True)
class TrialEntry:
    """One row of the forced-choice key: which case a pair shows, and on which side the encrypted image is."""

    code: str
    reader: str
    position: int
    case_id: str
    label: str
    changed: str


@dataclass(frozen=True)
class Study:
    """A built study as the scorer sees it: its description (``study.json``) and its keys by code."""

    folder: Path
    info: dict
    key: dict[str, KeyEntry]
    trials: dict[str, TrialEntry] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        """The diagnoses readers choose from."""
        return list(self.info["classes"])

    @property
    def readers(self) -> list[str]:
        """The readers, in build order."""
        return list(self.info["readers"])


@dataclass(frozen=True)
class Answer:
    """A validated answer to one code."""

    code: str
    diagnosis: str  # diagnostic sessions ("" for a forced-choice answer)
    confidence: int | None
    comment: str
    changed: str = ""  # forced choice: the side marked as changed, "A" or "B"


@dataclass
class AnswerSet:
    """Answers by code plus what was wrong with the input (filled in partial mode)."""

    answers: dict[str, Answer]
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    parts: tuple[str, ...] = ()  # the parts with answers: "sessions", "forced_choice"


def _read_key(path: Path, make, taken: set[str]) -> dict:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    key = {}
    for row in rows:
        entry = make(row)
        if entry.code in key or entry.code in taken:
            raise ValueError(f"code {entry.code} appears twice")
        key[entry.code] = entry
    return key


def load_study(folder: str | Path) -> Study:
    """Load ``STUDY_DIR/key/study.json``, ``key.csv`` and, if the study has one, ``forced-choice.csv``.

    Raises:
        InputError: not a study folder, or a damaged key.
    """
    folder = Path(folder)
    info_path, key_path = folder / "key" / "study.json", folder / "key" / "key.csv"
    choice_path = folder / "key" / "forced-choice.csv"
    if not info_path.is_file() or not key_path.is_file():
        raise InputError("not a reader-study folder (key/study.json or key/key.csv missing)", path=folder,
                         tip="pass the folder made by `medenc reader-study build`")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        key = _read_key(key_path, lambda r: KeyEntry(r["code"], r["reader"], int(r["session"]), int(r["position"]),
                                                     r["case_id"], r["version"], r["label"]), set())
        trials = {}
        if info.get("forced_choice"):
            trials = _read_key(choice_path, lambda r: TrialEntry(r["code"], r["reader"], int(r["position"]),
                                                                 r["case_id"], r["label"], r["changed"]), set(key))
        info["classes"], info["readers"], info["sessions"]
    except (ValueError, KeyError, TypeError, OSError) as error:
        raise InputError(f"damaged study key ({error})", path=folder / "key") from error
    return Study(folder, info, key, trials)


def _sniff_delimiter(first_line: str) -> str:
    for delimiter in (",", ";", "\t"):
        if delimiter in first_line:
            return delimiter
    return ","


def _read_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    if not path.is_file():
        raise InputError("answers file not found", path=path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        text = path.read_text(encoding="latin-1")
    lines = text.splitlines()
    if not lines:
        raise InputError("answers file is empty", path=path)
    reader = csv.DictReader(lines, delimiter=_sniff_delimiter(lines[0]))
    header = {(name or "").strip().lower() for name in reader.fieldnames or []}
    if "code" not in header or not header & {"diagnosis", "changed"}:
        found = ", ".join(sorted(header))
        raise InputError(f"expected columns code,diagnosis[,confidence,comment] (or code,changed,... for the "
                         f"forced-choice session); found {found}", path=path)
    rows = []
    for line_no, raw in enumerate(reader, start=2):
        # extra cells beyond the header arrive as a list under the key None: ignored
        row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if isinstance(k, str)}
        if any(row.values()):
            rows.append((line_no, row))
    return rows


def _summary(items: Sequence[str]) -> str:
    shown = "; ".join(items[:_EXAMPLES])
    return shown + (f"; and {len(items) - _EXAMPLES} more" if len(items) > _EXAMPLES else "")


def _confidence(raw: str) -> int | None:
    """An integer 1-5, or None when blank; ValueError otherwise."""
    if not raw:
        return None
    value = int(float(raw))
    if value != float(raw) or not 1 <= value <= 5:
        raise ValueError(raw)
    return value


def read_answers(paths: Sequence[str | Path], study: Study, *, partial: bool = False) -> AnswerSet:
    """Read, normalise and validate answer files against the study keys.

    Codes are matched ignoring case and surrounding blanks; diagnoses are matched to the class names
    ignoring case and repeated blanks, sides (``A``/``B``) ignoring case. A blank answer means "not
    answered". The diagnostic sessions are checked when any of their codes has an answer or when the
    forced-choice session has none; the forced-choice session when any of its codes has an answer.

    Args:
        paths: the answer CSV files (``code,diagnosis[,confidence,comment]`` or ``code,changed,...``), any
            split across files.
        study: the loaded study.
        partial: turn problems into warnings (the images concerned count as missing).

    Returns:
        The valid answers by code, the warnings, counts of each kind of problem and the parts scored.

    Raises:
        InputError: in strict mode, listing every kind of problem found (with examples).
    """
    if not paths:
        raise InputError("no answers file given", tip="pass one or more --answers FILE.csv")
    by_name = {" ".join(c.split()).casefold(): c for c in study.classes}
    seen: dict[str, list[tuple[str, Answer]]] = defaultdict(list)
    unknown, invalid, bad_side, bad_confidence = [], [], [], []
    for path in map(Path, paths):
        for line_no, row in _read_rows(path):
            where = f"{path.name} line {line_no}"
            code = row.get("code", "").upper()
            diagnosis = changed = ""
            if code in study.key:
                raw = row.get("diagnosis", "")
                diagnosis = by_name.get(" ".join(raw.split()).casefold(), "") if raw else ""
                if raw and not diagnosis:
                    invalid.append(f"{where}: {raw!r}")
            elif code in study.trials:
                raw = row.get("changed", "")
                changed = raw.upper() if raw.upper() in ("A", "B") else ""
                if raw and not changed:
                    bad_side.append(f"{where}: {raw!r}")
            else:
                unknown.append(f"{where}: {code or '(blank)'}")
                continue
            try:
                confidence = _confidence(row.get("confidence", ""))
            except ValueError:
                bad_confidence.append(f"{where}: {row.get('confidence', '')!r}")
                confidence = None
            seen[code].append((where, Answer(code, diagnosis, confidence, row.get("comment", ""), changed)))

    answers: dict[str, Answer] = {}
    duplicates = []
    for code, found in seen.items():
        if len(found) > 1:
            duplicates.append(f"{code} ({', '.join(w for w, _ in found)})")
            if len({(a.diagnosis, a.changed, a.confidence) for _, a in found}) > 1:
                continue  # conflicting answers: none is trusted
        answer = found[0][1]
        if answer.diagnosis or answer.changed:
            answers[code] = answer
    forced = any(code in study.trials for code in answers)
    parts = tuple(name for name, scored in (("sessions", not forced or any(c in study.key for c in answers)),
                                            ("forced_choice", forced)) if scored)
    missing_by_packet = Counter((e.reader, f"session {e.session}") for code, e in study.key.items()
                                if code not in answers and "sessions" in parts)
    missing_by_packet.update((e.reader, "forced choice") for code, e in study.trials.items()
                             if code not in answers and forced)
    missing = [f"reader {r} {s}: {k} image(s)" for (r, s), k in sorted(missing_by_packet.items())]
    problems = [
        (unknown, "unknown code(s)"),
        (duplicates, "code(s) answered more than once"),
        (invalid, f"diagnosis(es) not in the class list ({', '.join(study.classes)})"),
        (bad_side, "forced-choice answer(s) not A or B"),
        (bad_confidence, "confidence value(s) not an integer 1-5"),
        (missing, "missing answer(s)"),
    ]
    counts = {
        "unknown_codes": len(unknown),
        "duplicate_codes": len(duplicates),
        "invalid_diagnoses": len(invalid),
        "invalid_sides": len(bad_side),
        "invalid_confidences": len(bad_confidence),
        "missing": sum(missing_by_packet.values()),
        "answered": len(answers),
        "expected": len(study.key) * ("sessions" in parts) + len(study.trials) * forced,
    }
    messages = [f"{len(items) if items is not missing else counts['missing']} {what}: {_summary(items)}"
                for items, what in problems if items]
    if messages and not partial:
        raise InputError(
            "answers do not fit the study: " + " | ".join(messages),
            path=Path(paths[0]) if len(paths) == 1 else None,
            tip="correct the answer files, or pass --partial to score what is there",
        )
    return AnswerSet(answers, messages, counts, parts)
