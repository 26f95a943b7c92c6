"""The fast PGD paths give the plain path's results: attack_model, the in-place loop, compile, CUDA."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from medenc import EncryptionKey, Encryptor
from medenc.core.fast_model import _FoldConv2d, attack_model
from medenc.core.key import PGDSettings
from medenc.core.pgd import targeted_pgd
from medenc.learn.models import build_model
from tests.conftest import tiny_cnn


def _reference_pgd(model, x, target, *, eps, step, steps, norm, low, high, use_best):
    """The textbook loop (out of place, one op at a time), to hold the fast loop to its semantics."""
    view = (-1,) + (1,) * (x.ndim - 1)
    eps_t, step_t = torch.as_tensor(eps, dtype=x.dtype), torch.as_tensor(step, dtype=x.dtype)
    if eps_t.ndim:
        eps_t, step_t = eps_t.view(view), step_t.view(view)
    delta = torch.zeros_like(x)
    best, best_loss = x.clone(), torch.full((x.shape[0],), float("inf"), dtype=x.dtype)
    for i in range(steps + 1):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), target, reduction="none")
        better = loss.detach() < best_loss
        best_loss = torch.where(better, loss.detach(), best_loss)
        best = torch.where(better.view(view), (x + delta).detach(), best)
        if i == steps:
            break
        (grad,) = torch.autograd.grad(loss.sum(), delta)
        delta = delta.detach()
        if norm == "l2":
            delta = delta - step_t * grad / (grad.flatten(1).norm(dim=1).view(view) + 1e-12)
            delta = delta * torch.clamp(eps_t / (delta.flatten(1).norm(dim=1).view(view) + 1e-12), max=1.0)
        else:
            delta = (delta - step_t * grad.sign()).clamp(-eps_t, eps_t)
        delta = torch.clamp(x + delta, low, high) - x
    return best if use_best else x + delta


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("use_best", [True, False])
def test_in_place_loop_matches_the_textbook_loop(norm: str, use_best: bool) -> None:
    model = tiny_cnn().double().eval().requires_grad_(False)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(6, 1, 12, 12, generator=g, dtype=torch.float64)
    target = torch.randint(0, 5, (6,), generator=g)
    eps = torch.tensor([0.3, 0.6, 1.0, 2.0, 3.0, 5.0], dtype=torch.float64) * (1 if norm == "l2" else 0.02)
    low, high = x.amin(dim=(1, 2, 3)).view(-1, 1, 1, 1), torch.ones(6, 1, 1, 1, dtype=torch.float64)
    kwargs = dict(eps=eps, step=eps / 4, steps=7, norm=norm, use_best=use_best)
    ours = targeted_pgd(model, x, target, bounds=(low.view(-1), high.view(-1)), **kwargs)
    theirs = _reference_pgd(model, x, target, low=low, high=high, **kwargs)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-10)


@pytest.mark.parametrize("arch", ["smallcnn", "resnet18", "preresnet20"])
def test_attack_model_gives_the_same_logits_and_input_gradients(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, in_channels=1, num_classes=5)
    model.train()(torch.rand(8, 1, 32, 32))  # non-trivial batch norm running statistics
    model.eval()
    fast = attack_model(model)
    norms = [sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) for net in (model, fast)]
    assert norms[1] == (norms[0] // 2 + 1 if arch == "preresnet20" else 0)  # pre-activation: conv -> bn pairs only
    assert not fast.training and not any(p.requires_grad for p in fast.parameters())
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)
    # gradients in float64: in float32 rounding may flip a ReLU near zero and move a few pixels' gradient
    model, fast = model.double().requires_grad_(False), attack_model(model.double())
    x = x.double().requires_grad_(True)
    target = torch.tensor([0, 3])
    (plain_grad,) = torch.autograd.grad(F.cross_entropy(model(x), target), x)
    (fast_grad,) = torch.autograd.grad(F.cross_entropy(fast(x), target), x)
    torch.testing.assert_close(fast_grad, plain_grad, rtol=1e-9, atol=1e-12)


def test_attack_model_leaves_the_model_alone() -> None:
    model = build_model("smallcnn", 1, 5).train()
    model.features[0].weight.requires_grad_(False)
    before = copy.deepcopy(model.state_dict())
    flags = [p.requires_grad for p in model.parameters()]
    attack_model(model)
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(p.is_contiguous() for p in model.parameters())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


class _Shared(nn.Module):
    """Conv outputs used twice, a module called twice, a norm without running stats: none may fold."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv3, self.bn3 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4, track_running_stats=False)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv1(x)
        a = self.bn1(a) + a  # conv1's output has two users
        b = self.bn2(self.conv2(a))
        b = self.bn2(b)  # bn2 called twice
        c = self.bn3(self.conv3(b))
        return self.head(c.mean(dim=(2, 3)))


class _Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.head = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        if y.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            y = y * 2
        return self.head(y.mean(dim=(2, 3)))


@pytest.mark.parametrize("cls", [_Shared, _Untraceable])
def test_unsafe_or_untraceable_patterns_keep_their_logits(cls: type[nn.Module]) -> None:
    torch.manual_seed(0)
    model = cls()
    model.train()(torch.rand(6, model.conv1.in_channels if cls is _Shared else 1, 9, 9))
    model.eval()
    x = torch.rand(3, 2 if cls is _Shared else 1, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(attack_model(model)(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("in_channels", "kernel", "stride", "padding", "dilation", "channels_last"),
    [
        (1, 7, 2, 3, 1, True),
        (1, 7, 2, 3, 1, False),
        (3, 3, 1, 1, 1, True),
        (2, 5, 3, 0, 2, False),
        (1, 4, 2, 1, 1, True),
    ],
)
def test_fold_backward_conv_matches_conv2d(in_channels, kernel, stride, padding, dilation, channels_last) -> None:
    conv = nn.Conv2d(in_channels, 8, kernel, stride=stride, padding=padding, dilation=dilation).requires_grad_(False)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
    fold = _FoldConv2d(conv)
    x = torch.rand(3, in_channels, 23, 19, requires_grad=True)
    out_plain, out_fold = conv(x), fold(x)
    grad_out = torch.randn_like(out_plain)
    (g_plain,) = torch.autograd.grad(out_plain, x, grad_out)
    (g_fold,) = torch.autograd.grad(out_fold, x, grad_out)
    torch.testing.assert_close(out_fold, out_plain)
    torch.testing.assert_close(g_fold, g_plain, rtol=1e-4, atol=1e-5)


def test_fold_backward_under_bf16_autocast_returns_an_fp32_gradient() -> None:
    fold = _FoldConv2d(nn.Conv2d(1, 8, 3, padding=1).requires_grad_(False))
    x = torch.rand(2, 1, 10, 10, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fold(x)
    (grad,) = torch.autograd.grad(out.float().sum(), x)
    assert out.dtype == torch.bfloat16 and grad.dtype == torch.float32 and torch.isfinite(grad).all()


def test_fast_copy_attack_matches_plain_attack() -> None:
    torch.manual_seed(0)
    model = build_model("smallcnn", 1, 5)
    model.train()(torch.rand(16, 1, 16, 16))
    model.eval()
    x, target = torch.rand(8, 1, 16, 16), torch.arange(8) % 5
    kwargs = dict(eps=1.0, step=0.1, steps=6)
    plain = targeted_pgd(model, x, target, **kwargs)
    fast = targeted_pgd(attack_model(model), x, target, **kwargs)
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-3)
    with torch.no_grad():
        ce = F.cross_entropy(model(fast), target).item(), F.cross_entropy(model(plain), target).item()
    assert ce[0] == pytest.approx(ce[1], rel=1e-3)


def test_encryptor_fast_model_matches_plain_model() -> None:
    torch.manual_seed(0)
    model = build_model("smallcnn", 1, 5)
    model.train()(torch.rand(16, 1, 16, 16))
    model.eval()
    key = EncryptionKey.generate(list("abcde"), "hconcat", seed=3, pgd=PGDSettings(eps=1.0, step=0.1, steps=6))
    x, labels = torch.rand(9, 1, 16, 16), torch.arange(9) % 5
    fast = Encryptor(model, key, device="cpu", batch_size=8, precision="fp32").encrypt(x, labels)
    plain = Encryptor(model, key, device="cpu", batch_size=8, precision="fp32", fast_model=False).encrypt(x, labels)
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-3)
    assert all(p.requires_grad for p in model.parameters()) and all(p.is_contiguous() for p in model.parameters())


def test_encryptor_compile_pads_the_last_batch_to_one_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    """With compile on, every PGD call sees the same batch size; results are those of the eager run."""
    seen: list[int] = []

    def fake_compile(model: nn.Module, mode: str | None = None) -> nn.Module:
        def forward(t: torch.Tensor) -> torch.Tensor:
            seen.append(t.shape[0])
            return model(t)

        return forward  # type: ignore[return-value]

    key = EncryptionKey.generate(list("abcde"), "hconcat", seed=3, pgd=PGDSettings(eps=0.5, step=0.1, steps=3))
    x, labels = torch.rand(11, 1, 12, 12), torch.arange(11) % 5
    eager = Encryptor(tiny_cnn(), key, device="cpu", batch_size=8).encrypt_with_details(x, labels)
    monkeypatch.setattr(torch, "compile", fake_compile)
    compiled = Encryptor(tiny_cnn(), key, device="cpu", batch_size=8, compile=True).encrypt_with_details(x, labels)
    assert set(seen) == {8}  # 4 images x 2 targets per call; the last call (3 images) padded to 4
    torch.testing.assert_close(compiled.encrypted, eager.encrypted, rtol=0, atol=1e-6)
    torch.testing.assert_close(compiled.copies, eager.copies, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_compile_on_cpu_matches_eager() -> None:
    model = attack_model(tiny_cnn())
    x, target = torch.rand(4, 1, 12, 12), torch.tensor([0, 1, 2, 3])
    eager = targeted_pgd(model, x, target, eps=1.0, step=0.2, steps=3)
    compiled = targeted_pgd(model, x, target, eps=1.0, step=0.2, steps=3, compile=True)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-4)


# ------------------------------------------------------------------------------------------------------ CUDA
def _trained_smallcnn(device: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A smallcnn fitted for a few epochs on scikit-learn's digits (resized to 16x16), and test images."""
    datasets = pytest.importorskip("sklearn.datasets")
    data = datasets.load_digits()
    x = F.interpolate(torch.tensor(data.images, dtype=torch.float32)[:, None] / 16, size=(16, 16), mode="bilinear")
    x, y = x.clamp(0, 1).to(device), torch.tensor(data.target).to(device)
    torch.manual_seed(0)
    model = build_model("smallcnn", 1, 10).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(5):
        for start in range(0, 1400, 64):
            optimizer.zero_grad()
            F.cross_entropy(model(x[start : start + 64]), y[start : start + 64]).backward()
            optimizer.step()
    return model.eval(), x[1400:1656], (y[1400:1656] + 1) % 10


def _hit_and_loss(model: nn.Module, adv: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    with torch.no_grad():
        logits = model(adv).float()
    return (logits.argmax(1) == target).float().mean().item(), F.cross_entropy(logits, target).item()


@pytest.mark.gpu
def test_cuda_attack_model_logits_match() -> None:
    model, x, _ = _trained_smallcnn("cuda")
    with torch.no_grad():
        torch.testing.assert_close(attack_model(model, "cuda")(x), model(x), rtol=2e-2, atol=2e-2)


@pytest.mark.gpu
def test_cuda_bf16_fast_path_matches_fp32_plain_quality() -> None:
    model, x, target = _trained_smallcnn("cuda")
    kwargs = dict(eps=1.5, step=0.1, steps=30)
    plain = targeted_pgd(model, x, target, **kwargs)
    fast = targeted_pgd(attack_model(model, "cuda"), x, target, autocast_dtype=torch.bfloat16, **kwargs)
    assert fast.dtype == torch.float32 and fast.device.type == "cuda"
    assert ((fast - x).flatten(1).norm(dim=1) <= 1.5 + 1e-4).all()
    hit_plain, loss_plain = _hit_and_loss(model, plain, target)
    hit_fast, loss_fast = _hit_and_loss(model, fast, target)
    assert abs(hit_plain - hit_fast) <= 0.05
    assert abs(loss_plain - loss_fast) <= 0.1 * max(loss_plain, 0.05)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", [True, "reduce-overhead"])
def test_cuda_compile_matches_eager(mode: bool | str) -> None:
    model, x, target = _trained_smallcnn("cuda")
    fast = attack_model(model, "cuda")
    kwargs = dict(eps=1.5, step=0.1, steps=20, autocast_dtype=torch.bfloat16)
    eager = targeted_pgd(fast, x, target, **kwargs)
    compiled = targeted_pgd(fast, x, target, compile=mode, **kwargs)
    again = targeted_pgd(fast, x, target, compile=mode, **kwargs)  # reuses the compiled code
    assert ((compiled - x).flatten(1).norm(dim=1) <= 1.5 + 1e-4).all()
    for adv in (compiled, again):
        hit, loss = _hit_and_loss(model, adv, target)
        assert abs(hit - _hit_and_loss(model, eager, target)[0]) <= 0.05
        assert abs(loss - _hit_and_loss(model, eager, target)[1]) <= 0.1 * max(loss, 0.05)


@pytest.mark.gpu
def test_cuda_encryptor_compile_matches_eager_quality() -> None:
    model, x, _ = _trained_smallcnn("cuda")
    labels = torch.arange(x.shape[0] - 5) % 10  # 251 images: 8 calls of 32, the last one padded
    key = EncryptionKey.generate([str(d) for d in range(10)], "hconcat", seed=0, pgd=PGDSettings(eps=1.5, steps=10))
    results = [
        Encryptor(model, key, device="cuda", batch_size=64, compile=c).encrypt_with_details(x[: len(labels)], labels)
        for c in (False, True)
    ]
    hits = []
    for result in results:
        assert result.encrypted.shape == (len(labels), 1, 16, 16)
        with torch.no_grad():
            predicted = model(result.copies.flatten(0, 1).cuda()).argmax(1).cpu()
        hits.append((predicted == result.targets.flatten()).float().mean().item())
    assert abs(hits[0] - hits[1]) <= 0.05
