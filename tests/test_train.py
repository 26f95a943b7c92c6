"""Training, prediction, checkpoints and ``medenc train`` on real data (scikit-learn's digits)."""

from __future__ import annotations

import io
from pathlib import Path

import nibabel
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch.nn import functional
from typer.testing import CliRunner

from medenc.core.mapping import Preprocess
from medenc.errors import InputError, OutputExistsError
from medenc.learn.models import build_model
from medenc.learn.train import (
    CHECKPOINT_FORMAT,
    ModelInfo,
    accuracy,
    augment_batch,
    fit,
    load_checkpoint,
    predict,
    prepare_inputs,
    recalibrate_batchnorm,
    save_checkpoint,
    seed_everything,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # the test machine's cores are shared: one thread is much faster than two fighting for them
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The 1,797 real 8x8 digit images, upsampled to 16x16 in [0, 1], and their labels."""
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    x = functional.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    return x, torch.tensor(data.target)


@pytest.fixture(scope="module")
def trained(digits):
    x, y = digits
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, test = perm[:1200], perm[1200:]
    seed_everything(0)
    model = build_model("smallcnn", 1, 10)
    history = fit(model, x[train], y[train], epochs=2, batch_size=32, lr=0.05, device="cpu", seed=0)
    return model, history, x[test], y[test]


def test_fit_learns_real_digits(trained) -> None:
    model, history, x_test, y_test = trained
    assert [r["epoch"] for r in history] == [1, 2]
    assert history[1]["loss"] < history[0]["loss"]
    assert history[-1]["train_accuracy"] > 0.9
    acc = accuracy(predict(model, x_test, batch_size=256), y_test)
    assert acc >= 0.90, acc
    probs = predict(model, x_test[:5], probs=True)
    assert torch.allclose(probs.sum(1), torch.ones(5), atol=1e-5)


def test_untrained_model_is_near_chance(digits) -> None:
    x, y = digits
    seed_everything(1)
    assert accuracy(predict(build_model("smallcnn", 1, 10), x[:300]), y[:300]) < 0.4


def test_checkpoint_round_trip(trained, tmp_path: Path) -> None:
    model, history, x_test, _ = trained
    info = ModelInfo(
        arch="smallcnn",
        classes=tuple(str(i) for i in range(10)),
        preprocess=Preprocess(size=(16, 16)).to_dict(),
        metrics={"test_accuracy": 0.97, "per_class": {"0": 1.0}},
        data_fingerprint="0123456789abcdef",
        seed=0,
        training={"epochs": 2, "history": history},
    )
    path = save_checkpoint(tmp_path / "model.pt", model, info)
    loaded, got = load_checkpoint(path)
    assert not loaded.training
    assert torch.equal(predict(loaded, x_test), predict(model, x_test))
    assert got.arch == "smallcnn" and got.classes == info.classes and got.in_channels == 1
    assert got.get_preprocess() == Preprocess(size=(16, 16))
    assert got.metrics == info.metrics and got.data_fingerprint == "0123456789abcdef" and got.seed == 0
    assert got.training["history"][0]["epoch"] == 1 and got.medenc_version
    with pytest.raises(OutputExistsError):
        save_checkpoint(path, model, info, force=False)
    assert not [p for p in tmp_path.iterdir() if p.name != "model.pt"]  # no temporary left behind


def test_bad_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00not a checkpoint")
    with pytest.raises(InputError, match=r"junk\.pt: not a readable model checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a medenc model checkpoint"):
        load_checkpoint(tmp_path / "other.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "evil": Evil()}, buffer)
    (tmp_path / "evil.pt").write_bytes(buffer.getvalue())
    with pytest.raises(InputError, match="not a readable model checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")

    model = build_model("smallcnn", 1, 3)
    save_checkpoint(tmp_path / "m.pt", model, ModelInfo(arch="smallcnn", classes=("a", "b", "c")))
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["arch"] = "preresnet20"
    torch.save(payload, tmp_path / "wrong.pt")
    with pytest.raises(InputError, match="weights do not fit architecture 'preresnet20'"):
        load_checkpoint(tmp_path / "wrong.pt")


def _train_small(x, y, seed: int) -> dict[str, torch.Tensor]:
    seed_everything(0)
    model = build_model("smallcnn", 1, 10)
    fit(model, x, y, epochs=1, batch_size=32, lr=0.05, device="cpu", seed=seed, augment=True)
    return model.state_dict()


def test_training_is_deterministic_on_cpu(digits) -> None:
    x, y = digits[0][:160], digits[1][:160]
    first, again, other = _train_small(x, y, 0), _train_small(x, y, 0), _train_small(x, y, 1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_recalibrate_batchnorm_uses_exact_statistics() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    x = torch.randn(40, 1, 4, 4) * 3 + 5
    recalibrate_batchnorm(model.train(), x, batch_size=8)
    with torch.no_grad():
        features = model[0](x)
    assert torch.allclose(model[1].running_mean, features.mean(dim=(0, 2, 3)), atol=1e-4)
    assert model[1].momentum == 0.1 and model.training


def test_augment_batch() -> None:
    x = torch.rand(8, 1, 16, 12) + 1.0  # strictly positive, so padding zeros are recognisable
    out = augment_batch(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert torch.equal(out, augment_batch(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, x)
    values = set(x.flatten().tolist()) | {0.0}
    assert set(out.flatten().tolist()) <= values
    flips = augment_batch(x, torch.Generator().manual_seed(3), pad=0)
    for a, b in zip(flips, x, strict=True):
        assert torch.equal(a, b) or torch.equal(a, b.flip(-1))
    shifted = augment_batch(x, torch.Generator().manual_seed(1), pad=2)
    assert (shifted == 0).any()


def test_fit_with_preprocess_and_bad_inputs(digits) -> None:
    x, y = digits[0][:64] * 900.0 + 100.0, digits[1][:64]  # raw intensities, like an MRI slice
    pre = Preprocess(size=(20, 20), rule="minmax")
    mapped = prepare_inputs(x, pre)
    assert mapped.shape == (64, 1, 20, 20)
    assert mapped.amin() >= -1e-4 and mapped.amax() <= 1 + 1e-4
    model = build_model("smallcnn", 1, 10)
    history = fit(model, x, y, epochs=1, batch_size=32, device="cpu", preprocess=pre, val=(x[:16], y[:16]),
                  recalibrate_bn=False)  # fmt: skip
    # the recorded validation accuracy is the model's on the (mapped) validation images
    assert history[0]["val_accuracy"] == pytest.approx(accuracy(predict(model, x[:16], preprocess=pre), y[:16]))
    assert predict(model, [t for t in x[:3]], preprocess=pre).shape == (3, 10)
    with pytest.raises(InputError, match="64 training images but 10 labels"):
        fit(model, x, y[:10], epochs=1)
    with pytest.raises(InputError, match=r"labels must lie in 0\.\.9"):
        fit(model, x, y + 5, epochs=1, device="cpu")
    with pytest.raises(InputError, match="unknown device"):
        fit(model, x, y, epochs=1, device="tpu:9")


# ------------------------------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def slice_manifest(tmp_path_factory, digits) -> Path:
    """Digits 0-2 as NIfTI slices with MRI-like int16 intensities, (H, W) and (H, W, 1), 16x16 native."""
    folder = tmp_path_factory.mktemp("slices")
    x, y = digits
    names = {0: "zero", 1: "one", 2: "two"}
    lines = ["case_id,label,split,image"]
    index = [i for i in range(len(y)) if int(y[i]) in names][:150]
    for n, i in enumerate(index):
        array = (x[i, 0].numpy() * 1200 + 40).astype(np.int16)
        if n % 2:
            array = array[..., None]
        nibabel.save(nibabel.Nifti1Image(array, np.eye(4)), str(folder / f"s{n:03d}.nii.gz"))
        lines.append(f"case{n:03d},{names[int(y[i])]},{'test' if n % 4 == 0 else 'train'},s{n:03d}.nii.gz")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    return folder / "manifest.csv"


def _cli(*args: str):
    from medenc.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_train_writes_a_self_describing_checkpoint(slice_manifest: Path, tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("arch: smallcnn\nepochs: 3\nbatch_size: 16\nsize: 32\nseed: 1\nlr: 0.5\n")
    out = tmp_path / "model.pt"
    result = _cli("train", slice_manifest, "--config", config, "--lr", "0.05", "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output and str(out) in result.output
    model, info = load_checkpoint(out)
    assert info.arch == "smallcnn" and info.classes == ("one", "two", "zero")
    assert info.get_preprocess() == Preprocess(size=(32, 32))
    # the --lr flag beats the config's lr; the other settings come from the config
    assert info.training["lr"] == 0.05 and info.training["epochs"] == 3 and info.seed == 1
    assert info.metrics["n_train"] == 112 and info.metrics["n_test"] == 38
    assert info.metrics["test_accuracy"] >= 0.8, info.metrics
    assert set(info.metrics["test_per_class_accuracy"]) == {"one", "two", "zero"}
    from medenc.experiment.dataset import read_manifest

    assert info.data_fingerprint == read_manifest(slice_manifest).fingerprint()
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arch", "resnet19"], "unknown architecture 'resnet19'"),
        (["--arch", "vgg11", "--size", "16"], "vgg11 needs inputs of at least 32 px"),
        (["--classes", "zero,one"], "unknown label"),
        (["--window", "fixed"], "needs --window-low and --window-high"),
        (["--size", "big"], "--size must be N or HxW"),
    ],
)
def test_cli_train_bad_inputs_exit_2(slice_manifest: Path, tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "m.pt"
    result = _cli("train", slice_manifest, "--out", out, "--arch", "smallcnn", "--epochs", "1", *args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medenc: error:") and message in lines[0], result.output
    assert not out.exists()


def test_cli_train_refuses_existing_output_and_bad_files(slice_manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    out.write_bytes(b"keep me")
    result = _cli("train", slice_manifest, "--out", out, "--epochs", "1")
    assert result.exit_code == 2 and "already exists" in result.output
    assert out.read_bytes() == b"keep me"
    result = _cli("train", tmp_path / "none.csv", "--out", tmp_path / "x.pt")
    assert result.exit_code == 2 and "manifest not found" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("arch: smallcnn\nlearning_rate: 0.1\n")
    result = _cli("train", slice_manifest, "--out", tmp_path / "x.pt", "--config", bad)
    assert result.exit_code == 2 and "unknown config key 'learning_rate'" in result.output
