"""``medenc security-eval`` end to end on a tiny synthetic set, plain and hardened encryption."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medenc.cli import app

pytestmark = pytest.mark.slow  # end to end: trains models (kept in the default run)

runner = CliRunner()


def _run(*args: object) -> object:
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from medenc.experiment.encrypt_dataset import encrypt_dataset
    from medenc.synth.generate import write_dataset

    root = tmp_path_factory.mktemp("security")
    studies = write_dataset(root / "studies", 15, seed=5, size=32, fmt="nifti", balanced=True)
    assert _run("prepare", studies, "--out", root / "dataset").exit_code == 0
    manifest = root / "dataset" / "manifest.csv"
    common = ("--epochs", "2", "--batch-size", "8", "--size", "32", "--device", "cpu")
    for name, arch, seed in (("base.pt", "smallcnn", "0"), ("member.pt", "preresnet20", "1")):
        result = _run("train", manifest, "--arch", arch, "--out", root / name, "--seed", seed, *common)
        assert result.exit_code == 0, result.output
    pgd = ("--eps", "1.0", "--step", "0.25", "--steps", "4")
    assert _run("keygen", "--from", root / "base.pt", "--out", root / "key.json", "--seed", "1", *pgd).exit_code == 0
    result = _run(
        "keygen", "--from", root / "base.pt", "--out", root / "hard.json", "--seed", "1", *pgd,
        "--combiner", "hconcat_mirror", "--eot", "flip,crop,jpeg", "--eot-samples", "2", "--ratio-jitter", "0.1",
    )  # fmt: skip
    assert result.exit_code == 0 and "hardening: EOT flip,crop,jpeg x 2" in result.output, result.output
    result = _run("encrypt-dataset", manifest, "--model", root / "base.pt", "--key", root / "key.json",
                  "--out", root / "enc", "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    result = _run("encrypt-dataset", manifest, "--model", root / "base.pt", "--key", root / "hard.json",
                  "--out", root / "hard", "--device", "cpu", "--extra-model", root / "member.pt")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ensemble member preresnet20" in result.output
    summary = json.loads((root / "hard.summary.json").read_text())
    member = summary["hardening"]["ensemble"][0]
    copies = member["copies_on_target"] * summary["slices"] * 2  # hconcat: two perturbed copies per slice
    assert member["arch"] == "preresnet20" and copies == pytest.approx(round(copies))
    if summary["base_model_hit_rate"]["copies_on_target"] < 0.9:  # EOT: the plain hit rate understates the copies
        assert "understates them" in result.output and "raise the key's PGD steps" not in result.output
    bad = _run("encrypt-dataset", manifest, "--model", root / "base.pt", "--key", root / "hard.json",
               "--out", root / "bad", "--device", "cpu", "--extra-model", manifest)  # fmt: skip
    assert bad.exit_code == 2 and "manifest.csv" in bad.output and not (root / "bad").exists(), bad.output
    same = encrypt_dataset(
        manifest, root / "base.pt", root / "hard.json", root / "hard2", device="cpu", extra_models=[root / "member.pt"]
    )  # the library call and the command agree (the key's seed fixes every random draw)
    assert same["hardening"] == summary["hardening"]
    assert same["base_model_hit_rate"] == summary["base_model_hit_rate"]
    assert summary["hardening"]["flip_consistent_layout"] and summary["hardening"]["eot"] == ["flip", "crop", "jpeg"]
    return {"root": root, "manifest": manifest}


def test_security_eval_table_report_and_key_recovery(data) -> None:
    root = data["root"]
    out = root / "report"
    result = _run(
        "security-eval", "--clean", data["manifest"], "--encrypted", root / "enc" / "manifest.csv",
        "--model", root / "base.pt", "--key", root / "key.json", "--out", out, "--arch", "preresnet20",
        "--defenses", "jpeg:30,j2k-cr:10,median:3,flip-aug,ueraser:2,mixup,early-stop,advtrain,finetune,ssl-finetune",
        "--key-recovery", "--epochs", "2", "--batch-size", "8", "--device", "cpu", "--clean-fraction", "0.4",
        "--seeds", "2", "--scorecard",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["archs"] == ["smallcnn", "preresnet20"]
    assert report["rows"] == [
        "clean baseline",
        "undefended",
        "jpeg q30",
        "jpeg2000 10:1",
        "median 3x3",
        "flip-aug",
        "ueraser (max of 2)",
        "mixup",
        "early-stop",
        "advtrain",
        "finetune",
        "ssl-finetune",
        "few clean only",
    ]
    assert report["seeds"] == [0, 1] and report["interval"] == "t over 2 seeds"
    n_test = report["counts"]["test"]
    for row in report["rows"]:
        for arch in report["archs"]:
            cell = report["table"][row][arch]
            runs = cell["runs"]
            assert [r["seed"] for r in runs] == [0, 1]
            for run in runs:  # every seed's accuracies are counts of the original test slices
                count = run["final"]["original_test"] * n_test
                assert count == pytest.approx(round(count)), (row, arch, count)
                curve = run["curves"]["original_test"]
                assert run["peak"]["original_test"] == max([*curve, run["final"]["original_test"]])
            assert cell["original_test"] == pytest.approx(sum(r["final"]["original_test"] for r in runs) / 2)
            peak = cell["stats"]["original_test"]["peak"]
            assert peak["values"] == [r["peak"]["original_test"] for r in runs] and peak["method"] == "t over 2 seeds"
            assert ("encrypted_test" in cell) == (row not in ("clean baseline", "few clean only"))
            clean = report["table"]["clean baseline"][arch]["stats"]["original_test"]["peak"]
            expected = "reference" if row in ("clean baseline", "few clean only") else (
                "not protected" if peak["high"] >= clean["low"] else "protected"
            )  # fmt: skip
            assert cell["verdict"] == expected, (row, arch)
    for arch in report["archs"]:  # the early-stopping thief follows the undefended run and stops at his best epoch
        stop, plain = report["table"]["early-stop"][arch]["runs"], report["table"]["undefended"][arch]["runs"]
        for s, p in zip(stop, plain, strict=True):  # at his best epoch on his originals; no oracle on top
            assert s["final"]["original_test"] in p["curves"]["original_test"]
            assert s["peak"]["original_test"] == s["final"]["original_test"]
    j2k = report["defences"]["jpeg2000 10:1"]
    assert j2k["images"] == report["counts"]["train"] and j2k["ratio_min"] >= 10.0 and j2k["met_target"] == 1.0
    assert "jpeg2000 10:1: achieved" in (out / "report.md").read_text()
    card = (out / "scorecard.md").read_text()
    assert "**Verdict: protected against" in card and "**Fidelity:** PSNR" in card and "| ssl-finetune |" in card
    assert (out / "scorecard.png").stat().st_size > 5000 and "scorecard:" in result.output
    fid = report["fidelity"]
    assert 20 < fid["model_input_window"]["psnr_db_mean"] < 80 and 0.5 < fid["stored"]["ssim_mean"] <= 1.0
    recovery = report["key_recovery"]
    assert recovery["space"] == 552 and 1 <= recovery["rank_of_true_key"] <= 552
    assert recovery["simulations"] == 5 * 12 * 5
    key = json.loads((root / "key.json").read_text())
    text = (out / "report.json").read_text() + (out / "report.md").read_text()
    assert '"targets"' not in text and report["key"]["fingerprint"] in (out / "report.md").read_text()
    assert key["targets"] and "| jpeg q30 |" in (out / "report.md").read_text()
    assert (out / "security_heatmap.png").stat().st_size > 1000 and (out / "security_bars.png").is_file()
    assert "Thief's peak accuracy on original test images" in result.output and "key recovery" in result.output
    again = _run(
        "security-eval", "--clean", data["manifest"], "--encrypted", root / "enc" / "manifest.csv",
        "--model", root / "base.pt", "--key", root / "key.json", "--out", out, "--defenses", "blur",
    )  # fmt: skip
    assert again.exit_code == 2 and "exists" in again.output


def test_security_eval_on_hardened_data_compared_with_plain(data) -> None:
    root = data["root"]
    common = ("--epochs", "1", "--batch-size", "8", "--device", "cpu", "--seeds", "1")
    before = root / "plain-small"
    result = _run(
        "security-eval", "--clean", data["manifest"], "--encrypted", root / "enc" / "manifest.csv",
        "--model", root / "base.pt", "--key", root / "key.json", "--out", before, "--defenses", "none", *common,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = root / "hard-report"
    result = _run(
        "security-eval", "--clean", data["manifest"], "--encrypted", root / "hard" / "manifest.csv",
        "--model", root / "base.pt", "--key", root / "hard.json", "--out", out, "--defenses", "blur:1",
        "--compare", before / "report.json", *common,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    old = json.loads((before / "report.json").read_text())
    assert report["key"]["combiner"] == "hconcat_mirror" and report["fidelity"]["ensemble"] == ["preresnet20"]
    assert report["rows"] == ["clean baseline", "undefended", "blur sigma 1"]
    assert report["interval"] == f"Wilson over {report['counts']['test']} test slices (1 seed)"
    assert report["table"]["clean baseline"] == old["table"]["clean baseline"]  # taken over: same clean data
    assert report["compared_with"]["table"]["undefended"] == old["table"]["undefended"]
    md = (out / "report.md").read_text()
    assert "flip-consistent" in md and "## Compared with" in md and "| undefended | " in md.split("## Compared")[1]
    assert "`security_compare.png`" in md and not (before / "security_compare.png").exists()
    from PIL import Image

    with Image.open(out / "security_compare.png") as chart:  # one panel per thief architecture, both sides
        assert chart.format == "PNG" and chart.height > chart.width / 3
    bad = _run(
        "security-eval", "--clean", data["manifest"], "--encrypted", root / "hard" / "manifest.csv",
        "--model", root / "base.pt", "--key", root / "hard.json", "--out", root / "x", "--defenses", "rotate",
    )  # fmt: skip
    assert bad.exit_code == 2 and "unknown defence 'rotate'" in bad.output
    bad = _run(
        "security-eval", "--clean", data["manifest"], "--encrypted", root / "hard" / "manifest.csv",
        "--model", root / "base.pt", "--key", root / "hard.json", "--out", root / "y", "--arch", "nope",
    )  # fmt: skip
    assert bad.exit_code == 2 and "unknown architecture" in bad.output


def test_security_eval_at_a_target_psnr_encrypts_at_the_matched_eps(data) -> None:
    root = data["root"]
    out = root / "psnr-report"
    args = ("security-eval", "--clean", data["manifest"], "--model", root / "base.pt", "--key", root / "key.json")
    both = _run(*args, "--encrypted", root / "enc" / "manifest.csv", "--psnr", "30", "--out", root / "both")
    assert both.exit_code == 2 and "exactly one of" in both.output and not (root / "both").exists()
    result = _run(
        *args, "--psnr", "33", "--out", out, "--defenses", "jpeg-cr:20", "--epochs", "1", "--batch-size", "8",
        "--device", "cpu", "--seeds", "1", "--scorecard", "--arch", "preresnet20", "--base-only", "jpeg-cr",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    match = report["fidelity_match"]
    trials = match["trials"]
    assert trials[0]["eps"] == 1.0 and match["subset_slices"] == 15  # the key's eps first; 15 slices on hand
    best = min(trials, key=lambda t: abs(t["psnr_db"] - 33))
    assert match["eps"] == best["eps"] and report["key"]["pgd"]["eps"] == best["eps"]
    assert abs(match["whole_set"]["psnr_db_mean"] - 33) <= 1.0 and match["whole_set"]["slices"] == 15
    assert report["fidelity"]["stored"]["psnr_db_mean"] == match["whole_set"]["psnr_db_mean"]
    assert (out / "encrypted" / "manifest.csv").is_file() and not (out / "psnr-search").exists()
    assert "eps chosen for 33 dB" in (out / "scorecard.md").read_text()
    assert list(report["table"]["jpeg 20:1"]) == ["smallcnn"]  # --base-only: the other architecture not run
    assert list(report["table"]["undefended"]) == ["smallcnn", "preresnet20"]
    assert "| jpeg 20:1 |" in (out / "scorecard.md").read_text() and "| not run |" in (out / "scorecard.md").read_text()
    bad = _run(*args, "--psnr", "33", "--out", root / "z", "--defenses", "blur", "--base-only", "mixup")
    assert bad.exit_code == 2 and "--base-only names rows that are not in the table: mixup" in bad.output
    assert "Target mean PSNR 33 dB" in (out / "report.md").read_text()


def test_security_eval_announces_how_many_thief_models_it_trains(data) -> None:
    """The overall progress bar's total: every model the table trains, announced before the first."""
    from medenc.security.defenses import parse_defences
    from medenc.security.evaluate import ThiefSettings, security_evaluate

    root, events = data["root"], []
    settings = ThiefSettings(epochs=1, batch_size=8, size=32, device="cpu", seeds=2)
    security_evaluate(
        data["manifest"], root / "enc" / "manifest.csv", root / "base.pt", root / "key.json", root / "planned",
        archs=["preresnet20"], defences=parse_defences("blur:1,finetune"), settings=settings,
        base_only=["finetune"], on_plan=lambda n: events.append(("plan", n)),
        progress_factory=lambda description: events.append(("model", description)),
    )  # fmt: skip
    # clean, undefended, blur and few clean only on 2 architectures, finetune on the base's; 2 seeds each
    assert events[0] == ("plan", (4 * 2 + 1) * 2)
    assert len(events) - 1 == events[0][1] and all(kind == "model" for kind, _ in events[1:])
