"""The thief's newer counter-measures: compression at a ratio, heavy augmentation, MixUp/CutMix/Cutout, SimCLR."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch.nn import functional

from medenc.errors import InputError
from medenc.security.augment import cutmix, cutout, mixup, random_erasing, strong_augment, ueraser_hook
from medenc.security.codecs import compress_to_ratio, jpeg2000_payload, jpeg_payload
from medenc.security.defenses import Defence, parse_defences
from medenc.security.pretrain import nt_xent, replace_head, simclr_pretrain


def _phantom(n: int = 4, size: int = 64) -> torch.Tensor:
    """Smooth images with an edge and noise: compressible, but not trivially."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    base = ((xx**2 + yy**2) < 0.6).float() * 0.6 + 0.2 * xx
    return (base + 0.05 * torch.randn(n, 1, size, size, generator=g)).clamp(0, 1)


def test_payload_parsers_find_the_entropy_coded_data() -> None:
    from PIL import Image

    pixels = (torch.rand(32, 32, generator=torch.Generator().manual_seed(1)) * 255).byte().numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="JPEG", quality=50)
    data = buffer.getvalue()
    start = data.index(b"\xff\xda")  # start of scan, then its 2-byte length
    header = start + 2 + int.from_bytes(data[start + 2 : start + 4], "big")
    assert jpeg_payload(data) == len(data) - header and data[-2:] == b"\xff\xd9"
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="JPEG2000", no_jp2=True)
    data = buffer.getvalue()
    assert jpeg2000_payload(data) == len(data) - (data.index(b"\xff\x93") + 2)
    with pytest.raises(ValueError):
        jpeg_payload(b"\xff\xd8\x00\x00")


@pytest.mark.parametrize("codec", ["jpeg", "jpeg2000"])
@pytest.mark.parametrize("ratio", [10.0, 20.0])
def test_compression_meets_the_ratio_and_reports_it(codec: str, ratio: float) -> None:
    x = _phantom()
    stats: dict = {}
    y = compress_to_ratio(x, codec, ratio, stats=stats)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert stats["images"] == 4 and stats["met_target"] == 1.0 and stats["ratio_min"] >= ratio
    assert stats["ratio_max"] <= ratio * (1.1 if codec == "jpeg2000" else 1.6)
    error = (y - x).abs().mean()
    assert 0.003 < error < 0.1  # lossy, but the image survives
    tighter: dict = {}
    compress_to_ratio(x, codec, ratio * 2, stats=tighter)
    assert tighter["ratio_mean"] > stats["ratio_mean"]


def test_compression_rows_parse_label_and_check_their_ratio() -> None:
    rows = parse_defences("jpeg-cr:10,j2k-cr:20,j2k-cr,ueraser,ueraser:1,mixup,cutmix,cutout,ssl-finetune")
    assert [d.label for d in rows] == [
        "jpeg 10:1",
        "jpeg2000 20:1",
        "jpeg2000 10:1",
        "ueraser (max of 5)",
        "ueraser (1 draw)",
        "mixup",
        "cutmix",
        "cutout",
        "ssl-finetune",
    ]
    assert Defence("j2k-cr", 12.5).label == "jpeg2000 12.5:1" and Defence("ueraser", 3.0).value == 3
    for text, match in [
        ("jpeg-cr:1", "ratio"),
        ("ueraser:0", "repeats"),
        ("ueraser:2.5", "whole"),
        ("mixup:2", "no parameter"),
    ]:
        with pytest.raises(InputError, match=match):
            parse_defences(text)
    defaults = {d.label for d in parse_defences("all")}
    assert {
        "jpeg 10:1",
        "jpeg 20:1",
        "jpeg2000 10:1",
        "jpeg2000 20:1",
        "ueraser (max of 5)",
        "squeeze (ISS) q10",
    } <= defaults


def test_strong_augment_is_seeded_and_changes_images() -> None:
    x = _phantom(3, 32)
    a = strong_augment(x, torch.Generator().manual_seed(4))
    b = strong_augment(x, torch.Generator().manual_seed(4))
    c = strong_augment(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == x.shape
    assert (a - x).abs().mean() > 0.05
    erased = random_erasing(torch.zeros(8, 1, 16, 16), torch.Generator().manual_seed(0), p=1.0)
    changed = (erased != 0).flatten(1).sum(1)
    assert (changed > 0).all() and (changed <= 0.34 * 256 + 16).all()  # one box of 2-33% of the area each


def test_cutout_zeroes_one_square_of_half_the_side() -> None:
    x = torch.ones(64, 1, 16, 16)
    y = cutout(x, torch.Generator().manual_seed(0))
    zeros = (y == 0).flatten(1).sum(1)
    assert zeros.max() == 64 and (zeros > 0).all()  # 8 x 8 when inside the image, clipped at the border
    rows = (y[zeros == 64] == 0).any(-1).sum(-1)
    assert (rows == 8).all()


def test_mixup_and_cutmix_mix_targets_by_the_mixed_content() -> None:
    y = torch.arange(5)
    x = y.float().view(-1, 1, 1, 1).expand(5, 1, 8, 8).clone()  # image value = its label
    for mix in (mixup, cutmix):
        mixed, target = mix(x, y, torch.Generator().manual_seed(3), num_classes=5)
        assert target.shape == (5, 5) and torch.allclose(target.sum(1), torch.ones(5))
        expected = (target * torch.arange(5.0)).sum(1)  # the mean of each mixed image, from its targets
        assert torch.allclose(mixed.mean(dim=(1, 2, 3)), expected, atol=1e-5)
        assert (target.max(1).values < 1).any() or mix is cutmix


def test_fit_with_one_hot_targets_equals_plain_training() -> None:
    from medenc.learn.models import build_model
    from medenc.learn.train import fit

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(24, 1, 12, 12, generator=g), torch.arange(24) % 3
    states = []
    for mix in (None, lambda xb, yb, _g: (xb, functional.one_hot(yb, 3).float())):
        torch.manual_seed(0)
        model = build_model("smallcnn", in_channels=1, num_classes=3)
        fit(model, x, y, epochs=2, batch_size=8, device="cpu", mix=mix)
        states.append(model.state_dict())
    for a, b in zip(states[0].values(), states[1].values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)


def test_ueraser_max_keeps_the_highest_loss_draw() -> None:
    from medenc.learn.models import build_model

    torch.manual_seed(0)
    model = build_model("smallcnn", in_channels=1, num_classes=3).train()
    xb, yb = _phantom(6, 16), torch.tensor([0, 1, 2, 0, 1, 2])
    chosen = ueraser_hook(3)(model, xb, yb)
    g = torch.Generator().manual_seed(20230)  # the hook's own generator
    draws = torch.stack([strong_augment(xb, g) for _ in range(3)])
    with torch.no_grad():
        losses = torch.stack([functional.cross_entropy(model(d), yb, reduction="none") for d in draws])
    expected = draws[losses.argmax(0), torch.arange(6)]
    assert torch.allclose(chosen, expected, atol=1e-6)


def test_nt_xent_on_known_embeddings_and_heads() -> None:
    z = torch.eye(2)
    assert float(nt_xent(z, z)) == pytest.approx(math.log(1 + 2 * math.exp(-2)), rel=1e-5)
    assert float(nt_xent(z, z.flip(0))) > float(nt_xent(z, z))  # partners far apart: higher loss
    from medenc.learn.models import build_model

    for arch in ("smallcnn", "preresnet20"):
        model = build_model(arch, in_channels=1, num_classes=128)
        head = replace_head(model, 5)
        assert head.out_features == 5 and model(torch.rand(2, 1, 16, 16)).shape == (2, 5)


def test_simclr_pretrain_is_seeded_and_learns() -> None:
    x = _phantom(16, 16)
    first, history = simclr_pretrain("smallcnn", x, epochs=3, batch_size=8, seed=1, device="cpu", dim=16)
    second, _ = simclr_pretrain("smallcnn", x, epochs=3, batch_size=8, seed=1, device="cpu", dim=16)
    assert len(history) == 3 and all(h["loss"] > 0 for h in history)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert first(x[:2]).shape == (2, 16)
