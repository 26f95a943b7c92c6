"""``medenc reader-study score``: compare each reader's diagnoses on the clean and encrypted images, and score
the forced-choice session.

Per reader and pooled over readers: accuracy per version, the paper's Fig. 6 concordance table, an exact
McNemar test of the discordant pairs, the paired accuracy difference with Tango's score interval and a
non-inferiority test, Cohen's kappa between the sessions' diagnoses, a confusion matrix per version, and the
forced-choice detection rate with its exact interval and binomial test against 50%. Writes ``report.json``,
``report.md`` and PNG charts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medenc.atomic import atomic_directory
from medenc.files import check_output
from medenc.reader_study.answers import AnswerSet, Study, load_study, read_answers
from medenc.reader_study.report import POOLED, VERSIONS, report_markdown
from medenc.reader_study.stats import (
    clopper_pearson,
    cohen_kappa,
    concordance,
    confusion_matrix,
    detection_rate,
    mcnemar_exact,
    paired_difference,
)

DEFAULT_MARGIN = 0.05


@dataclass(frozen=True)
class ScoreResult:
    """The report (as written to ``report.json``), the warnings and the output folder."""

    report: dict
    warnings: list[str]
    out: Path


def _block(study: Study, answers: AnswerSet, readers: Sequence[str], margin: float) -> dict:
    """All statistics of the diagnostic sessions for the given readers (one reader, or all pooled)."""
    classes = study.classes
    # (reader, case) -> {version: key entry}
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for code, entry in study.key.items():
        if entry.reader in readers:
            cells.setdefault((entry.reader, entry.case_id), {"label": entry.label})[entry.version] = code
    accuracy, confusion, confidence = {}, {}, {}
    for version in VERSIONS:
        truth, dx, conf = [], [], []
        for cell in cells.values():
            answer = answers.answers.get(cell.get(version, ""))
            if answer is not None:
                truth.append(cell["label"])
                dx.append(answer.diagnosis)
                if answer.confidence is not None:
                    conf.append(answer.confidence)
        correct = sum(t == d for t, d in zip(truth, dx, strict=True))
        ci = clopper_pearson(correct, len(dx))
        accuracy[version] = {
            "correct": correct,
            "answered": len(dx),
            "missing": len(cells) - len(dx),
            "accuracy": correct / len(dx) if dx else None,
            "ci95": list(ci) if ci else None,
        }
        confusion[version] = confusion_matrix(truth, dx, classes)
        confidence[version] = {"mean": sum(conf) / len(conf) if conf else None, "n": len(conf)}
    truth, first, second = [], [], []
    for cell in cells.values():
        a = answers.answers.get(cell.get("original", ""))
        b = answers.answers.get(cell.get("encrypted", ""))
        if a is not None and b is not None:
            truth.append(cell["label"])
            first.append(a.diagnosis)
            second.append(b.diagnosis)
    table = concordance(truth, first, second)
    b, c = table.original_only_correct, table.encrypted_only_correct
    acc_o, acc_e = accuracy["original"]["accuracy"], accuracy["encrypted"]["accuracy"]
    return {
        "readers": list(readers),
        "cases": len({case for _, case in cells}),
        "accuracy": accuracy,
        "accuracy_difference": None if acc_o is None or acc_e is None else acc_e - acc_o,
        "paired_difference": paired_difference(b, c, table.pairs, margin=margin),
        "concordance": table.to_dict(),
        "mcnemar": {
            "original_only_correct": b,
            "encrypted_only_correct": c,
            "discordant": b + c,
            "p_value": mcnemar_exact(b, c),
            "method": "exact, two-sided: 2 * P(X <= min(b, c)), X ~ Binomial(b + c, 1/2)",
        },
        "kappa": cohen_kappa(first, second, classes).to_dict(),
        "confusion": confusion,
        "confidence": confidence,
    }


def _forced_choice(study: Study, answers: AnswerSet, readers: Sequence[str]) -> dict:
    """Detection rate of the changed image in the forced-choice session, for the given readers."""
    trials = [t for t in study.trials.values() if t.reader in readers]
    answered = [(t, answers.answers[t.code]) for t in trials if t.code in answers.answers]
    detected = sum(a.changed == t.changed for t, a in answered)
    conf = [a.confidence for _, a in answered if a.confidence is not None]
    return {
        "readers": list(readers),
        **detection_rate(detected, len(answered)),
        "missing": len(trials) - len(answered),
        "encrypted_on_a": sum(t.changed == "A" for t in trials),
        "confidence": {"mean": sum(conf) / len(conf) if conf else None, "n": len(conf)},
    }


def score_answers(study: Study, answers: AnswerSet, *, margin: float = DEFAULT_MARGIN) -> dict:
    """The full report: study facts, validation counts, one block per reader, a pooled block, forced choice."""
    readers = study.readers
    scored = "forced_choice" in answers.parts
    return {
        "format": "medenc-reader-study-report",
        "format_version": 2,
        "classes": study.classes,
        "sessions": study.info["sessions"],
        "cases": len(study.info["cases"]),
        "readers": readers,
        "non_inferiority_margin": margin,
        "validation": {**answers.counts, "warnings": answers.warnings, "parts": list(answers.parts)},
        "per_reader": {r: _block(study, answers, [r], margin) for r in readers},
        POOLED: _block(study, answers, readers, margin),
        "forced_choice": None if not scored else {
            "per_reader": {r: _forced_choice(study, answers, [r]) for r in readers},
            POOLED: _forced_choice(study, answers, readers),
        },
    }


def score_study(
    study_dir: str | Path,
    answer_files: Sequence[str | Path],
    out: str | Path,
    *,
    partial: bool = False,
    margin: float = DEFAULT_MARGIN,
    force: bool = False,
) -> ScoreResult:
    """Validate the answers, compute the statistics and write the report folder.

    Args:
        study_dir: the folder made by :func:`medenc.reader_study.build_study`.
        answer_files: the readers' answer CSV files (diagnostic sessions and forced choice, mixed at will).
        out: the report folder to create (``report.json``, ``report.md``, ``*.png``).
        partial: accept incomplete or partly invalid answers (with warnings).
        margin: the non-inferiority margin of the accuracy difference, a proportion (0.05 = 5 points).
        force: replace an existing report folder.

    Raises:
        InputError: invalid answers (strict mode), a margin outside [0, 1), or not a study folder.
        OutputExistsError: ``out`` exists and ``force`` is False.
    """
    from medenc.errors import InputError
    from medenc.reader_study.charts import write_charts

    if not 0 <= margin < 1:
        raise InputError(f"the non-inferiority margin must be between 0 and 100 points; got {100 * margin:g}")
    study = load_study(study_dir)
    check_output(out, inputs=[study_dir, *answer_files], force=force, what="report folder")
    answers = read_answers(answer_files, study, partial=partial)
    report = score_answers(study, answers, margin=margin)
    out = Path(out)
    inputs = [*answer_files, *(p for p in (Path(study_dir) / "key").iterdir())]  # never replace the study's key
    with atomic_directory(out, force=force, inputs=inputs) as tmp:
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (tmp / "report.md").write_text(report_markdown(report), encoding="utf-8")
        write_charts(report, tmp)
    return ScoreResult(report, answers.warnings, out)
