"""``medenc reader-study score``: compare each reader's diagnoses on the clean and encrypted images.

Per reader and pooled over readers: accuracy per version, the paper's Fig. 6 concordance table, an exact
McNemar test of the discordant pairs, Cohen's kappa between the sessions' diagnoses and a confusion matrix
per version. Writes ``report.json``, ``report.md`` and PNG charts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medenc.atomic import atomic_directory
from medenc.files import check_output
from medenc.reader_study.answers import AnswerSet, Study, load_study, read_answers
from medenc.reader_study.stats import (
    clopper_pearson,
    cohen_kappa,
    concordance,
    confusion_matrix,
    mcnemar_exact,
    paired_difference,
)

VERSIONS = ("original", "encrypted")
POOLED = "pooled"


@dataclass(frozen=True)
class ScoreResult:
    """The report (as written to ``report.json``), the warnings and the output folder."""

    report: dict
    warnings: list[str]
    out: Path


def _block(study: Study, answers: AnswerSet, readers: Sequence[str]) -> dict:
    """All statistics for the given readers (one reader, or all of them pooled)."""
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
        "paired_difference": paired_difference(b, c, table.pairs),
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


def score_answers(study: Study, answers: AnswerSet) -> dict:
    """The full report: study facts, validation counts, one block per reader and a pooled block."""
    readers = study.readers
    return {
        "format": "medenc-reader-study-report",
        "format_version": 1,
        "classes": study.classes,
        "sessions": study.info["sessions"],
        "cases": len(study.info["cases"]),
        "readers": readers,
        "validation": {**answers.counts, "warnings": answers.warnings},
        "per_reader": {r: _block(study, answers, [r]) for r in readers},
        POOLED: _block(study, answers, readers),
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def report_markdown(report: dict) -> str:
    """The report as Markdown (tables per reader and pooled, confusion matrices, chart links)."""
    rows = [*report["per_reader"].items(), (POOLED, report[POOLED])]
    v = report["validation"]
    out = [
        "# Reader study report",
        "",
        f"{report['cases']} cases, {len(report['readers'])} reader(s) ({', '.join(report['readers'])}); "
        f"session 1 = {report['sessions']['1']} images, session 2 = {report['sessions']['2']} images. "
        f"Answers: {v['answered']} of {v['expected']} images ({v['missing']} missing).",
        "",
    ]
    if v["warnings"]:
        out += ["**Warnings (scored with --partial):**", "", *[f"- {w}" for w in v["warnings"]], ""]
    out += [
        "## Concordance of paired diagnoses (paper Fig. 6)",
        "",
        "| reader | same, correct | same, wrong | correct on original only | correct on encrypted only "
        "| different, both wrong | pairs |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, block in rows:
        t = block["concordance"]
        out.append(f"| {name} | {t['same_correct']} | {t['same_wrong']} | {t['original_only_correct']} | "
                   f"{t['encrypted_only_correct']} | {t['different_both_wrong']} | {t['pairs']} |")
    out += [
        "",
        "## Accuracy, McNemar and kappa",
        "",
        "| reader | accuracy original (95% CI) | accuracy encrypted (95% CI) | paired difference (95% CI) "
        "| McNemar exact p | Cohen's kappa (95% CI) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, block in rows:
        cells = []
        for version in VERSIONS:
            a = block["accuracy"][version]
            ci = a["ci95"]
            cells.append(f"{_pct(a['accuracy'])} ({a['correct']}/{a['answered']}"
                         + (f"; {_pct(ci[0])}-{_pct(ci[1])})" if ci else ")"))
        k = block["kappa"]
        kci = f" ({_num(k['ci95'][0], 2)} to {_num(k['ci95'][1], 2)})" if k["ci95"] else ""
        diff = block["paired_difference"]
        diff_text = "n/a"
        if diff["estimate"] is not None:
            lo, hi = diff["ci95"]
            diff_text = f"{100 * diff['estimate']:+.1f} pp ({100 * lo:+.1f} to {100 * hi:+.1f})"
        out.append(f"| {name} | {cells[0]} | {cells[1]} | {diff_text} "
                   f"| {_num(block['mcnemar']['p_value'], 4)} | {_num(k['kappa'])}{kci} |")
    out += ["", "## Confusion matrices (pooled; rows = true class, columns = diagnosis)", ""]
    classes = report["classes"]
    for version in VERSIONS:
        out += [f"**{version}**", "", "| true \\ diagnosis | " + " | ".join(classes) + " |",
                "|---|" + "---:|" * len(classes)]
        for name, counts in zip(classes, report[POOLED]["confusion"][version], strict=True):
            out.append(f"| {name} | " + " | ".join(str(n) for n in counts) + " |")
        out.append("")
    out += [
        "## Charts",
        "",
        "![accuracy](accuracy.png)",
        "",
        "![concordance](concordance.png)",
        "",
        "![confusion](confusion.png)",
        "",
        "## Reading this report",
        "",
        "- McNemar compares the two discordant cells (correct on one version only); a large p-value means "
        "no detectable difference, not proof of equivalence: look at the interval of the paired difference "
        "(encrypted minus original accuracy over cases read in both sessions; Wald, approximate) and the "
        "number of pairs.",
        "- The pooled test treats every reader-case pair as independent, which overstates the evidence when "
        "readers share cases; prefer the per-reader rows for inference.",
        "- Kappa measures agreement between the two sessions' diagnoses beyond chance (1 = identical).",
        "",
    ]
    return "\n".join(out)


def score_study(
    study_dir: str | Path,
    answer_files: Sequence[str | Path],
    out: str | Path,
    *,
    partial: bool = False,
    force: bool = False,
) -> ScoreResult:
    """Validate the answers, compute the statistics and write the report folder.

    Args:
        study_dir: the folder made by :func:`medenc.reader_study.build_study`.
        answer_files: the readers' answer CSV files.
        out: the report folder to create (``report.json``, ``report.md``, ``*.png``).
        partial: accept incomplete or partly invalid answers (with warnings).
        force: replace an existing report folder.

    Raises:
        InputError: invalid answers (strict mode) or not a study folder.
        OutputExistsError: ``out`` exists and ``force`` is False.
    """
    from medenc.reader_study.charts import write_charts

    study = load_study(study_dir)
    check_output(out, inputs=[study_dir, *answer_files], force=force, what="report folder")
    answers = read_answers(answer_files, study, partial=partial)
    report = score_answers(study, answers)
    out = Path(out)
    with atomic_directory(out, force=force) as tmp:
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (tmp / "report.md").write_text(report_markdown(report), encoding="utf-8")
        write_charts(report, tmp)
    return ScoreResult(report, answers.warnings, out)
