"""Shared fixtures and the device-aware markers."""

from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA (no GPU on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tiny_cnn(num_classes: int = 5, in_channels: int = 1) -> torch.nn.Module:
    """A small conv net with random weights, enough for PGD mechanics tests."""
    torch.manual_seed(1234)
    return torch.nn.Sequential(
        torch.nn.Conv2d(in_channels, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(32, num_classes),
    )


@pytest.fixture
def cnn() -> torch.nn.Module:
    return tiny_cnn()
