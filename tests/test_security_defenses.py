"""The thief's input transformations and training recipes, and the fit() hooks they use."""

from __future__ import annotations

import pytest
import torch

from medenc.errors import InputError
from medenc.learn.train import fit
from medenc.security.defenses import (
    Defence,
    bit_depth,
    blur,
    crop_only,
    flip_only,
    jpeg,
    median,
    parse_defences,
    squeeze,
    untargeted_pgd,
)


def test_jpeg_is_a_real_lossy_codec() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 1, 24, 24)
    low, high = jpeg(x, 10), jpeg(x, 90)
    assert low.shape == x.shape and low.dtype == torch.float32
    assert torch.equal(low * 255, (low * 255).round())  # 8-bit values
    err_low, err_high = (low - x).abs().mean(), (high - x).abs().mean()
    assert err_high < err_low  # more quality, less loss
    assert torch.equal(squeeze(x), jpeg(x, 10))  # one channel: ISS = JPEG 10
    with pytest.raises(InputError, match="quality"):
        jpeg(x, 0)


def test_median_removes_salt_noise_and_blur_smooths() -> None:
    x = torch.full((1, 1, 9, 9), 0.2)
    x[0, 0, 4, 4] = 1.0
    assert torch.allclose(median(x, 3), torch.full_like(x, 0.2))
    b = blur(x, 1.0)
    assert b[0, 0, 4, 4] < 0.5 and float(b.sum()) == pytest.approx(float(x.sum()), rel=1e-4)
    with pytest.raises(InputError):
        median(x, 4)


def test_bit_depth_levels() -> None:
    x = torch.linspace(-0.2, 1.2, 101).view(1, 1, 1, 101)
    assert sorted(bit_depth(x, 2).unique().tolist()) == pytest.approx([0, 1 / 3, 2 / 3, 1])


def test_parse_defences_all_and_errors() -> None:
    all_ = parse_defences("all")
    assert {d.name for d in all_} >= {"jpeg", "squeeze", "blur", "flip-aug", "crop-aug", "early-stop", "advtrain"}
    assert parse_defences("jpeg:10, jpeg:10, blur:1.5") == [Defence("jpeg", 10.0), Defence("blur", 1.5)]
    assert parse_defences("none") == []
    assert Defence("jpeg", 10.0).label == "jpeg q10" and Defence("flip-aug").kind == "training"
    for text, match in [
        ("rotate", "unknown defence"),
        ("flip-aug:3", "takes no parameter"),
        ("jpeg:x", "must be a number"),
        ("jpeg:200", "quality"),
        ("", "at least one"),
    ]:
        with pytest.raises(InputError, match=match):
            parse_defences(text)


def test_flip_and_crop_recipes() -> None:
    x = torch.arange(2 * 16 * 16, dtype=torch.float32).view(2, 1, 16, 16)
    g = torch.Generator().manual_seed(0)
    flips = [flip_only(x, g) for _ in range(20)]
    assert all(torch.equal(f[i], x[i]) or torch.equal(f[i], x[i].flip(-1)) for f in flips for i in range(2))
    assert any(not torch.equal(f, x) for f in flips)
    crops = [crop_only(x, g) for _ in range(20)]
    assert all(c.shape == x.shape for c in crops) and any(not torch.equal(c, x) for c in crops)
    assert not any(torch.equal(c[0], x[0].flip(-1)) for c in crops)


def test_untargeted_pgd_raises_the_loss_within_the_budget() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 3, (8,))
    adv = untargeted_pgd(model, x, y, eps=0.5, steps=5)
    assert ((adv - x).flatten(1).norm(dim=1) <= 0.5 + 1e-5).all()
    loss = torch.nn.functional.cross_entropy
    assert loss(model(adv), y) > loss(model(x), y) + 0.1
    assert all(p.requires_grad for p in model.parameters()) and model.training


def test_fit_keep_best_restores_the_best_epoch_and_calls_the_hook() -> None:
    torch.manual_seed(0)
    x, y = torch.rand(40, 1, 8, 8), torch.randint(0, 2, (40,))
    val = (torch.rand(10, 1, 8, 8), torch.randint(0, 2, (10,)))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    calls = []

    def hook(m, xb, yb):
        calls.append(xb.shape[0])
        return xb

    history = fit(model, x, y, epochs=6, batch_size=20, lr=0.5, device="cpu", val=val, keep_best=True, batch_hook=hook)
    assert len(calls) == 12
    best = max(h["val_accuracy"] for h in history)
    with torch.no_grad():
        final = float((model(val[0]).argmax(1) == val[1]).float().mean())
    assert final == pytest.approx(best)
    with pytest.raises(InputError, match="validation"):
        fit(model, x, y, epochs=1, device="cpu", keep_best=True)
