"""A real effect on real data: scikit-learn's handwritten digits (shipped in the wheel).

1. A small CNN trained on the digits is attacked with targeted PGD: the target class is reached.
2. A fresh CNN trained on the *basic*-encrypted training set (true labels) scores well on encrypted
   test images but far worse on the original test images: the paper's central claim.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medenc import EncryptionKey, Encryptor
from medenc.core.key import PGDSettings

pytestmark = pytest.mark.slow  # end to end: trains models (kept in the default run)

sklearn_datasets = pytest.importorskip("sklearn.datasets")

EPS = 1.5  # L2, on 8x8 images in [0, 1]


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


def _fit(x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int = 20) -> nn.Module:
    torch.manual_seed(seed)
    model = _cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        order = torch.randperm(len(y))
        for start in range(0, len(y), 64):
            batch = order[start : start + 64]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return (model(x).argmax(1) == y).float().mean().item()


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    data = sklearn_datasets.load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(data.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, test = order[:1400], order[1400:]
    return x[train], y[train], x[test], y[test]


def test_basic_encryption_defeats_a_model_trained_on_it(digits) -> None:
    x_train, y_train, x_test, y_test = digits
    base = _fit(x_train, y_train, seed=1)
    clean = _accuracy(base, x_test, y_test)
    assert clean > 0.95

    key = EncryptionKey.generate(
        [str(d) for d in range(10)], "basic", seed=0, pgd=PGDSettings(eps=EPS, step=0.1, steps=40)
    )
    encryptor = Encryptor(base, key, device="cpu", batch_size=512, precision="fp32")
    encrypted_train = encryptor.encrypt(x_train, y_train)
    result = encryptor.encrypt_with_details(x_test, y_test)
    targets = result.targets[:, 0]
    with torch.no_grad():
        hit = (base(result.encrypted).argmax(1) == targets).float().mean().item()
    mse = (result.encrypted - x_test).pow(2).mean().item()
    psnr = 10 * torch.log10(torch.tensor(1.0 / mse)).item()

    victim = _fit(encrypted_train, y_train, seed=2)
    on_encrypted = _accuracy(victim, result.encrypted, y_test)
    on_original = _accuracy(victim, x_test, y_test)
    print(
        f"\ndigits: base clean acc {clean:.3f}; targeted PGD hit rate {hit:.3f} (L2 eps {EPS}, PSNR {psnr:.1f} dB); "
        f"victim trained on encrypted: encrypted test {on_encrypted:.3f}, original test {on_original:.3f}"
    )
    assert hit >= 0.95
    assert on_encrypted >= 0.9
    assert on_encrypted - on_original >= 0.30
