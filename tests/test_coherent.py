"""Perturbations coherent through the plane (medenc.core.coherent): smooth fields, eps kept, averaging-proof."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medenc.core.coherent import coherent_pgd, interpolation_weights
from medenc.core.encrypt import Encryptor
from medenc.core.key import EncryptionKey, PGDSettings
from medenc.core.pgd import targeted_pgd


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 3))


def _slices(n: int = 7) -> torch.Tensor:
    """Adjacent slices: one image plus a different pattern on each slice."""
    generator = torch.Generator().manual_seed(1)
    base, own = torch.rand(1, 1, 8, 8, generator=generator), torch.rand(n, 1, 8, 8, generator=generator)
    return (0.2 + 0.3 * base + 0.3 * own).contiguous()


def test_interpolation_weights() -> None:
    w = interpolation_weights([0, 1, 2, 3, 4, 5, 6], 3)
    expected = torch.tensor([[3, 0, 0], [2, 1, 0], [1, 2, 0], [0, 3, 0], [0, 2, 1], [0, 1, 2], [0, 0, 3]]) / 3
    torch.testing.assert_close(w, expected.float())
    torch.testing.assert_close(interpolation_weights([2, 3, 4], 1), torch.eye(3))
    assert interpolation_weights([0, 1, 5], 1).shape == (3, 3)  # knots no slice reaches are dropped
    assert interpolation_weights([4, 5, 6, 7], 8).shape == (4, 2)
    for bad in ([], [2, 1]):
        with pytest.raises(ValueError, match="ascending"):
            interpolation_weights(bad, 2)


def test_coherent_pgd_is_a_linear_field_within_eps_that_averaging_keeps() -> None:
    model, x = _model(), _slices()
    target = torch.full((7,), 2)
    eps = 0.5
    weights = interpolation_weights(range(7), 3)
    adv = coherent_pgd(model, x, target, weights, eps=eps, step=0.1, steps=15, bounds=(-10.0, 10.0))
    delta = adv - x
    norms = delta.flatten(1).norm(dim=1)
    assert bool((norms <= eps + 1e-5).all()) and float(norms.max()) > 0.9 * eps  # within eps, the budget used
    torch.testing.assert_close(delta[1], (2 * delta[0] + delta[3]) / 3, atol=1e-6, rtol=0)  # linear between knots
    torch.testing.assert_close(delta[:3].mean(0), delta[1], atol=1e-6, rtol=0)  # a 3-slice mean keeps it
    torch.testing.assert_close(delta[3:6].median(0).values, delta[4], atol=1e-6, rtol=0)  # so does a median
    independent = targeted_pgd(model, x, target, eps=eps, step=0.1, steps=15, bounds=(-10.0, 10.0)) - x
    assert float((independent[:3].mean(0) - independent[1]).abs().max()) > 1e-3  # per-slice fields do not

    loss = nn.functional.cross_entropy
    with torch.no_grad():  # the joint optimisation does move the slices toward the target
        assert float(loss(model(adv), target)) < float(loss(model(x), target))


def test_coherent_pgd_keeps_bounds_and_per_sample_eps() -> None:
    model, x = _model(1), _slices(4)
    eps = torch.tensor([0.3, 0.6, 0.6, 0.6])
    adv = coherent_pgd(model, x, torch.zeros(4, dtype=torch.long), interpolation_weights(range(4), 2),
                       eps=eps, step=0.2, steps=10, bounds=(0.2, 0.8), norm="l2")
    assert float(adv.min()) >= 0.2 - 1e-6 and float(adv.max()) <= 0.8 + 1e-6
    # every slice within its own eps; the knot at slice 0 also reaches slice 1 (eps 0.6) but keeps slice 0's 0.3
    assert bool(((adv - x).flatten(1).norm(dim=1) <= eps + 1e-5).all())
    assert float((adv - x)[0].norm()) == pytest.approx(0.3, abs=1e-4)
    linf = coherent_pgd(model, x, torch.zeros(4, dtype=torch.long), interpolation_weights(range(4), 2),
                        eps=0.05, step=0.01, steps=10, bounds=(-5.0, 5.0), norm="linf")
    assert float((linf - x).abs().max()) <= 0.05 + 1e-6
    with pytest.raises(ValueError, match="rows summing to 1"):
        coherent_pgd(model, x, torch.zeros(4, dtype=torch.long), torch.ones(4, 2), eps=0.1, step=0.1, steps=1)


def test_encryptor_encrypts_a_study_coherently() -> None:
    key = EncryptionKey.generate(("a", "b", "c"), "hconcat", seed=0, pgd=PGDSettings(eps=0.5, step=0.1, steps=8))
    encryptor = Encryptor(_model(2), key, device="cpu")
    x = _slices(6)
    done: list[float] = []
    result = encryptor.encrypt_coherent(x, ["b"] * 6, positions=range(6), spacing=2, bounds=(-10.0, 10.0),
                                        progress=done.append)
    assert result.encrypted.shape == x.shape and result.copies.shape == (6, 2, 1, 8, 8)
    assert done[-1] == pytest.approx(6) and len(done) == 8
    assert result.targets.tolist() == [list(key.targets[1])] * 6
    copies = result.copies - x[:, None]
    torch.testing.assert_close(copies[1], (copies[0] + copies[2]) / 2, atol=1e-6, rtol=0)  # each target's own field
    assert bool((copies.flatten(2).norm(dim=2) <= 0.5 + 1e-5).all())
    with pytest.raises(ValueError, match="one label"):
        encryptor.encrypt_coherent(x, ["a", "b", "b", "b", "b", "b"], positions=range(6), spacing=2)
