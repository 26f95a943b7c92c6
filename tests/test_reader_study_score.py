"""``medenc reader-study score``: statistics against hand-computed values, answer validation, the CLI."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.stats import binomtest, norm

from medenc.errors import InputError
from medenc.reader_study import build_study, score_study, simulate_answers
from medenc.reader_study.answers import load_study, read_answers
from medenc.reader_study.stats import (
    binomial_test_half,
    clopper_pearson,
    cohen_kappa,
    concordance,
    detection_rate,
    mcnemar_exact,
    paired_difference,
    tango_statistic,
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


def test_clopper_pearson_and_detection_rate():
    for k, n in [(0, 10), (3, 10), (10, 10), (17, 20)]:
        ci = binomtest(k, n).proportion_ci(method="exact")
        assert clopper_pearson(k, n) == pytest.approx((ci.low, ci.high))
        rate = detection_rate(k, n)
        assert rate["ci95"] == pytest.approx([ci.low, ci.high]) and rate["rate"] == k / n
        assert rate["p_value"] == pytest.approx(binomtest(k, n, 0.5).pvalue)
    assert clopper_pearson(0, 0) is None
    assert detection_rate(0, 0) == {"detected": 0, "trials": 0, "rate": None, "ci95": None, "p_value": 1.0,
                                    "test": "exact two-sided binomial test against 50% (chance)"}
    assert binomial_test_half(10, 20) == 1.0 and binomial_test_half(0, 5) == pytest.approx(2 / 32)


def _score_statistic_by_brute_force(b: int, c: int, n: int, delta: float) -> float:
    """Tango's statistic from a numerical restricted maximum likelihood (no closed form)."""
    others = n - b - c

    def minus_loglik(q: float) -> float:  # q = P(original only), P(encrypted only) = q + delta
        cells = [(b, q), (c, q + delta), (others, 1 - 2 * q - delta)]
        return -sum(k * math.log(p) for k, p in cells if k)

    low, high = max(0.0, -delta) + 1e-12, (1 - delta) / 2 - 1e-12
    q = minimize_scalar(minus_loglik, bounds=(low, high), method="bounded", options={"xatol": 1e-12}).x
    return (c - b - n * delta) / math.sqrt(n * (2 * q + delta - delta**2))


def test_tango_interval_against_a_published_example_and_a_brute_force_likelihood():
    # Fagerland, Lydersen & Laake (2017), Cavo et al. (2012): n12 = 6, n21 = 16, N = 161 -> -0.1240 to -0.0054
    d = paired_difference(16, 6, 161)
    assert d["estimate"] == pytest.approx(-10 / 161) and d["ci95"] == pytest.approx([-0.1240, -0.0054], abs=5e-5)
    for b, c, n in [(16, 6, 161), (7, 1, 21), (3, 9, 40), (0, 4, 12)]:
        for delta in (-0.3, -0.05, 0.1, 0.25):
            if max(0.0, -delta) < (1 - delta) / 2:
                assert tango_statistic(b, c, n, delta) == pytest.approx(
                    _score_statistic_by_brute_force(b, c, n, delta), rel=1e-4, abs=1e-6)
        lo, hi = paired_difference(b, c, n)["ci95"]
        z = norm.ppf(0.975)
        assert tango_statistic(b, c, n, lo) == pytest.approx(z, abs=1e-6)
        assert tango_statistic(b, c, n, hi) == pytest.approx(-z, abs=1e-6)


def test_paired_interval_does_not_collapse_without_discordant_pairs():
    z2 = norm.ppf(0.975) ** 2
    for n in (5, 20, 100):
        d = paired_difference(0, 0, n)
        assert d["estimate"] == 0.0
        # with no discordant pair the score interval is +-z^2 / (n + z^2), never a point
        assert d["ci95"] == pytest.approx([-z2 / (n + z2), z2 / (n + z2)], abs=1e-9)
    assert paired_difference(0, 0, 0) == {"estimate": None, "ci95": None, "pairs": 0,
                                          "method": "Tango score interval", "non_inferiority": None}
    everything = paired_difference(0, 20, 20)["ci95"]
    assert everything[1] == 1.0 and 0.5 < everything[0] < 1.0


def test_non_inferiority_follows_the_interval_and_the_margin():
    z = norm.ppf(0.975)
    # 200 pairs, 4 against the encrypted images, 2 for them: lower end about -4 points
    d = paired_difference(4, 2, 200, margin=0.05)
    test = d["non_inferiority"]
    assert d["ci95"][0] > -0.05 and test["non_inferior"] and test["p_value"] < 0.025
    assert test["statistic"] == pytest.approx(tango_statistic(4, 2, 200, -0.05))
    assert test["p_value"] == pytest.approx(1 - norm.cdf(test["statistic"]))
    strict = paired_difference(4, 2, 200, margin=0.01)["non_inferiority"]
    assert not strict["non_inferior"] and strict["p_value"] > 0.025
    # the verdict is the interval's: lower end above -margin exactly when the one-sided p < 2.5%
    for b, c, n, m in [(6, 0, 12, 0.05), (0, 0, 30, 0.05), (0, 0, 200, 0.05), (10, 12, 80, 0.1)]:
        result = paired_difference(b, c, n, margin=m)
        assert result["non_inferiority"]["non_inferior"] == (result["ci95"][0] > -m)
        assert (result["non_inferiority"]["statistic"] > z) == result["non_inferiority"]["non_inferior"]
    with pytest.raises(ValueError):
        paired_difference(1, 1, 10, margin=1.5)


def _statsmodels_kappa(first, second, categories):
    inter_rater = pytest.importorskip("statsmodels.stats.inter_rater")
    index = {k: i for i, k in enumerate(categories)}
    table = np.zeros((len(categories), len(categories)))
    for a, b in zip(first, second, strict=True):
        table[index[a], index[b]] += 1
    return inter_rater.cohens_kappa(table)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ([A, A, B, G, B, B, B, G, G, A, G, A], [A, A, B, G, B, A, G, A, B, G, B, G]),  # p_o = 5/12
        ([A, B, G, A, B, G, A, A], [A, B, G, A, B, G, A, A]),  # observed agreement 1
        ([A, B, A, B, G], [B, A, G, G, A]),  # observed agreement 0
        ([A, B], [B, A]),  # agreement 0, kappa -1
        (list(np.random.default_rng(3).choice([A, B, G], 40)), list(np.random.default_rng(4).choice([A, B, G], 40))),
    ],
)
def test_cohen_kappa_interval_matches_statsmodels(first, second):
    ours = cohen_kappa(first, second, [A, B, G])
    reference = _statsmodels_kappa(first, second, [A, B, G])
    assert ours.kappa == pytest.approx(reference.kappa)
    assert ours.se == pytest.approx(reference.std_kappa, abs=1e-12)
    assert ours.ci95 == pytest.approx((max(-1, reference.kappa_low), min(1, reference.kappa_upp)), abs=1e-12)


def test_cohen_kappa_edge_cases():
    perfect = cohen_kappa([A, B, G, A], [A, B, G, A], [A, B, G])
    assert perfect.kappa == 1.0 and perfect.observed == 1.0 and perfect.ci95 == (1.0, 1.0)
    opposite = cohen_kappa([A, B], [B, A], [A, B])
    assert opposite.kappa == pytest.approx(-1.0) and opposite.observed == 0.0
    assert opposite.ci95 == pytest.approx((-1.0, -1.0))
    assert cohen_kappa([A, A], [A, A], [A, B]).kappa is None  # p_e == 1: undefined (statsmodels gives nan)


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
    assert r1["paired_difference"]["ci95"] == pytest.approx(paired_difference(6, 0, 12)["ci95"])
    assert r1["paired_difference"]["non_inferiority"]["non_inferior"] is False
    assert r1["kappa"]["ci95"] == pytest.approx(list(cohen_kappa([a for a, _ in R1], [e for _, e in R1],
                                                                 [A, B, G]).ci95))
    assert report["forced_choice"] is None  # not read yet: not scored, not an error
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
                                 "--out", str(tmp_path / "report"), "--margin", "10"])
    assert result.exit_code == 0, result.output
    assert "McNemar exact p" in result.output and (tmp_path / "report" / "report.md").is_file()
    assert "non-inferior at 10 points" in result.output and "forced choice: changed image found" in result.output
    assert json.loads((tmp_path / "report" / "report.json").read_text())["non_inferiority_margin"] == 0.1
    bad = tmp_path / "bad.csv"
    bad.write_text("code,diagnosis\nNOSUCH,alphaoma\n")
    result = runner.invoke(app, ["reader-study", "score", str(study), "--answers", str(bad),
                                 "--out", str(tmp_path / "r2")])
    assert result.exit_code == 2 and "unknown code" in result.output


# ---- the forced-choice session ----

def forced_choice_answers(study: Path, folder: Path) -> tuple[list[Path], dict[str, int]]:
    """R1 finds the changed image in the first 9 of his 12 pairs (then misses); R2 always answers A."""
    folder.mkdir(parents=True, exist_ok=True)
    files, found = [], {}
    trials = sorted(read_key(study, "forced-choice.csv"), key=lambda t: (t["reader"], int(t["position"])))
    for reader in ("R1", "R2"):
        path = folder / f"fc-{reader}.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["code", "changed", "confidence", "comment"])
            for t in (t for t in trials if t["reader"] == reader):
                other = "B" if t["changed"] == "A" else "A"
                side = (t["changed"] if int(t["position"]) <= 9 else other) if reader == "R1" else "a"
                writer.writerow([t["code"], side, 2, ""])
        found[reader] = 9 if reader == "R1" else sum(t["changed"] == "A" for t in trials if t["reader"] == reader)
        files.append(path)
    return files, found


def test_forced_choice_scored_against_chance(study, tmp_path):
    files, found = forced_choice_answers(study, tmp_path / "fc")
    report = score_study(study, files, tmp_path / "report").report  # forced choice alone: sessions not scored
    assert report["validation"]["parts"] == ["forced_choice"] and report["validation"]["expected"] == 24
    forced = report["forced_choice"]
    for reader in ("R1", "R2"):
        block = forced["per_reader"][reader]
        assert (block["detected"], block["trials"]) == (found[reader], 12)
        assert block["p_value"] == pytest.approx(binomtest(found[reader], 12, 0.5).pvalue)
        ci = binomtest(found[reader], 12).proportion_ci(method="exact")
        assert block["ci95"] == pytest.approx([ci.low, ci.high])
    pooled = forced["pooled"]
    assert (pooled["detected"], pooled["trials"]) == (found["R1"] + found["R2"], 24)
    assert pooled["encrypted_on_a"] == sum(t["changed"] == "A" for t in read_key(study, "forced-choice.csv"))
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Forced choice" in md and "| R1 | 9/12 = 75.0% " in md
    assert (tmp_path / "report" / "forced-choice.png").read_bytes()[:4] == b"\x89PNG"
    both = score_study(study, [*designed_answers(study, tmp_path / "dx"), *files], tmp_path / "both").report
    assert both["validation"]["parts"] == ["sessions", "forced_choice"] and both["validation"]["expected"] == 72
    assert both["pooled"]["concordance"]["pairs"] == 24 and both["forced_choice"]["pooled"]["detected"] == \
        pooled["detected"]


def test_forced_choice_validation(study, tmp_path):
    files, _ = forced_choice_answers(study, tmp_path / "fc")
    _rewrite(files[0], lambda rows: [rows[0], [rows[1][0], "left", "", ""], *rows[2:-1]])
    with pytest.raises(InputError, match="not A or B") as error:
        score_study(study, files, tmp_path / "strict")
    assert "reader R1 forced choice: 2 image(s)" in str(error.value)  # the bad side and the dropped row
    report = score_study(study, files, tmp_path / "partial", partial=True).report
    assert report["validation"]["invalid_sides"] == 1 and report["validation"]["missing"] == 2
    assert report["forced_choice"]["per_reader"]["R1"]["trials"] == 10


def test_simulated_forced_choice(study, tmp_path):
    always = simulate_answers(study, tmp_path / "always", detection=1.0)
    report = score_study(study, always, tmp_path / "r1").report
    assert report["validation"]["parts"] == ["sessions", "forced_choice"]
    assert report["forced_choice"]["pooled"]["rate"] == 1.0
    assert report["forced_choice"]["pooled"]["p_value"] == pytest.approx(2 / 2**24)
    never = simulate_answers(study, tmp_path / "never", detection=0.0)
    assert score_study(study, never, tmp_path / "r2").report["forced_choice"]["pooled"]["detected"] == 0
