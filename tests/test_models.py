"""The classifier zoo: every architecture builds, runs forward/backward and has the expected size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medenc.errors import InputError
from medenc.learn.models import ARCHITECTURES, PreResNet, build_model, count_parameters

# trainable parameters for 1 input channel and 5 classes (a wrong depth/width changes these)
EXPECTED_PARAMETERS = {
    "resnet18": 11_172_805,
    "densenet121": 6_952_709,
    "vgg11": 9_224_645,
    "vgg19": 20_031_301,
    "preresnet20": 271_669,
    "preresnet110": 1_729_909,
    "smallcnn": 243_173,
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # the test machine's cores are shared: one thread is much faster than two fighting for them
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


REQUIRED = ["resnet18", "densenet121", "vgg11", "vgg19", "preresnet20", "preresnet110", "smallcnn"]


def test_registry_has_the_required_architectures() -> None:
    assert set(REQUIRED) <= set(ARCHITECTURES)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_forward_backward_shape_gradients_and_size(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, in_channels=1, num_classes=5)
    if arch in EXPECTED_PARAMETERS:
        assert count_parameters(model) == EXPECTED_PARAMETERS[arch]
    size = max(16, ARCHITECTURES[arch].min_size)
    x = torch.randn(2, 1, size, size, requires_grad=True)
    logits = model(x)
    assert logits.shape == (2, 5)
    assert torch.isfinite(logits).all()
    logits.logsumexp(1).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("arch", ["smallcnn", "vgg11", "preresnet20"])
def test_other_sizes_and_channels(arch: str) -> None:
    model = build_model(arch, in_channels=3, num_classes=4).eval()
    for h, w in [(32, 48), (40, 40)]:
        assert model(torch.randn(1, 3, h, w)).shape == (1, 4)


def _count(model: nn.Module, kind: type, kernel: int | None = None) -> int:
    found = [m for m in model.modules() if isinstance(m, kind)]
    return sum(1 for m in found if kernel is None or m.kernel_size == (kernel, kernel))


@pytest.mark.parametrize("depth", [20, 110])
def test_preresnet_depth(depth: int) -> None:
    model = build_model(f"preresnet{depth}", 1, 10)
    # depth = 3x3 convolutions (stem + two per block) + the final linear layer; shortcuts are 1x1
    assert _count(model, nn.Conv2d, 3) + _count(model, nn.Linear) == depth
    assert _count(model, nn.Conv2d, 1) == 2
    assert len(model.blocks) == 3 * (depth - 2) // 6
    with pytest.raises(ValueError, match="6n\\+2"):
        PreResNet(21, 1, 10)


def test_vgg_depth() -> None:
    # VGG-d's convolution stack (d - 3 conv layers); the CIFAR head is one linear layer, not three
    for depth in (11, 19):
        model = build_model(f"vgg{depth}", 1, 10)
        assert _count(model, nn.Conv2d, 3) == depth - 3
        assert _count(model, nn.Linear) == 1
        assert _count(model, nn.BatchNorm2d) == depth - 3


def test_seeded_build_is_reproducible() -> None:
    torch.manual_seed(3)
    a = build_model("smallcnn", 1, 5)
    torch.manual_seed(3)
    b = build_model("smallcnn", 1, 5)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name


def test_unknown_architecture_lists_known_ones() -> None:
    with pytest.raises(InputError, match=r"unknown architecture 'resnet19'.*resnet18.*smallcnn"):
        build_model("resnet19", 1, 5)
    with pytest.raises(InputError, match="at least 2 classes"):
        build_model("smallcnn", 1, 1)
