"""Fidelity metrics against hand-computed values."""

from __future__ import annotations

import math

import torch

from medenc.core.fidelity import change_norms, fidelity_table, psnr, ssim, summarize


def test_psnr_hand_computed() -> None:
    ref = torch.zeros(1, 1, 4, 4)
    ref[0, 0, 0, 0] = 10.0  # range 10
    changed = ref.clone()
    changed[0, 0, 1, 1] = 1.0  # MSE = 1/16
    assert math.isclose(psnr(ref, changed).item(), 10 * math.log10(100 / (1 / 16)), rel_tol=1e-9)
    assert psnr(ref, ref).item() == math.inf
    assert math.isclose(psnr(ref, changed, value_range=1.0).item(), 10 * math.log10(16), rel_tol=1e-9)


def test_ssim_identity_and_degradation() -> None:
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(2, 1, 32, 32, generator=g)
    assert torch.allclose(ssim(ref, ref), torch.ones(2, dtype=torch.float64))
    small = ssim(ref, ref + 0.01 * torch.randn(ref.shape, generator=g))
    large = ssim(ref, ref + 0.2 * torch.randn(ref.shape, generator=g))
    assert (large < small).all() and (small < 1).all() and (small > 0.9).all()
    # constant offset: luminance term only, close to 1 for a small shift
    assert (ssim(ref, ref + 0.01) > 0.99).all()


def test_norms_and_table() -> None:
    ref = torch.zeros(1, 1, 2, 2)
    changed = torch.tensor([[[[3.0, 0.0], [0.0, -4.0]]]])
    l2, linf = change_norms(ref, changed)
    assert l2.item() == 5.0 and linf.item() == 4.0
    table = fidelity_table(ref + 1, changed + 1)
    assert set(table) == {"psnr_db", "ssim", "l2", "linf"} and table["l2"] == [5.0]
    assert summarize([1.0, 3.0, math.inf]) == {"mean": 2.0, "min": 1.0, "median": 3.0, "max": math.inf}
