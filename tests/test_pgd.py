"""targeted_pgd: norm balls, bounds, shapes, model state, use_best."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medenc.core.pgd import project, targeted_pgd
from tests.conftest import tiny_cnn


def _norms(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.reshape(delta.shape[0], -1)
    return flat.norm(dim=1) if norm == "l2" else flat.abs().amax(dim=1)


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("seed", range(4))
def test_perturbation_within_eps_and_bounds(norm: str, seed: int, cnn: nn.Module) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(6, 1, 12, 13, generator=g)
    eps = 0.7 if norm == "l2" else 0.05
    target = torch.randint(0, 5, (6,), generator=g)
    adv = targeted_pgd(
        cnn,
        x,
        target,
        eps=eps,
        step=eps / 4,
        steps=8,
        norm=norm,
        bounds=(0.0, 1.0),
        random_start=bool(seed % 2),
        generator=g,
    )
    assert (_norms(adv - x, norm) <= eps + 1e-5).all()
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    assert adv.shape == x.shape and adv.dtype == x.dtype


def test_per_sample_eps_and_bounds(cnn: nn.Module) -> None:
    x = torch.rand(4, 1, 10, 10) * 100 + 50
    eps = torch.tensor([1.0, 5.0, 20.0, 40.0])
    # tight per-sample bounds (each image's own range) for the first two, loose for the others
    low = torch.cat([x[:2].amin(dim=(1, 2, 3)), torch.zeros(2)])
    high = torch.cat([x[:2].amax(dim=(1, 2, 3)), torch.full((2,), 1000.0)])
    adv = targeted_pgd(
        cnn,
        x,
        torch.zeros(4, dtype=torch.long),
        eps=eps,
        step=eps / 3,
        steps=6,
        bounds=(low, high),
        input_transform=lambda t: (t - 50) / 100,
    )
    assert (_norms(adv - x, "l2") <= eps + 1e-4).all()
    assert (adv.amin(dim=(1, 2, 3)) >= low - 1e-6).all() and (adv.amax(dim=(1, 2, 3)) <= high + 1e-6).all()


def test_reaches_targets() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(144, 5))  # every class is reachable for a linear model
    x = torch.rand(16, 1, 12, 12)
    target = torch.arange(16) % 5
    before = nn.functional.cross_entropy(model(x), target, reduction="none")
    adv = targeted_pgd(model, x, target, eps=5.0, step=0.5, steps=30, bounds=(-10.0, 10.0))
    after = nn.functional.cross_entropy(model(adv), target, reduction="none")
    assert (after < before).all()
    assert (model(adv).argmax(1) == target).all()


def test_use_best_is_never_worse_than_last(cnn: nn.Module) -> None:
    x = torch.rand(8, 1, 12, 12)
    target = torch.arange(8) % 5
    kwargs = dict(eps=3.0, step=2.0, steps=15)  # a large step oscillates, so the last iterate is not the best
    best = targeted_pgd(cnn, x, target, use_best=True, **kwargs)
    last = targeted_pgd(cnn, x, target, use_best=False, **kwargs)
    ce = nn.functional.cross_entropy
    best_loss, last_loss = ce(cnn(best), target, reduction="none"), ce(cnn(last), target, reduction="none")
    assert (best_loss <= last_loss + 1e-5).all()
    assert (best_loss < last_loss - 1e-4).any()  # use_best returned an earlier iterate for some samples
    # ... and that iterate is one the walk went through: a point of the ball, not the start
    assert not torch.equal(best, x) and (_norms(best - x, "l2") <= 3.0 + 1e-5).all()


@pytest.mark.parametrize("shape", [(3, 2, 20), (2, 1, 6, 7, 8), (3, 1, 9, 9)])
def test_any_input_rank(shape: tuple[int, ...]) -> None:
    ndim = len(shape) - 2
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[ndim]
    pool = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}[ndim]
    model = nn.Sequential(conv(shape[1], 4, 3, padding=1), nn.ReLU(), pool(1), nn.Flatten(), nn.Linear(4, 3))
    x = torch.rand(shape, dtype=torch.float64)
    adv = targeted_pgd(model.double(), x, torch.zeros(shape[0], dtype=torch.long), eps=0.5, step=0.1, steps=3)
    assert adv.shape == x.shape and adv.dtype == torch.float64
    assert (_norms(adv - x, "l2") <= 0.5 + 1e-5).all()


def test_model_state_restored() -> None:
    model = tiny_cnn()
    model.train()
    model[0].weight.requires_grad_(False)  # a user's frozen layer stays frozen, others stay trainable
    flags = [p.requires_grad for p in model.parameters()]
    targeted_pgd(model, torch.rand(2, 1, 8, 8), torch.tensor([1, 2]), eps=0.5, step=0.1, steps=2)
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


def test_model_state_restored_on_error() -> None:
    model = tiny_cnn().train()

    def broken(t: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        targeted_pgd(
            model, torch.rand(2, 1, 8, 8), torch.tensor([1, 2]), eps=0.5, step=0.1, steps=2, input_transform=broken
        )
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_input_not_modified_and_deterministic(cnn: nn.Module) -> None:
    x = torch.rand(4, 1, 10, 10)
    copy = x.clone()
    a = targeted_pgd(cnn, x, torch.tensor([0, 1, 2, 3]), eps=1.0, step=0.2, steps=5)
    b = targeted_pgd(cnn, x, torch.tensor([0, 1, 2, 3]), eps=1.0, step=0.2, steps=5)
    assert torch.equal(x, copy) and torch.equal(a, b)


def test_steps_zero_and_argument_checks(cnn: nn.Module) -> None:
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(targeted_pgd(cnn, x, torch.tensor([0, 1]), eps=1.0, step=0.1, steps=0), x)
    with pytest.raises(ValueError, match="norm"):
        targeted_pgd(cnn, x, torch.tensor([0, 1]), eps=1.0, step=0.1, steps=1, norm="l1")
    with pytest.raises(ValueError, match="target"):
        targeted_pgd(cnn, x, torch.tensor([0]), eps=1.0, step=0.1, steps=1)


def test_project() -> None:
    delta = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    assert torch.allclose(project(delta, torch.tensor(1.0), "l2"), torch.tensor([[0.6, 0.8], [0.3, 0.4]]))
    assert torch.allclose(project(delta, torch.tensor(0.35), "linf"), torch.tensor([[0.35, 0.35], [0.3, 0.35]]))


def test_bf16_autocast_on_cpu_keeps_fp32_perturbation(cnn: nn.Module) -> None:
    x = torch.rand(4, 1, 10, 10)
    target = torch.tensor([0, 1, 2, 3])
    adv = targeted_pgd(cnn, x, target, eps=1.0, step=0.2, steps=4, autocast_dtype=torch.bfloat16)
    assert adv.dtype == torch.float32
    moved = _norms(adv - x, "l2")
    assert (moved <= 1.0 + 1e-5).all() and (moved > 0.1).all()  # it moved, within the ball
    ce = nn.functional.cross_entropy
    assert (ce(cnn(adv), target, reduction="none") < ce(cnn(x), target, reduction="none")).all()  # toward the targets


@pytest.mark.gpu
def test_cuda_bf16_matches_fp32_quality() -> None:
    model = tiny_cnn().cuda()
    x = torch.rand(64, 1, 32, 32, device="cuda")
    target = torch.arange(64, device="cuda") % 5
    fp32 = targeted_pgd(model, x, target, eps=2.0, step=0.2, steps=20)
    bf16 = targeted_pgd(model, x, target, eps=2.0, step=0.2, steps=20, autocast_dtype=torch.bfloat16)
    assert bf16.device.type == "cuda" and bf16.dtype == torch.float32
    hit32 = (model(fp32).argmax(1) == target).float().mean()
    hit16 = (model(bf16).argmax(1) == target).float().mean()
    assert abs(hit32 - hit16) <= 0.1
