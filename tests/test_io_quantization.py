"""Rounding to the stored integers must not undo the encryption (a trained model, re-read files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medenc.core.encrypt import Encryptor
from medenc.core.key import EncryptionKey, PGDSettings
from medenc.core.mapping import Preprocess
from medenc.io import read_image, write_like
from medenc.study.encrypt import encrypt_volume
from tests.helpers import make_series

SLOPE, INTERCEPT = 2.5, -100.0  # one stored unit = 2.5 native units
CENTERS = ((8, 8), (16, 16), (24, 24))  # class -> blob centre


@pytest.fixture(autouse=True)
def _one_thread():
    """Training is small: one thread is faster than two on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """12-bit stored images: a bright blob whose position gives the class, on a noisy background."""
    yy, xx = np.mgrid[0:32, 0:32]
    out = rng.normal(600, 120, size=(len(labels), 32, 32))
    for i, c in enumerate(labels):
        cy, cx = CENTERS[c] + rng.integers(-2, 3, size=2)
        out[i] += 1800 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 18.0)
    return np.clip(np.rint(out), 0, 4095).astype(np.uint16)


def train(preprocess: Preprocess) -> torch.nn.Module:
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    labels = rng.integers(0, 3, size=384)
    x = torch.from_numpy(images(labels, rng).astype(np.float32) * SLOPE + INTERCEPT)[:, None]
    x = preprocess.to_model(x)
    y = torch.from_numpy(labels)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4),
        torch.nn.Flatten(), torch.nn.Linear(128, 3),
    )  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(240):
        index = torch.from_numpy(rng.integers(0, len(y), size=64))
        loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.95, "the tiny model did not learn"
    return model


def test_written_and_reread_pixels_still_hit_the_targets(tmp_path: Path) -> None:
    preprocess = Preprocess(size=(16, 16), rule="fixed", low=INTERCEPT, high=4095 * SLOPE + INTERCEPT)
    model = train(preprocess)
    rng = np.random.default_rng(1)
    labels = np.array([0, 1, 2, 0, 1, 2])
    make_series(tmp_path / "src", images(labels, rng), slope=SLOPE, intercept=INTERCEPT)
    volume = read_image(tmp_path / "src")
    key = EncryptionKey.generate(("a", "b", "c"), "basic", seed=3, pgd=PGDSettings(eps=4.0, step=0.3, steps=40))
    encryptor = Encryptor(model, key, device="cpu", precision="fp32")
    slices = list(range(len(labels)))
    encrypted = encrypt_volume(volume, encryptor, labels.tolist(), slices=slices, preprocess=preprocess)
    write_like(volume, encrypted, tmp_path / "out")
    again = read_image(tmp_path / "out")
    targets = torch.tensor([key.targets[c][0] for c in labels])

    def predict(voxels: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return model(preprocess.to_model(torch.from_numpy(voxels[:, None].astype(np.float32)))).argmax(1)

    assert torch.equal(predict(volume.voxels), torch.from_numpy(labels))  # originals: true classes
    assert torch.equal(predict(encrypted), targets)  # before rounding
    assert torch.equal(predict(again.voxels), targets)  # after rounding to stored integers and re-reading
    # the rounding is small next to the perturbation (model-input L2 per image)
    scale = preprocess.high - preprocess.low
    perturbation = np.linalg.norm((encrypted - volume.voxels).reshape(len(labels), -1), axis=1) / scale
    rounding = np.linalg.norm((again.voxels - encrypted).reshape(len(labels), -1), axis=1) / scale
    assert rounding.max() < 0.25 * perturbation.min(), (rounding, perturbation)
