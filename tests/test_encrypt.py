"""Encryptor and the model-input mapping."""

from __future__ import annotations

import pytest
import torch

from medenc import EncryptionKey, Encryptor
from medenc.core.key import PGDSettings
from medenc.core.mapping import Preprocess
from tests.conftest import tiny_cnn

CLASSES = ["a", "b", "c", "d", "e"]


def _key(combiner: str = "hconcat", **pgd) -> EncryptionKey:
    settings = PGDSettings(**{"eps": 0.5, "step": 0.1, "steps": 5, **pgd})
    return EncryptionKey.generate(CLASSES, combiner, seed=11, ratio=(0.3, 0.7), pgd=settings)


@pytest.mark.parametrize("combiner", ["basic", "hconcat", "mixup", "mixup_concat", "cutmix"])
def test_shapes_and_copies_within_eps(combiner: str) -> None:
    key = _key(combiner)
    x = torch.rand(7, 1, 12, 15)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1])
    result = Encryptor(tiny_cnn(), key, device="cpu", batch_size=8).encrypt_with_details(x, labels)
    k = key.num_targets
    assert result.encrypted.shape == x.shape and result.copies.shape == (7, k, 1, 12, 15)
    assert torch.equal(result.targets, torch.tensor(key.targets)[labels])
    norms = (result.copies - x[:, None]).flatten(2).norm(dim=2)
    assert (norms <= 0.5 + 1e-5).all()
    assert result.encrypted.min() >= 0 and result.encrypted.max() <= 1


def test_hconcat_output_is_exactly_the_two_copies() -> None:
    key = _key("hconcat")
    x = torch.rand(5, 1, 8, 9)
    labels = torch.arange(5)
    result = Encryptor(tiny_cnn(), key, device="cpu").encrypt_with_details(x, labels)
    for i in range(5):
        cut = int(key.ratios[i] * 9 + 0.5)
        assert torch.equal(result.encrypted[i, ..., :cut], result.copies[i, 0, ..., :cut])
        assert torch.equal(result.encrypted[i, ..., cut:], result.copies[i, 1, ..., cut:])


def test_batching_does_not_change_results() -> None:
    key = _key("hconcat")
    x = torch.rand(9, 1, 10, 10)
    labels = torch.tensor([0, 1, 2, 3, 4, 4, 3, 2, 1])
    small = Encryptor(tiny_cnn(), key, device="cpu", batch_size=2).encrypt(x, labels)
    large = Encryptor(tiny_cnn(), key, device="cpu", batch_size=64).encrypt(x, labels)
    assert torch.allclose(small, large, atol=1e-5)


def test_deterministic_on_cpu_and_input_untouched() -> None:
    key = _key("mixup_concat")
    x = torch.rand(4, 1, 10, 10)
    before = x.clone()
    a = Encryptor(tiny_cnn(), key, device="cpu").encrypt(x, ["a", "b", "c", "d"])
    b = Encryptor(tiny_cnn(), key, device="cpu").encrypt(x, ["a", "b", "c", "d"])
    assert torch.equal(a, b) and torch.equal(x, before)


def test_label_validation() -> None:
    enc = Encryptor(tiny_cnn(), _key(), device="cpu")
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(Exception, match="not in the key's classes"):
        enc.encrypt(x, ["a", "glioma"])
    with pytest.raises(ValueError, match="outside the key's 5 classes"):
        enc.encrypt(x, torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        enc.encrypt(x, torch.tensor([0, 1, 2]))


def test_native_grid_with_mapping_respects_model_scale_eps() -> None:
    """PGD on native pixels (0..4000, 24x24) through the mapping to a 24x24 model input: exact L2 bound."""
    key = _key("basic", eps=0.8, step=0.2, steps=6)
    native = torch.rand(3, 1, 24, 24) * 3000 + 500
    prep = Preprocess(size=(24, 24), rule="percentile", low=1, high=99)
    mapping = prep.mapping(native)
    out = Encryptor(tiny_cnn(), key, device="cpu").encrypt(native, [0, 1, 2], mapping=mapping, bounds=(0.0, 4095.0))
    model_delta = mapping(out) - mapping(native)
    assert (model_delta.flatten(1).norm(dim=1) <= 0.8 + 1e-3).all()
    assert (model_delta.flatten(1).norm(dim=1) > 0.1).all()
    assert out.min() >= 0 and out.max() <= 4095


def test_mapping_resizes_and_scales_eps() -> None:
    prep = Preprocess(size=(16, 16), rule="minmax")
    native = torch.rand(2, 1, 64, 64) * 100
    mapping = prep.mapping(native)
    model_input = mapping(native)
    assert model_input.shape == (2, 1, 16, 16)
    width = native.flatten(1).amax(1) - native.flatten(1).amin(1)
    assert torch.allclose(mapping.eps_scale("linf"), width)
    assert torch.allclose(mapping.eps_scale("l2"), width * 4.0)
    sub = mapping.select(torch.tensor([1, 1, 0]))
    assert len(sub) == 3 and torch.equal(sub.lo, mapping.lo[[1, 1, 0]])
    assert Preprocess.from_dict(prep.to_dict()) == prep
    with pytest.raises(ValueError, match="unknown intensity rule"):
        Preprocess(size=(8, 8), rule="zscore")


@pytest.mark.gpu
def test_cuda_encryptor_bf16_channels_last() -> None:
    key = _key("hconcat", eps=1.0, steps=10)
    x = torch.rand(33, 1, 32, 32)
    enc = Encryptor(tiny_cnn(), key, device="cuda", batch_size=16, precision="auto")
    assert enc.precision == "bf16" and enc.channels_last
    out = enc.encrypt(x, torch.arange(33) % 5)
    assert out.device == x.device and out.dtype == x.dtype and out.shape == x.shape
    ref = Encryptor(tiny_cnn(), key, device="cpu", precision="fp32").encrypt(x, torch.arange(33) % 5)
    assert (out - ref).abs().mean() < 0.05


@pytest.mark.parametrize("fast_model", [True, False])
def test_the_callers_model_is_not_touched(fast_model: bool) -> None:
    """Encryptor works on a copy: the caller's model keeps its mode and flags, and later edits do not reach PGD."""
    key = _key("basic", eps=1.0, steps=3)
    model = tiny_cnn().train()
    flags = [p.requires_grad for p in model.parameters()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    enc = Encryptor(model, key, device="cpu", fast_model=fast_model)
    x = torch.rand(4, 1, 16, 16)
    first = enc.encrypt(x, [0, 1, 2, 0])
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # a caller that goes on training (or zeroes) its model ...
    assert torch.equal(enc.encrypt(x, [0, 1, 2, 0]), first)  # ... does not change what the encryptor does


@pytest.mark.gpu
def test_cuda_encryptor_leaves_the_model_on_the_cpu() -> None:
    model = tiny_cnn()
    Encryptor(model, _key("basic", eps=1.0, steps=2), device="cuda", fast_model=False)
    assert all(p.device.type == "cpu" for p in model.parameters())
