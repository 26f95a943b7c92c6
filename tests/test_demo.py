"""``medenc demo`` end to end on a tiny configuration: every stage runs and the report is complete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytestmark = pytest.mark.slow  # end to end: trains models (kept in the default run)

TINY = """
size: 32
cases: 30
epochs: 2
steps: 3
victims: smallcnn
victim_epochs: 1
seeds: 1
"""


def _cli(*args: object):
    from medenc.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_demo_runs_every_stage_with_a_config_over_the_quick_preset(tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    out = tmp_path / "demo"
    result = _cli("demo", "--out", out, "--config", config, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "preset quick + " in result.output  # keys the file leaves out come from the quick preset
    for stage in ("3/6 training the base classifier (smallcnn)", "6/6 evaluating: training smallcnn"):
        assert stage in result.stderr and stage not in result.stdout  # progress on stderr, results on stdout
    assert "4/6 drew key" in result.stdout and "data: " in result.stdout
    # the evaluation step says what it finished, model by model, on stderr
    assert "model 1/2: smallcnn trained on encrypted (seed 0): encrypted test" in result.stderr
    assert "model 2/2: smallcnn trained on clean (seed 0): clean test" in result.stderr
    report = json.loads((out / "report" / "report.json").read_text())
    assert set(report["architectures"]) == {"smallcnn"}
    row = report["architectures"]["smallcnn"]
    n_test = report["counts"]["test"]
    for name, matrix in (("original_test", "confusion_original_test"), ("clean_test", "confusion_clean_test")):
        # each accuracy is the confusion matrix's diagonal over the test slices
        assert row[name] == pytest.approx(sum(row[matrix][i][i] for i in range(5)) / n_test)
    assert row["encrypted_test"] * n_test == pytest.approx(round(row["encrypted_test"] * n_test))
    assert report["counts"]["train"] + report["counts"]["test"] == 30
    assert report["settings"]["epochs"] == 1 and report["settings"]["size"] == 32
    key = json.loads((out / "key.json").read_text())
    assert key["combiner"] == "hconcat" and key["pgd"]["steps"] == 3  # from the file and the preset
    assert (out / "key.json").stat().st_mode & 0o077 == 0
    assert (out / "base-model.pt").is_file() and (out / "encrypted" / "manifest.csv").is_file()
    assert "demo finished in" in result.output

    again = _cli("demo", "--out", out, "--config", config, "--device", "cpu")
    assert again.exit_code == 2 and "--force" in again.output  # an existing demo folder is not overwritten


def test_demo_rejects_a_config_that_is_not_a_mapping(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("- just\n- a list\n")
    result = _cli("demo", "--out", tmp_path / "demo", "--config", config)
    assert result.exit_code == 2
    assert "bad.yaml" in result.output and not (tmp_path / "demo").exists()
