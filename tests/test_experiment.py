"""The paper's experiment as commands: prepare -> train -> keygen -> encrypt-dataset -> evaluate."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medenc.cli import app

pytestmark = pytest.mark.slow  # end to end: trains models (kept in the default run)

runner = CliRunner()


def _run(*args: str) -> object:
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def _checksums(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run the whole chain once on a tiny synthetic set; tests inspect the outputs."""
    from medenc.synth.generate import write_dataset

    root = tmp_path_factory.mktemp("experiment")
    studies = write_dataset(root / "studies", 15, seed=3, size=32, fmt="both", balanced=True)
    paths = {"root": root, "studies": studies}
    result = _run("prepare", studies, "--out", root / "dataset")
    assert result.exit_code == 0, result.output
    paths["dataset"] = root / "dataset" / "manifest.csv"
    result = _run("train", paths["dataset"], "--arch", "smallcnn", "--out", root / "base.pt", "--epochs", "3",
                  "--batch-size", "8", "--size", "32", "--device", "cpu")
    assert result.exit_code == 0, result.output
    paths["model"] = root / "base.pt"
    result = _run("keygen", "--from", paths["model"], "--out", root / "key.json", "--seed", "1", "--eps", "1.0",
                  "--step", "0.2", "--steps", "4")
    assert result.exit_code == 0, result.output
    paths["key"] = root / "key.json"
    paths["dataset_checksums"] = _checksums(root / "dataset")  # type: ignore[assignment]
    result = _run("encrypt-dataset", paths["dataset"], "--model", paths["model"], "--key", paths["key"],
                  "--out", root / "encrypted", "--device", "cpu")
    assert result.exit_code == 0, result.output
    paths["encrypt_output"] = result.output  # type: ignore[assignment]
    paths["encrypted"] = root / "encrypted" / "manifest.csv"
    result = _run("evaluate", "--clean", paths["dataset"], "--encrypted", paths["encrypted"], "--arch", "smallcnn",
                  "--epochs", "2", "--batch-size", "8", "--size", "32", "--out", root / "report", "--device", "cpu",
                  "--seeds", "2")
    assert result.exit_code == 0, result.output
    paths["evaluate_output"] = result.output  # type: ignore[assignment]
    paths["report"] = root / "report"
    return paths


def test_prepare_writes_one_2d_slice_per_study(pipeline) -> None:
    import nibabel

    lines = pipeline["dataset"].read_text().splitlines()
    assert lines[0] == "case_id,label,split,image"
    assert len(lines) == 16
    first = pipeline["dataset"].parent / lines[1].split(",")[3]
    image = nibabel.load(first)
    assert image.shape == (32, 32, 1)
    assert image.header.get_sform(coded=True)[1] == 1


def test_a_prepared_slice_is_seen_as_encrypt_study_sees_its_source(pipeline) -> None:
    """Training (load_slice), encrypt-dataset and encrypt-study hand the model one orientation.

    A base model trained on prepare's slices is attacked on encrypt-study's slices of the same study: the
    loaded training slice must equal the source volume's slice as encrypt-study reads it, not its transpose.
    """
    import csv

    from medenc.core.slices import largest_tumor_slice
    from medenc.experiment.dataset import load_slice
    from medenc.io import read_image, read_mask

    studies = {r["case_id"]: r for r in csv.DictReader(pipeline["studies"].open())}
    prepared = list(csv.DictReader(pipeline["dataset"].open()))
    for row in prepared[:3]:
        source = studies[row["case_id"]]
        volume = read_image(pipeline["studies"].parent / source["image"])
        mask = read_mask(pipeline["studies"].parent / source["mask"], like=volume)
        expected = volume.voxels[largest_tumor_slice(mask)]
        loaded = load_slice(pipeline["dataset"].parent / row["image"])
        assert loaded.shape == expected.shape and not np.allclose(loaded, expected.T)
        np.testing.assert_allclose(loaded, expected, rtol=0, atol=1e-3)


def test_encrypted_dataset_layout_summary_and_inputs_untouched(pipeline) -> None:
    enc_dir = pipeline["encrypted"].parent
    clean_rows = [r.split(",") for r in pipeline["dataset"].read_text().splitlines()[1:]]
    enc_rows = [r.split(",") for r in pipeline["encrypted"].read_text().splitlines()[1:]]
    assert [r[:3] for r in clean_rows] == [r[:3] for r in enc_rows]
    assert all((enc_dir / r[3]).is_file() for r in enc_rows)
    assert not (enc_dir / "summary.json").exists()  # the shared folder holds no key details
    summary = json.loads((enc_dir.parent / f"{enc_dir.name}.summary.json").read_text())
    assert summary["slices"] == 15 and len(summary["per_slice"]) == 15
    copies = summary["base_model_hit_rate"]["copies_on_target"] * 15 * 2  # 15 slices x 2 hconcat copies
    assert copies == pytest.approx(round(copies)) and copies > 2 * 15 / 5  # PGD hits targets above chance
    assert summary["fidelity_native_units"]["psnr_db"]["min"] > 10
    assert "fidelity: PSNR" in pipeline["encrypt_output"]
    # the key never travels with the data: no file holds its fingerprint-independent content
    key = json.loads(pipeline["key"].read_text())
    for path in enc_dir.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".csv"):
            text = path.read_text()
            assert '"targets"' not in text and json.dumps(key["targets"]) not in text
            # nor anything key-derived or a setting: identifier, combiner, PGD settings, model path
            assert summary["key_fingerprint"] not in text and "hconcat" not in text and "eps" not in text
            assert "base.pt" not in text
    assert _checksums(pipeline["dataset"].parent) == pipeline["dataset_checksums"]


def test_evaluate_results_json_and_report(pipeline) -> None:
    results = json.loads((pipeline["report"] / "report.json").read_text())
    row = results["architectures"]["smallcnn"]
    n_test = results["counts"]["test"]
    assert results["seeds"] == [0, 1] and results["interval"] == "t over 2 seeds"
    for name, matrix in (("original_test", "confusion_original_test"), ("clean_test", "confusion_clean_test")):
        # the mean over the seeds is the summed confusion matrix's diagonal over 2 x the test slices
        assert row[name] == pytest.approx(sum(row[matrix][i][i] for i in range(5)) / (2 * n_test))
        assert sum(map(sum, row[matrix])) == 2 * n_test
    runs = row["runs"]["encrypted"]
    assert [r["seed"] for r in runs] == [0, 1]
    for run in runs:  # the peak is the best of the per-epoch record and the final model
        curve = run["curves"]["original_test"]
        assert len(curve) == 2 and curve[-1] == run["final"]["original_test"]  # last epoch = the final model
        assert run["peak"]["original_test"] == max(curve) >= run["final"]["original_test"]
        assert run["final"]["encrypted_test"] * n_test == pytest.approx(round(run["final"]["encrypted_test"] * n_test))
    peak = row["stats"]["original_test"]["peak"]
    assert peak["values"] == [r["peak"]["original_test"] for r in runs]
    assert peak["mean"] == pytest.approx(sum(peak["values"]) / 2) and peak["low"] <= peak["mean"] <= peak["high"]
    clean_peak = row["stats"]["clean_test"]["peak"]
    assert row["protected"] == (peak["high"] < clean_peak["low"])
    for name in ("report.md", "accuracy.png", "confusion_smallcnn.png"):
        assert (pipeline["report"] / name).stat().st_size > 0
    assert "| smallcnn |" in pipeline["evaluate_output"]
    assert "fidelity of the encrypted images: PSNR" in pipeline["evaluate_output"]
    text = (pipeline["report"] / "report.md").read_text()
    assert "Table 12" in text and "original test, peak" in text and "t over 2 seeds" in text


def test_outputs_refused_without_force(pipeline) -> None:
    result = _run("encrypt-dataset", pipeline["dataset"], "--model", pipeline["model"], "--key", pipeline["key"],
                  "--out", pipeline["encrypted"].parent, "--device", "cpu")
    assert result.exit_code == 2 and "already exists" in result.output
    result = _run("prepare", pipeline["studies"], "--out", pipeline["dataset"].parent)
    assert result.exit_code == 2 and "already exists" in result.output


def test_bad_inputs_exit_2_with_one_line(pipeline, tmp_path: Path) -> None:
    inputs = tmp_path / "in"  # outputs may not lie inside an input's folder
    inputs.mkdir()
    bad_manifest = inputs / "bad.csv"
    bad_manifest.write_text("case_id,label,image\na,b,c\n")
    cases = [
        (("evaluate", "--clean", pipeline["dataset"], "--encrypted", pipeline["encrypted"], "--arch", "alexnet",
          "--out", tmp_path / "r"), "unknown architecture"),
        (("prepare", bad_manifest, "--out", tmp_path / "d"), "missing column"),
        (("encrypt-dataset", bad_manifest, "--model", pipeline["model"], "--key", pipeline["key"],
          "--out", tmp_path / "e"), "bad.csv"),
    ]
    other_key = inputs / "other.json"
    assert _run("keygen", "--classes", "a,b,c,d,e", "--out", other_key).exit_code == 0
    cases.append((("encrypt-dataset", pipeline["dataset"], "--model", pipeline["model"], "--key", other_key,
                   "--out", tmp_path / "e2"), "do not match the model's"))
    wrong_labels = inputs / "labels.csv"
    lines = pipeline["dataset"].read_text().splitlines()
    first = lines[1].split(",")
    first[1] = "glioma"
    first[3] = str(pipeline["dataset"].parent / first[3])
    wrong_labels.write_text("\n".join([lines[0], ",".join(first)]) + "\n")
    cases.append((("encrypt-dataset", wrong_labels, "--model", pipeline["model"], "--key", pipeline["key"],
                   "--out", tmp_path / "e3"), "glioma"))
    for args, message in cases:
        result = _run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (message, result.output)
        assert "Traceback" not in result.output
    assert not any((tmp_path / name).exists() for name in ("r", "d", "e", "e2", "e3"))


def test_key_readable_by_others_warns(pipeline, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    loose = tmp_path / "in" / "loose.json"
    loose.write_text(pipeline["key"].read_text())
    os.chmod(loose, 0o644)
    manifest = tmp_path / "in" / "one.csv"
    lines = pipeline["dataset"].read_text().splitlines()
    row = lines[1].split(",")
    row[3] = str(pipeline["dataset"].parent / row[3])
    manifest.write_text("\n".join([lines[0], ",".join(row)]) + "\n")
    result = _run("encrypt-dataset", manifest, "--model", pipeline["model"], "--key", loose, "--out", tmp_path / "o",
                  "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "readable by others" in result.output


@pytest.mark.parametrize("eot", [[], ["jpeg"]])
def test_low_hit_rate_warns_unless_eot_explains_it(eot: list[str], tmp_path: Path, capsys) -> None:
    from medenc.cli._common import print_encryption_summary

    summary = {
        "slices": 3, "seconds": 1.0, "device": "cpu", "combiner": "hconcat", "key_fingerprint": "0" * 16,
        "pgd": {"norm": "l2", "eps": 2.0, "steps": 5},
        "fidelity_native_units": {n: {"mean": 30.0, "min": 29.0, "max": 99.0} for n in ("psnr_db", "ssim", "linf")},
        "base_model_hit_rate": {"copies_on_target": 0.4, "written_image_predicted_as_a_target": 0.5},
    }  # fmt: skip
    if eot:
        summary["hardening"] = {"eot": eot, "ensemble": []}
    print_encryption_summary(summary, tmp_path)
    out, err = capsys.readouterr()
    assert "copies on their target 40.0%" in out
    assert ("raise the key's PGD steps" in err) == (not eot) and ("understates them" in out) == bool(eot)
    summary["base_model_hit_rate"]["copies_on_target"] = 0.95
    print_encryption_summary(summary, tmp_path)
    out, err = capsys.readouterr()
    assert "PGD steps" not in err and "understates" not in out
