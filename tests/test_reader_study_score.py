"""``medenc reader-study score``: statistics against hand-computed values, answer validation, the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from scipy.stats import binomtest

from medenc.errors import InputError
from medenc.reader_study import build_study, score_study, simulate_answers
from medenc.reader_study.answers import load_study, read_answers
from medenc.reader_study.stats import (
    clopper_pearson,
    cohen_kappa,
    concordance,
    mcnemar_exact,
    paired_difference,
)
from tests.test_reader_study_build import read_key, write_dataset

A, B, G = "alphaoma", "betaoma", "gammaoma"
LABELS = [A, A, B, G, A, B, B, G, G, A, G, B]
# reader R1's (clean, encrypted) diagnosis per case, designed for the hand-computed table below
R1 = [(A, A), (A, A), (B, B), (G, G), (B, B), (B, A), (B, G), (G, A), (G, B), (A, G), (G, B), (A, G)]


# ---- the statistics on their own ----

def test_mcnemar_exact_by_hand_and_against_scipy():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(6, 0) == pytest.approx(2 / 64)  # 2 * P(X <= 0), X ~ Bin(6, 1/2)
    assert mcnemar_exact(1, 3) == pytest.approx(2 * (1 + 4) / 16)  # 0.625
    assert mcnemar_exact(5, 5) == 1.0
    for b, c in [(0, 7), (2, 9), (10, 3), (4, 5), (1, 12), (20, 8)]:
        assert mcnemar_exact(b, c) == pytest.approx(binomtest(b, b + c, 0.5).pvalue)
        assert mcnemar_exact(b, c) == mcnemar_exact(c, b)


def test_cohen_kappa_by_hand():
    first = [A, A, B, G, B, B, B, G, G, A, G, A]
    second = [A, A, B, G, B, A, G, A, B, G, B, G]
    k = cohen_kappa(first, second, [A, B, G])
    # p_o = 5/12; each marginal is 4/12 per class, so p_e = 3 * (1/3)^2 = 1/3; kappa = (5/12 - 1/3) / (2/3)
    assert (k.observed, k.expected, k.kappa) == pytest.approx((5 / 12, 1 / 3, 1 / 8))
    assert k.ci95[0] < 1 / 8 < k.ci95[1]
    assert cohen_kappa([A, B, A], [A, B, A], [A, B, G]).kappa == pytest.approx(1.0)
    assert cohen_kappa([A, A], [A, A], [A, B]).kappa is None  # p_e == 1: undefined
    assert cohen_kappa([], [], [A]).kappa is None
    # perfect disagreement between two balanced raters: p_o = 0, p_e = 1/2 -> kappa = -1
    assert cohen_kappa([A, B], [B, A], [A, B]).kappa == pytest.approx(-1.0)


def test_clopper_pearson_and_paired_difference():
    for k, n in [(0, 10), (3, 10), (10, 10), (17, 20)]:
        ci = binomtest(k, n).proportion_ci(method="exact")
        assert clopper_pearson(k, n) == pytest.approx((ci.low, ci.high))
    assert clopper_pearson(0, 0) is None
    d = paired_difference(6, 0, 12)
    assert d["estimate"] == pytest.approx(-0.5)
    assert d["ci95"] == pytest.approx([-0.5 - 1.96 * (6 - 36 / 12) ** 0.5 / 12, -0.5 + 1.96 * (3**0.5) / 12])


def test_concordance_cells():
    truth = [A, A, A, A, A]
    table = concordance(truth, [A, B, A, B, B], [A, B, B, A, G])
    assert table.to_dict() == {"same_correct": 1, "same_wrong": 1, "original_only_correct": 1,
                               "encrypted_only_correct": 1, "different_both_wrong": 1, "pairs": 5}


# ---- a study scored end to end ----

@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("score")
    clean, enc = write_dataset(root / "data", LABELS)
    build_study(clean, enc, root / "study", readers=["R1", "R2"], seed=3)
    return root / "study"


def designed_answers(study: Path, folder: Path) -> list[Path]:
    """R1 answers as in ``R1``; R2 is always right. One file per reader and session, in packet order."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    rows = sorted(read_key(study), key=lambda r: (r["reader"], r["session"], int(r["position"])))
    for reader in ("R1", "R2"):
        for session in ("1", "2"):
            path = folder / f"{reader}-{session}.csv"
            with path.open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["code", "diagnosis", "confidence", "comment"])
                for row in rows:
                    if (row["reader"], row["session"]) != (reader, session):
                        continue
                    case = int(row["case_id"].split("-")[1])
                    dx = R1[case][int(session) - 1] if reader == "R1" else row["label"]
                    writer.writerow([row["code"], dx, 3, "note, with comma"])
            files.append(path)
    return files


def test_hand_computed_report(study, tmp_path):
    result = score_study(study, designed_answers(study, tmp_path / "answers"), tmp_path / "report")
    report = result.report
    r1, r2, pooled = report["per_reader"]["R1"], report["per_reader"]["R2"], report["pooled"]
    assert r1["concordance"] == {"same_correct": 4, "same_wrong": 1, "original_only_correct": 6,
                                 "encrypted_only_correct": 0, "different_both_wrong": 1, "pairs": 12}
    assert r1["mcnemar"]["p_value"] == pytest.approx(0.03125)
    assert r1["kappa"]["kappa"] == pytest.approx(0.125)
    assert r1["accuracy"]["original"]["accuracy"] == pytest.approx(10 / 12)
    assert r1["accuracy"]["encrypted"]["accuracy"] == pytest.approx(4 / 12)
    assert r1["paired_difference"]["estimate"] == pytest.approx(-0.5)
    # rows = true class (alpha, beta, gamma), columns = diagnosis
    assert r1["confusion"]["original"] == [[3, 1, 0], [1, 3, 0], [0, 0, 4]]
    assert r1["confusion"]["encrypted"] == [[2, 1, 1], [1, 1, 2], [1, 2, 1]]
    assert r2["concordance"]["same_correct"] == 12 and r2["mcnemar"]["p_value"] == 1.0
    assert r2["kappa"]["kappa"] == pytest.approx(1.0)
    assert pooled["concordance"] == {"same_correct": 16, "same_wrong": 1, "original_only_correct": 6,
                                     "encrypted_only_correct": 0, "different_both_wrong": 1, "pairs": 24}
    assert pooled["mcnemar"]["p_value"] == pytest.approx(0.03125)
    assert pooled["kappa"]["kappa"] == pytest.approx(9 / 16)  # p_o = 17/24, p_e = 1/3
    assert pooled["confidence"]["original"] == {"mean": 3.0, "n": 24}
    assert report["validation"]["missing"] == 0 and result.warnings == []
    out = tmp_path / "report"
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))
    md = (out / "report.md").read_text()
    assert "| R1 | 4 | 1 | 6 | 0 | 1 | 12 |" in md and "| pooled | 16 | 1 | 6 | 0 | 1 | 24 |" in md
    for chart in ("accuracy.png", "concordance.png", "confusion.png"):
        assert (out / chart).read_bytes()[:4] == b"\x89PNG"


def _rewrite(path: Path, edit) -> None:
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(edit(rows))


@pytest.mark.parametrize(
    ("edit", "problem", "count_key"),
    [
        (lambda rows: [*rows, ["ZZZZZZ", A, "", ""]], "unknown code", "unknown_codes"),
        (lambda rows: [*rows, [rows[1][0], G if rows[1][1] != G else A, "", ""]], "more than once",
         "duplicate_codes"),
        (lambda rows: rows[:-2], "missing", "missing"),
        (lambda rows: [rows[0], [rows[1][0], "glioma", "", ""], *rows[2:]], "not in the class list",
         "invalid_diagnoses"),
        (lambda rows: [rows[0], [rows[1][0], rows[1][1], "7", ""], *rows[2:]], "confidence",
         "invalid_confidences"),
    ],
)
def test_answer_validation(study, tmp_path, edit, problem, count_key):
    files = designed_answers(study, tmp_path / "answers")
    _rewrite(files[0], edit)
    with pytest.raises(InputError, match=problem):
        score_study(study, files, tmp_path / "strict")
    assert not (tmp_path / "strict").exists()
    result = score_study(study, files, tmp_path / "partial", partial=True)
    assert result.report["validation"][count_key] >= 1
    assert any(problem in w for w in result.warnings)
    expected_missing = {"missing": 2, "duplicate_codes": 1, "invalid_diagnoses": 1}.get(count_key, 0)
    assert result.report["validation"]["missing"] == expected_missing
    assert result.report["validation"]["answered"] == 48 - expected_missing


def test_lenient_spelling_and_delimiters(study, tmp_path):
    files = designed_answers(study, tmp_path / "answers")
    def shout(rows):  # lower-case codes, upper-case padded diagnoses
        return [rows[0], *[[r[0].lower(), f" {r[1].upper()} ", *r[2:]] for r in rows[1:]]]

    _rewrite(files[0], shout)
    text = files[1].read_text().replace(",", ";").replace("note; with comma", "note")
    files[1].write_text("\ufeff" + text)  # a spreadsheet's BOM and semicolons
    study_obj = load_study(study)
    answers = read_answers(files, study_obj)
    assert len(answers.answers) == 48 and answers.warnings == []
    assert {a.diagnosis for a in answers.answers.values()} <= {A, B, G}
    assert {a.comment for a in answers.answers.values()} == {"note, with comma", "note"}


def test_missing_reader_needs_partial_and_is_reported(study, tmp_path):
    files = designed_answers(study, tmp_path / "answers")[:2]  # R1 only
    with pytest.raises(InputError, match="reader R2 session 1: 12"):
        score_study(study, files, tmp_path / "r")
    report = score_study(study, files, tmp_path / "r", partial=True).report
    assert report["per_reader"]["R2"]["accuracy"]["original"] == {
        "correct": 0, "answered": 0, "missing": 12, "accuracy": None, "ci95": None}
    assert report["per_reader"]["R2"]["kappa"]["kappa"] is None
    assert report["pooled"]["concordance"]["pairs"] == 12


def test_simulated_readers_with_known_behaviour(study, tmp_path):
    perfect = simulate_answers(study, tmp_path / "perfect", accuracy_original=1, accuracy_encrypted=1)
    report = score_study(study, perfect, tmp_path / "r1").report
    assert report["pooled"]["accuracy"]["original"]["accuracy"] == 1.0
    assert report["pooled"]["concordance"]["same_correct"] == 24
    assert report["pooled"]["mcnemar"]["p_value"] == 1.0 and report["pooled"]["kappa"]["kappa"] == 1.0
    # a reader fine on clean images but always wrong on fresh reads of encrypted ones
    failing = simulate_answers(study, tmp_path / "fail", accuracy_original=1, accuracy_encrypted=0,
                               consistency=0)
    pooled = score_study(study, failing, tmp_path / "r2").report["pooled"]
    assert pooled["concordance"]["original_only_correct"] == 24
    assert pooled["mcnemar"]["p_value"] == pytest.approx(2 / 2**24)
    skipped = simulate_answers(study, tmp_path / "skip", skip=0.5, seed=1)
    with pytest.raises(InputError, match="missing"):
        score_study(study, skipped, tmp_path / "r3")
    assert score_study(study, skipped, tmp_path / "r3", partial=True).report["validation"]["missing"] > 0


def test_cli_build_simulate_score(tmp_path):
    from typer.testing import CliRunner

    from medenc.cli import app

    clean, enc = write_dataset(tmp_path / "data", LABELS)
    runner = CliRunner()
    study = tmp_path / "study"
    result = runner.invoke(app, ["reader-study", "build", "--clean", str(clean), "--encrypted", str(enc),
                                 "--out", str(study), "--cases", "6", "--readers", "R1,R2", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert len(read_key(study)) == 2 * 2 * 6
    result = runner.invoke(app, ["reader-study", "simulate", str(study), "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    files = sorted(str(p) for p in (tmp_path / "a").glob("*.csv"))
    result = runner.invoke(app, ["reader-study", "score", str(study), "--answers", *files,
                                 "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    assert "McNemar exact p" in result.output and (tmp_path / "report" / "report.md").is_file()
    bad = tmp_path / "bad.csv"
    bad.write_text("code,diagnosis\nNOSUCH,alphaoma\n")
    result = runner.invoke(app, ["reader-study", "score", str(study), "--answers", str(bad),
                                 "--out", str(tmp_path / "r2")])
    assert result.exit_code == 2 and "unknown code" in result.output
