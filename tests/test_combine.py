"""Combiners: exact seams, mixes and boxes."""

from __future__ import annotations

import pytest
import torch

from medenc.core.combine import basic, combine, cutmix, hconcat, left_mask, mixup, mixup_concat


@pytest.mark.parametrize("width", [1, 2, 7, 31, 32, 320])
@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5, 0.37, 0.9])
def test_hconcat_seam_exact(width: int, ratio: float) -> None:
    first = torch.zeros(2, 1, 3, width)
    second = torch.ones(2, 1, 3, width)
    out = hconcat(torch.stack([first, second], 1), ratio)
    cut = int(ratio * width + 0.5)  # round half up
    assert out.shape == first.shape
    assert torch.all(out[..., :cut] == 0) and torch.all(out[..., cut:] == 1)


def test_hconcat_per_sample_ratio_and_half_rounding() -> None:
    copies = torch.stack([torch.zeros(3, 1, 2, 5), torch.ones(3, 1, 2, 5)], 1)
    out = hconcat(copies, torch.tensor([0.1, 0.5, 0.7]))  # 0.5, 2.5, 3.5 columns -> 1, 3, 4
    assert out[:, 0, 0].tolist() == [[0, 1, 1, 1, 1], [0, 0, 0, 1, 1], [0, 0, 0, 0, 1]]
    assert left_mask(0.5, torch.zeros(1, 1, 4, 4)).shape == (1, 1, 1, 4)


def test_mixup_and_mixup_concat() -> None:
    a, b, c, d = (torch.full((2, 1, 4, 6), v) for v in (0.0, 1.0, 2.0, 4.0))
    assert torch.allclose(mixup(torch.stack([a, b], 1), 0.25), torch.full_like(a, 0.75))
    out = mixup_concat(torch.stack([a, b, c, d], 1), ratio=0.5, lam=0.5)
    assert torch.allclose(out[..., :3], torch.full((2, 1, 4, 3), 0.5))
    assert torch.allclose(out[..., 3:], torch.full((2, 1, 4, 3), 3.0))


def test_cutmix_box() -> None:
    copies = torch.stack([torch.zeros(1, 1, 10, 10), torch.ones(1, 1, 10, 10)], 1)
    out = cutmix(copies, [[0.2, 0.3, 0.5, 0.4]])
    expected = torch.zeros(10, 10)
    expected[2:7, 3:7] = 1
    assert torch.equal(out[0, 0], expected)


def test_basic_and_dispatch_errors() -> None:
    x = torch.rand(2, 1, 1, 4, 4)
    assert torch.equal(basic(x), x[:, 0])
    with pytest.raises(ValueError, match="unknown combiner"):
        combine("swirl", x)
    with pytest.raises(ValueError, match=r"needs copies of shape \(N, 2"):
        hconcat(x)
    with pytest.raises(ValueError, match="cutmix needs boxes"):
        combine("cutmix", torch.rand(2, 2, 1, 4, 4))
