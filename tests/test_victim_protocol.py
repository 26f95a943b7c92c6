"""The evaluation protocol every experiment shares: per-epoch scores (peak and final), seeds and intervals."""

from __future__ import annotations

import math

import pytest
import torch

from medenc.learn.intervals import interval_text, not_protected, summarize, t_interval, wilson_interval
from medenc.learn.recipe import TrainRecipe
from medenc.learn.victims import VictimResult, seed_recipes, summarize_runs, train_and_score


def _toy(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes told apart by the brightness of the left half, with noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.rand(n, 1, 12, 12, generator=g) * 0.6
    x[:, :, :, :6] += 0.4 * y.view(-1, 1, 1, 1)
    return x, y


def test_t_interval_on_known_values() -> None:
    result = t_interval([0.5, 0.6, 0.7])
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, 2) x sd / sqrt(n)
    assert result["mean"] == pytest.approx(0.6) and result["sd"] == pytest.approx(0.1)
    assert result["low"] == pytest.approx(0.6 - half) and result["high"] == pytest.approx(0.6 + half)
    assert result["method"] == "t over 3 seeds" and result["values"] == [0.5, 0.6, 0.7]
    clipped = t_interval([0.0, 0.1])  # clipped to 0..1
    assert clipped["low"] == 0.0 and clipped["high"] == pytest.approx(0.05 + 12.706204736174698 * 0.05)
    assert t_interval([0.4, 0.4, 0.4])["low"] == pytest.approx(0.4) == t_interval([0.4, 0.4])["high"]


def test_wilson_interval_on_known_values_and_the_one_seed_fallback() -> None:
    result = wilson_interval(0.5, 100)
    assert result["low"] == pytest.approx(0.4038, abs=1e-4) and result["high"] == pytest.approx(0.5962, abs=1e-4)
    zero = wilson_interval(0.0, 59)
    assert zero["low"] == 0.0 and zero["high"] == pytest.approx(0.0611, abs=1e-4)
    one_seed = summarize([0.5], 100)
    assert one_seed["method"] == "Wilson over 100 test slices (1 seed)" and one_seed["low"] == result["low"]
    assert summarize([0.5, 0.7], 100)["method"] == "t over 2 seeds"
    with pytest.raises(ValueError):
        summarize([], 10)


def test_not_protected_when_the_interval_reaches_the_clean_baseline() -> None:
    clean = {"mean": 0.66, "low": 0.60, "high": 0.72}
    assert not_protected({"low": 0.50, "high": 0.61}, clean)  # overlaps
    assert not_protected({"low": 0.70, "high": 0.80}, clean)  # above
    assert not not_protected({"low": 0.30, "high": 0.59}, clean)  # below
    assert interval_text({"mean": 0.373, "low": 0.31, "high": 0.4361}) == "37.3% [31.0-43.6]"


def test_peak_is_the_best_of_the_epochs_and_the_final_model() -> None:
    run = VictimResult(
        seed=3, final={"original_test": 0.4, "encrypted_test": 0.9}, curves={"original_test": [0.3, 0.55, 0.4]}
    )
    assert run.peak("original_test") == 0.55 and run.peak_epoch("original_test") == 2
    restored = VictimResult(seed=0, final={"original_test": 0.6}, curves={"original_test": [0.3, 0.5]})
    assert restored.peak("original_test") == 0.6 and restored.peak_epoch("original_test") == 3  # only the final
    record = run.record()
    assert record["peak"] == {"original_test": 0.55} and record["curves"]["original_test"] == [0.3, 0.55, 0.4]


def test_summarize_runs_means_intervals_and_records() -> None:
    runs = [
        VictimResult(0, {"original_test": 0.5, "encrypted_test": 1.0}, {"original_test": [0.6, 0.5]}),
        VictimResult(1, {"original_test": 0.7, "encrypted_test": 0.8}, {"original_test": [0.7, 0.7]}),
    ]
    cell = summarize_runs(runs, {"original_test": 10, "encrypted_test": 10})
    assert cell["original_test"] == pytest.approx(0.6) and cell["encrypted_test"] == pytest.approx(0.9)
    assert cell["stats"]["original_test"]["peak"]["values"] == [0.6, 0.7]
    assert cell["stats"]["original_test"]["final"]["values"] == [0.5, 0.7]
    assert "peak" not in cell["stats"]["encrypted_test"]  # not watched: final only
    assert [r["seed"] for r in cell["runs"]] == [0, 1]


def test_seed_recipes_count_up_from_the_recipe_seed() -> None:
    assert [r.seed for r in seed_recipes(TrainRecipe(seed=5), 3)] == [5, 6, 7]
    from medenc.errors import InputError

    with pytest.raises(InputError, match="--seeds"):
        seed_recipes(TrainRecipe(), 0)


def test_per_epoch_scores_match_the_final_model_and_change_no_weight() -> None:
    x, y = _toy(48, 0)
    tx, ty = _toy(40, 1)
    recipe = TrainRecipe(epochs=4, batch_size=16, lr=0.05, size=12, seed=2, device="cpu")
    tests = {"original_test": (tx, ty), "other": (tx.flip(-1), ty)}
    run = train_and_score("smallcnn", (x, y), tests, 2, recipe, watch=("original_test",), keep_model=True)
    curve = run.curves["original_test"]
    assert len(curve) == 4 and set(run.curves) == {"original_test"}
    assert curve[-1] == run.final["original_test"]  # the last epoch's score is the returned model's
    assert run.peak("original_test") == max(curve) >= run.final["original_test"]
    assert all(v * 40 == pytest.approx(round(v * 40)) for v in curve)  # accuracies of the 40 test images
    plain = train_and_score("smallcnn", (x, y), tests, 2, recipe, watch=(), keep_model=True)
    assert plain.curves == {} and plain.final == run.final
    for a, b in zip(run.model.state_dict().values(), plain.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # scoring every epoch changes no weight and no batch-norm statistic
