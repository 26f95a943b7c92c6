"""The thief who holds volumes: ``security-eval --studies`` on the output of ``encrypt-study --batch``."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medenc.cli import app
from medenc.errors import InputError
from medenc.security.volume import VolumeThief, parse_volume_thieves, through_plane, volume_rows

runner = CliRunner()
SLICES = 12


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Ten synthetic studies of 12 slices, a random smallcnn and a key; shared the default way and the old way."""
    from medenc.core.key import EncryptionKey, PGDSettings
    from medenc.core.mapping import Preprocess
    from medenc.learn.checkpoint import ModelInfo, save_checkpoint
    from medenc.learn.models import build_model
    from medenc.study.batch import encrypt_batch
    from medenc.synth.generate import write_dataset

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("volume_thief")
    manifest = write_dataset(root / "studies", 10, seed=3, size=32, balanced=True, n_slices=SLICES)
    classes = ("chordoma", "craniopharyngioma", "meningioma", "pituitary_adenoma", "schwannoma")
    torch.manual_seed(0)
    save_checkpoint(root / "model.pt", build_model("smallcnn", 1, 5),
                    ModelInfo("smallcnn", classes, preprocess=Preprocess((32, 32)).to_dict()))
    EncryptionKey.generate(classes, "hconcat", seed=0, pgd=PGDSettings(eps=2.0, step=0.5, steps=2)).save(
        root / "key.json")
    common = dict(model=root / "model.pt", key=root / "key.json", device="cpu")
    encrypt_batch(manifest, out=root / "shared-default", **common)
    encrypt_batch(manifest, out=root / "shared-old", slices="largest", allow_original_slices=True, **common)
    encrypt_batch(manifest, out=root / "shared-coherent", coherent_slices=4, **common)
    yield {"root": root, "manifest": manifest, "rows": list(csv.DictReader(manifest.open())), **common}
    torch.set_num_threads(threads)


def test_parse_volume_thieves() -> None:
    assert parse_volume_thieves("all") == [
        VolumeThief("neighbours", 2), VolumeThief("mean", 3), VolumeThief("median", 5), VolumeThief("all-slices")
    ]
    assert parse_volume_thieves("none") == []
    assert [t.label for t in parse_volume_thieves("neighbours:1,mean,all-slices")] == [
        "neighbour slices (unencrypted, within 1)", "through-plane mean of 3", "all-slice training"
    ]
    for bad, message in (("blur", "unknown volume thief"), ("mean:x", "whole number"), ("mean:1", "window"),
                         ("all-slices:2", "takes no parameter")):
        with pytest.raises(InputError, match=message):
            parse_volume_thieves(bad)


def test_through_plane_cancels_independent_noise_and_keeps_a_coherent_one() -> None:
    rng = np.random.default_rng(0)
    anatomy = np.repeat(rng.normal(size=(1, 16, 16)), 9, axis=0)  # slowly changing: here not at all
    independent = rng.normal(size=(9, 16, 16))
    coherent = np.repeat(independent[:1], 9, axis=0)
    present = np.ones(9, dtype=bool)
    for how, window in (("mean", 3), ("median", 5)):
        left = through_plane(anatomy + independent, present, 4, window, how) - anatomy[4]
        kept = through_plane(anatomy + coherent, present, 4, window, how) - anatomy[4]
        assert np.std(left) < 0.8 * np.std(independent[4])  # partly cancelled
        np.testing.assert_allclose(kept, coherent[4], atol=1e-12)  # untouched
    np.testing.assert_allclose(through_plane(independent, present, 0, 3, "mean"), independent[:2].mean(0))  # the end
    present[[3, 5]] = False
    assert through_plane(independent, present, 4, 3, "mean") is None  # no neighbour shared
    present[5] = True
    np.testing.assert_allclose(through_plane(independent, present, 4, 5, "mean"), independent[4:7].mean(0))


def _evaluate(shared: dict[str, Any], which: str, out: Path, thieves: str = "all") -> dict[str, Any]:
    from medenc.security.evaluate import ThiefSettings, security_evaluate

    settings = ThiefSettings(epochs=1, batch_size=16, size=32, device="cpu")
    return security_evaluate(shared["manifest"], None, shared["model"], shared["key"], out, settings=settings,
                             studies=shared["root"] / which, extra_rows=volume_rows(parse_volume_thieves(thieves)))


def test_default_sharing_leaves_the_neighbour_thief_nothing(shared: dict[str, Any], tmp_path: Path) -> None:
    report = _evaluate(shared, "shared-default", tmp_path / "report")
    rows = report["rows"]
    assert rows == ["clean baseline", "undefended", "neighbour slices (unencrypted, within 2)",
                    "through-plane mean of 3", "through-plane median of 5", "all-slice training"]
    cell = report["table"]["neighbour slices (unencrypted, within 2)"]["smallcnn"]
    assert cell == {"original_test": None, "encrypted_test": None, "train_images": 0, "note": "none available",
                    "verdict": "protected"}  # nothing to train on
    train = sum(r["split"] == "train" for r in shared["rows"])
    assert report["table"]["all-slice training"]["smallcnn"]["train_images"] == train * SLICES
    for label in rows[3:5]:
        result = report["table"][label]["smallcnn"]
        assert result["train_images"] == train and 0 <= result["original_test"] <= 1
    assert report["volume"]["shared"]["unencrypted_slices"] == 0
    assert report["volume"]["shared"]["shared_slices"] == 10 * SLICES
    assert report["counts"] == {"train": train, "test": 10 - train, "thief_clean": report["counts"]["thief_clean"]}
    assert report["fidelity"]["stored"]["psnr_db_mean"] > 0 and report["encrypted_manifest"] is None
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| neighbour slices (unencrypted, within 2) | none available |" in text
    assert "## The thief who holds volumes" in text and "% [" in text  # peak with its interval


def test_old_sharing_gives_the_neighbour_thief_original_slices(shared: dict[str, Any], tmp_path: Path) -> None:
    """`--slices largest --allow-original-slices`: the neighbours of the encrypted slice are shared original."""
    args = ["security-eval", "--clean", shared["manifest"], "--studies", shared["root"] / "shared-old",
            "--model", shared["model"], "--key", shared["key"], "--out", tmp_path / "report", "--defenses", "none",
            "--volume-thieves", "neighbours,mean:3", "--epochs", "1", "--batch-size", "16", "--device", "cpu"]
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    expected = 0
    for row in shared["rows"]:
        if row["split"] == "train":
            k = json.loads((shared["root"] / "shared-old" / row["case_id"] / "report.json").read_text())
            index = k["slices"]["encrypted"][0]
            expected += len([z for z in range(index - 2, index + 3) if 0 <= z < SLICES and z != index])
    cell = report["table"]["neighbour slices (unencrypted, within 2)"]["smallcnn"]
    assert cell["train_images"] == expected > 0 and cell["original_test"] is not None
    assert report["volume"]["shared"]["unencrypted_slices"] == 10 * (SLICES - 1)
    assert "neighbour slices (unencrypted, within 2) / smallcnn: original test" in result.output
    assert "through-plane mean of 3" in result.output  # averaging uses the original neighbours here


def test_studies_mode_errors(shared: dict[str, Any], tmp_path: Path) -> None:
    base = ["security-eval", "--clean", shared["manifest"], "--model", shared["model"], "--key", shared["key"],
            "--out", tmp_path / "r"]
    result = runner.invoke(app, [str(a) for a in base])
    assert result.exit_code == 2 and "give exactly one of --encrypted" in result.output
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, [str(a) for a in [*base, "--studies", tmp_path / "empty"]])
    assert result.exit_code == 2 and "no encrypt-study report.json" in result.output and not (tmp_path / "r").exists()


def test_coherent_sharing_keeps_the_perturbation_through_averaging(shared: dict[str, Any], tmp_path: Path) -> None:
    kept = {}
    for which in ("shared-default", "shared-coherent"):
        report = _evaluate(shared, which, tmp_path / which, thieves="mean:3")
        kept[which] = report["table"]["through-plane mean of 3"]["smallcnn"]["perturbation_kept"]
        assert report["volume"]["shared"]["coherent_slices"] == [4 if which == "shared-coherent" else 1]
    assert 0 < kept["shared-default"] < kept["shared-coherent"] and kept["shared-coherent"] > 0.9, kept
