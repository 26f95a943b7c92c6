"""``medenc synth --slices N``: thinner (or thicker) axial slices over the same slab."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medenc.cli import app
from medenc.io import read_image, read_mask
from medenc.synth.anatomy import SLAB_Z, output_grid

runner = CliRunner()


def test_output_grid_with_a_slice_count() -> None:
    grid = output_grid(64, 40)
    assert grid.n_slices == 40 and grid.spacing[2] == pytest.approx((SLAB_Z[1] - SLAB_Z[0]) / 40)
    assert output_grid(64).n_slices == 18  # the default still scales with the matrix


def test_cli_writes_the_asked_number_of_slices(tmp_path: Path) -> None:
    out = tmp_path / "data"
    result = runner.invoke(app, ["synth", str(out), "--cases", "5", "--size", "32", "--slices", "24", "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "dataset.json").read_text())["slices"] == 24
    volume = read_image(out / "synth00001" / "dicom")
    assert volume.shape == (24, 32, 32) and volume.spacing[0] == pytest.approx(4.5)
    assert read_mask(out / "synth00001" / "mask.nii.gz", like=volume).any()
    bad = runner.invoke(app, ["synth", str(tmp_path / "bad"), "--cases", "5", "--slices", "3"])
    assert bad.exit_code == 2 and "slices is out of range" in bad.output and not (tmp_path / "bad").exists()
