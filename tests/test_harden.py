"""Hardening: EOT transforms, ensembles, the flip-consistent layout, per-image ratios and their key fields."""

from __future__ import annotations

import json

import pytest
import torch

from medenc import EncryptionKey, Encryptor
from medenc.core.combine import combine, hconcat_mirror
from medenc.core.harden import (
    EnsembleModel,
    EOTModel,
    differentiable_jpeg,
    gaussian_blur,
    jitter_ratios,
    random_shift,
)
from medenc.core.key import PGDSettings
from medenc.errors import KeyFileError
from medenc.security.defenses import jpeg
from tests.conftest import tiny_cnn

CLASSES = ["a", "b", "c", "d", "e"]


def test_differentiable_jpeg_tracks_the_real_codec_and_passes_gradients() -> None:
    torch.manual_seed(0)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(3, 1, 40, 40), 5, 1, 2)  # image-like, not pure noise
    noisy = (smooth + 0.05 * torch.randn_like(smooth)).clamp(0, 1)
    for quality in (10, 50):
        approx, real = differentiable_jpeg(noisy, quality).clamp(0, 1), jpeg(noisy, quality)
        # the approximation is much closer to Pillow's output than the input is
        assert (approx - real).abs().mean() < 0.3 * (noisy - real).abs().mean()
    x = noisy.clone().requires_grad_(True)
    differentiable_jpeg(x, 30).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_blur_keeps_constants_and_shift_moves_pixels() -> None:
    flat = torch.full((2, 1, 16, 16), 0.3)
    assert torch.allclose(gaussian_blur(flat, 1.0), flat, atol=1e-6)
    x = torch.zeros(64, 1, 16, 16)
    x[:, 0, 8, 8] = 1.0
    moved = random_shift(x, torch.Generator().manual_seed(3), pad=2)
    assert moved.shape == x.shape and torch.equal(moved.sum(dim=(1, 2, 3)), torch.ones(64))  # one pixel each
    where = moved[:, 0].flatten(1).argmax(1)
    dy, dx = where // 16 - 8, where % 16 - 8
    assert dy.abs().max() <= 2 and dx.abs().max() <= 2  # within -pad..pad
    assert len(set(zip(dy.tolist(), dx.tolist()))) > 15  # many of the 25 shifts drawn, not the identity


def test_mirror_layout_survives_a_flip_and_keeps_the_share() -> None:
    ones, zeros = torch.ones(4, 1, 3, 20), torch.zeros(4, 1, 3, 20)
    copies = torch.stack([ones, zeros], dim=1)  # copy 1 = 1, copy 2 = 0
    ratio = torch.tensor([0.2, 0.4, 0.5, 0.8])
    out = hconcat_mirror(copies, ratio)
    assert torch.equal(out.flip(-1), out)  # a flip maps the layout onto itself
    assert torch.allclose(out.mean(dim=(1, 2, 3)), ratio)  # copy 1 supplies a share r of the columns
    plain = combine("hconcat", copies, ratio=ratio)
    assert not torch.equal(plain.flip(-1), plain)  # the paper's layout is swapped by a flip


def test_ensemble_and_eot_average_log_probabilities() -> None:
    a, b = tiny_cnn(), tiny_cnn()
    with torch.no_grad():
        for p in b.parameters():
            p.mul_(-1.0)
    x = torch.rand(3, 1, 12, 12)
    ensemble = EnsembleModel([a, b])
    expected = (a(x).log_softmax(1) + b(x).log_softmax(1)) / 2
    assert torch.allclose(ensemble(x), expected, atol=1e-6)
    eot = EOTModel(a, ("flip",), samples=64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        straight, flipped, seen = a(x).log_softmax(1), a(x.flip(-1)).log_softmax(1), eot(x)
    # each output is a mixture of the straight and the flipped view, strictly inside for 64 coin flips
    low, high = torch.minimum(straight, flipped), torch.maximum(straight, flipped)
    assert (seen >= low - 1e-5).all() and (seen <= high + 1e-5).all()
    differ = (high - low) > 1e-3
    assert ((seen > low + 1e-4) & (seen < high - 1e-4))[differ].float().mean() > 0.9
    with pytest.raises(ValueError, match="unknown EOT"):
        EOTModel(a, ("rotate",))


def test_jitter_ratios_stay_inside_and_vary() -> None:
    r = torch.full((500,), 0.5)
    out = jitter_ratios(r, 0.2, torch.Generator().manual_seed(0))
    assert out.min() >= 0.3 - 1e-6 and out.max() <= 0.7 + 1e-6 and out.std() > 0.08
    assert torch.equal(jitter_ratios(r, 0.0, torch.Generator()), r)


def test_hardened_key_round_trip_and_old_keys_keep_their_fingerprint(tmp_path) -> None:
    plain = EncryptionKey.generate(CLASSES, "hconcat", seed=4)
    data = plain.to_dict()
    assert not {"eot", "eot_samples", "ratio_jitter"} & set(data)  # old layout, old fingerprint
    assert EncryptionKey.from_dict(json.loads(json.dumps(data))).fingerprint() == plain.fingerprint()
    hard = EncryptionKey.generate(
        CLASSES, "hconcat_mirror", seed=4, eot=("flip", "crop"), eot_samples=2, ratio_jitter=0.1
    )
    assert hard.hardened and not plain.hardened and hard.fingerprint() != plain.fingerprint()
    path = hard.save(tmp_path / "k.json")
    loaded = EncryptionKey.load(path)
    assert loaded == hard and loaded.eot == ("flip", "crop") and loaded.ratio_jitter == 0.1
    for field, value, match in [
        ("eot", ["swirl"], "unknown EOT"),
        ("eot", "flip", "eot must be a list"),
        ("eot_samples", 0, "eot_samples"),
        ("ratio_jitter", 0.7, "ratio_jitter"),
    ]:
        bad = {**hard.to_dict(), field: value}
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(KeyFileError, match=match):
            EncryptionKey.load(tmp_path / "bad.json")


def _flip_hit_rate(key: EncryptionKey, model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor) -> float:
    result = Encryptor(model, key, device="cpu", batch_size=64, fast_model=False).encrypt_with_details(x, labels)
    copies = result.copies.flatten(0, 1)
    with torch.no_grad():
        pred = model(copies.flip(-1)).argmax(1)
    return float((pred == result.targets.flatten()).float().mean())


def test_eot_flips_make_the_perturbation_survive_a_flip() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 5)).eval()  # not flip-invariant
    x = torch.rand(24, 1, 16, 16)
    labels = torch.arange(24) % 5
    pgd = PGDSettings(eps=2.0, step=0.5, steps=12)
    plain = EncryptionKey.generate(CLASSES, "basic", seed=2, pgd=pgd)
    hard = EncryptionKey.generate(CLASSES, "basic", seed=2, pgd=pgd, eot=("flip",), eot_samples=2)
    # measured: about 0.17 of plain copies keep their target once flipped, about 0.9 of EOT copies
    assert _flip_hit_rate(hard, model, x, labels) > _flip_hit_rate(plain, model, x, labels) + 0.4
    # with EOT the last iterate is kept (a lucky random draw must not pick an early, small perturbation)
    copies = Encryptor(model, hard, device="cpu", fast_model=False).encrypt_with_details(x, labels).copies
    assert ((copies - x[:, None]).flatten(2).norm(dim=2) > 0.95 * 2.0).all()  # clipping to 0..1 trims a bit


def test_encryptor_with_ensemble_and_jitter_stays_in_the_ball() -> None:
    key = EncryptionKey.generate(
        CLASSES, "hconcat", seed=5, pgd=PGDSettings(eps=0.5, step=0.2, steps=3), ratio_jitter=0.2, eot=("jpeg", "blur")
    )
    x = torch.rand(6, 1, 16, 16)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    enc = Encryptor(tiny_cnn(), key, device="cpu", extra_models=[tiny_cnn(), tiny_cnn()])
    assert isinstance(enc.attacked_model, EOTModel) and isinstance(enc.attacked_model.model, EnsembleModel)
    result = enc.encrypt_with_details(x, labels)
    norms = (result.copies - x[:, None]).flatten(2).norm(dim=2)
    assert (norms <= 0.5 + 1e-5).all()
    # jittered split: the seam is not at column 8 for every image
    seams = [int((result.encrypted[i, 0, 0] == result.copies[i, 0, 0, 0]).long().cumprod(0).sum()) for i in range(6)]
    assert len(set(seams)) > 1
