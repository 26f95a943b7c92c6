"""``medenc calibrate`` on a tiny synthetic set: the grid, the cache, and agreement with ``medenc evaluate``."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medenc.cli import app

pytestmark = pytest.mark.slow  # end to end: trains models (kept in the default run)

runner = CliRunner()
SMALL = ("--epochs", "2", "--batch-size", "8", "--size", "32", "--device", "cpu", "--seeds", "2")
PGD = ("--steps", "4", "--step-ratio", "0.25", "--precision", "fp32")


def _run(*args: object) -> object:
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Data, a base model, and one calibration run over eps 0.5 and 1.5 (one victim)."""
    from medenc.experiment.prepare import prepare_dataset
    from medenc.synth.generate import write_dataset

    root = tmp_path_factory.mktemp("calibrate")
    studies = write_dataset(root / "studies", 40, seed=5, size=32, fmt="nifti", balanced=True)
    prepared = prepare_dataset(studies, root / "dataset")
    lines = prepared.manifest.read_text().splitlines()
    assert {line.split(",")[2] for line in lines[1:]} == {"train", "test"}
    result = _run(
        "train",
        prepared.manifest,
        "--arch",
        "smallcnn",
        "--out",
        root / "base.pt",
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--size",
        "32",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    paths = {"root": root, "manifest": prepared.manifest, "model": root / "base.pt", "cache": root / "cache"}
    result = _run(
        "calibrate",
        prepared.manifest,
        "--model",
        paths["model"],
        "--out",
        root / "report",
        "--eps",
        "1.5,0.5",
        "--victims",
        "smallcnn",
        "--cache",
        paths["cache"],
        "--target-orig-acc",
        "1",
        "--min-psnr",
        "0",
        "--min-ssim",
        "0",
        "--write-key",
        root / "recommended.json",
        *SMALL,
        *PGD,
    )
    assert result.exit_code == 0, result.output
    paths["output"] = result.output
    paths["report"] = json.loads((root / "report" / "report.json").read_text())
    return paths


def test_report_files_and_figures(setup) -> None:
    folder = setup["root"] / "report"
    for name in ("report.json", "report.md", "tradeoff.png"):
        assert (folder / name).stat().st_size > 0
    report = setup["report"]
    assert [row["eps"] for row in report["rows"]] == [0.5, 1.5]  # sorted
    for row in report["rows"]:
        assert row["step"] == pytest.approx(row["eps"] * 0.25) and row["steps"] == 4
        n_test = report["counts"]["test"]
        victim = row["victims"]["smallcnn"]
        for name in ("original_test", "encrypted_test"):  # means of 2 seeds' accuracies of n_test slices
            count = victim[name] * n_test * 2
            assert count == pytest.approx(round(count)), (name, count)
        peak = victim["stats"]["original_test"]["peak"]
        assert [r["seed"] for r in victim["runs"]] == [0, 1] and peak["method"] == "t over 2 seeds"
        assert peak["values"] == [
            max([*r["curves"]["original_test"], r["final"]["original_test"]]) for r in victim["runs"]
        ]
        assert row["worst_victim"] == "smallcnn" and row["worst_original_test"] == peak["mean"]
        assert row["worst_original_test_final"] == victim["original_test"]
        assert sum(map(sum, victim["confusion_original_test"])) == 2 * n_test
        assert row["linf_max"] > 0 and row["psnr_db"] > 0
    low, high = report["rows"]
    assert high["psnr_db"] < low["psnr_db"] and high["l2_mean"] > low["l2_mean"]  # larger eps, larger change
    assert report["counts"]["train"] + report["counts"]["test"] == 40
    assert report["settings"]["train"]["augment"] is True  # the thief's recipe is the default
    md = (folder / "report.md").read_text()
    assert "| eps |" in md and "smallcnn: original peak [95%] / final (encrypted)" in md and "stored" in md
    assert report["seeds"] == [0, 1] and report["clean_stats"]["smallcnn"]["peak"]["method"] == "t over 2 seeds"
    assert "eps 0.5" in setup["output"] and "recommended eps 0.5" in setup["output"]
    # the secret never goes into the report
    assert '"targets"' not in (folder / "report.json").read_text()


def test_matches_encrypt_dataset_and_evaluate_run_separately(setup, tmp_path: Path) -> None:
    from medenc.core.key import EncryptionKey, PGDSettings
    from medenc.learn.checkpoint import load_checkpoint

    _, info = load_checkpoint(setup["model"])
    key = EncryptionKey.generate(
        info.classes, "hconcat", seed=0, ratio=0.5, pgd=PGDSettings(eps=1.5, step=0.375, steps=4)
    )
    row = setup["report"]["rows"][1]
    assert row["key_fingerprint"] == key.fingerprint()  # seeded keys: the same identifier
    key.save(tmp_path / "key.json")
    result = _run(
        "encrypt-dataset",
        setup["manifest"],
        "--model",
        setup["model"],
        "--key",
        tmp_path / "key.json",
        "--out",
        tmp_path / "enc",
        "--device",
        "cpu",
        "--precision",
        "fp32",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "enc.summary.json").read_text())
    assert summary["fidelity_native_units"]["psnr_db"]["mean"] == pytest.approx(row["psnr_db"], abs=1e-9)
    assert summary["fidelity_native_units"]["linf"]["max"] == row["linf_max"]
    result = _run(
        "evaluate",
        "--clean",
        setup["manifest"],
        "--encrypted",
        tmp_path / "enc" / "manifest.csv",
        "--arch",
        "smallcnn",
        "--augment",
        "--out",
        tmp_path / "eval",
        *SMALL,
    )
    assert result.exit_code == 0, result.output
    evaluated = json.loads((tmp_path / "eval" / "report.json").read_text())["architectures"]["smallcnn"]
    mine = row["victims"]["smallcnn"]
    for name in ("original_test", "encrypted_test", "clean_test"):
        assert mine[name] == evaluated[name], name
    assert mine["confusion_original_test"] == evaluated["confusion_original_test"]


def test_written_key_has_the_recommended_settings_and_a_fresh_secret(setup) -> None:
    from medenc.core.key import EncryptionKey

    path = setup["root"] / "recommended.json"
    key = EncryptionKey.load(path)
    assert (key.pgd.eps, key.pgd.step, key.pgd.steps) == (0.5, 0.125, 4)
    assert key.seed is None and key.combiner == "hconcat"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_refining_the_grid_reuses_the_cache(setup) -> None:
    cache = setup["cache"]
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*.json")}
    result = _run(
        "calibrate",
        setup["manifest"],
        "--model",
        setup["model"],
        "--out",
        setup["root"] / "report2",
        "--eps",
        "0.5,1.5,3",
        "--victims",
        "smallcnn",
        "--cache",
        cache,
        *SMALL,
        *PGD,
    )
    assert result.exit_code == 0, result.output
    report = json.loads((setup["root"] / "report2" / "report.json").read_text())
    assert report["estimate"]["items_to_run"] == 3  # only eps 3: encrypt + one victim x 2 seeds
    assert report["rows"][:2] == setup["report"]["rows"]
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    assert len([p for p in (cache / "encrypted").iterdir() if p.is_dir()]) == 3
    # defaults: floors 35% / 40 dB / 0.98; the statement names the outcome either way
    assert report["recommendation"]["message"] in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--eps", "1,x"), "not a number"),
        (("--eps", "0,1"), "> 0"),
        (("--eps", "1,2,1"), "more than once"),
        (("--eps", ","), "empty"),
        (("--eps", "nan"), "finite"),
        (("--target-orig-acc", "35"), "target-orig-acc"),
        (("--min-ssim", "1.5"), "min-ssim"),
        (("--min-psnr", "-3"), "min-psnr"),
        (("--budget-minutes", "0"), "budget"),
        (("--victims", "smallcnn,alexnet"), "alexnet"),
        (("--budget-minutes", "0.0001"), "budget"),
    ],
)
def test_bad_grids_and_floors_are_rejected(setup, tmp_path: Path, args, message) -> None:
    result = _run(
        "calibrate",
        setup["manifest"],
        "--model",
        setup["model"],
        "--out",
        tmp_path / "r",
        "--victims",
        "smallcnn",
        "--cache",
        tmp_path / "c",
        *SMALL,
        *PGD,
        *args,
    )
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_budget_takes_a_stratified_subset(setup, tmp_path: Path, monkeypatch) -> None:
    from medenc.calibrate import plan as calibrate_plan
    from medenc.calibrate.run import CalibrationSettings
    from medenc.learn.recipe import TrainRecipe

    def fake_costs(inputs, settings, rows):
        return {"pgd_per_slice": 1.0, "train_per_sample_epoch": {"smallcnn": 1.0}, "probe_seconds": 0.0}

    monkeypatch.setattr(calibrate_plan, "measure_costs", fake_costs)
    # 40 cases: 30 train, 10 test; a training costs (epochs + 1) passes. Everything: 2 eps x 40 slices
    # + 3 trainings x 3 x 30 = 350 s > 270 s; 4 per class (20 train): 2 x 30 + 3 x 3 x 20 = 240 s fits
    settings = CalibrationSettings(
        eps_grid=(1.0, 2.0),
        victims=("smallcnn",),
        budget_minutes=4.5,
        steps=2,
        train=TrainRecipe(epochs=2, batch_size=8, size=32, augment=True, device="cpu"),
    )
    inputs = calibrate_plan.prepare_inputs(setup["manifest"], setup["model"], None, settings)
    cache = calibrate_plan.Cache(tmp_path / "cache")
    plan = calibrate_plan.plan_work(inputs, settings, cache, estimate=True, log=lambda _: None)
    counts = plan.counts
    assert counts["train"] < counts["train_total"] and plan.subset_note
    assert all(0 < n <= 4 for n in counts["train_per_class"])
    assert plan.estimate_note["planned_seconds"] == 240
    assert counts["train"] == 20 and counts["test"] == 10
    csv = plan.subset_csv.read_text().splitlines()
    assert len(csv) - 1 == counts["train"] + counts["test"]


def test_a_given_key_keeps_its_correspondence_with_the_grid_eps(setup, tmp_path: Path) -> None:
    from medenc.calibrate import plan as calibrate_plan
    from medenc.calibrate.run import CalibrationSettings
    from medenc.core.key import EncryptionKey, PGDSettings
    from medenc.learn.checkpoint import load_checkpoint

    _, info = load_checkpoint(setup["model"])
    mine = EncryptionKey.generate(
        info.classes, "hconcat", seed=11, ratio=(0.3, 0.7), pgd=PGDSettings(eps=2.0, step=0.1, steps=100)
    )
    mine.save(tmp_path / "k.json")
    settings = CalibrationSettings(eps_grid=(1.0, 3.0), victims=("smallcnn",), step_ratio=0.2, steps=7)
    inputs = calibrate_plan.prepare_inputs(setup["manifest"], setup["model"], tmp_path / "k.json", settings)
    at3 = inputs.key_for(3.0)
    assert (at3.targets, at3.ratios) == (mine.targets, mine.ratios)
    assert (at3.pgd.eps, at3.pgd.step, at3.pgd.steps) == (3.0, pytest.approx(0.6), 7)
    assert inputs.key_note["source"] == "key file" and "targets" not in inputs.key_note


def test_a_psnr_target_adds_the_measured_eps_and_is_cached(setup) -> None:
    cache = setup["cache"]
    common = ("calibrate", setup["manifest"], "--model", setup["model"], "--victims", "smallcnn", "--cache", cache,
              "--psnr", "30", *SMALL, *PGD)  # fmt: skip
    result = _run(*common, "--out", setup["root"] / "psnr")
    assert result.exit_code == 0, result.output
    report = json.loads((setup["root"] / "psnr" / "report.json").read_text())
    match = report["fidelity_match"]
    assert match["trials"][0]["eps"] == 2.0  # the search starts at the reference eps
    assert [row["eps"] for row in report["rows"]] == [match["eps"]]  # no --eps: the matched eps alone
    assert abs(report["rows"][0]["psnr_db"] - 30) <= 1.0  # the whole calibrated set, not just the subset
    assert "Target mean PSNR 30 dB" in (setup["root"] / "psnr" / "report.md").read_text()
    entries = list((cache / "psnr").glob("*.json"))
    assert len(entries) == 1 and not any((cache / "psnr-work").glob("*"))  # the trial encryptions are removed
    again = _run(*common, "--out", setup["root"] / "psnr2", "--eps", "0.5")
    assert again.exit_code == 0, again.output
    second = json.loads((setup["root"] / "psnr2" / "report.json").read_text())
    assert second["fidelity_match"] == match and second["estimate"]["items_to_run"] == 0  # all from the cache
    assert [row["eps"] for row in second["rows"]] == sorted([0.5, match["eps"]])
