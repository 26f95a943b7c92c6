"""The recommendation rule and the report on hand-made result tables (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medenc.calibrate.report import reference_comparison
from medenc.calibrate.run import check_grid, parse_grid, recommend
from medenc.errors import InputError

FLOORS = {"target_orig_acc": 0.35, "min_psnr": 40.0, "min_ssim": 0.98}


def _rows(*table: tuple[float, float, float, float]) -> list[dict[str, float]]:
    return [{"eps": e, "worst_original_test": a, "psnr_db": p, "ssim": s} for e, a, p, s in table]


def test_smallest_eps_meeting_both_is_recommended() -> None:
    rows = _rows((4, 0.10, 41.0, 0.985), (0.5, 0.80, 50.0, 0.999), (2, 0.30, 44.0, 0.99), (1, 0.50, 47.0, 0.995))
    result = recommend(rows, **FLOORS)
    assert result["status"] == "recommended" and result["outcome"] == "meets_both"
    assert result["eps"] == 2
    assert [c["eps"] for c in result["checks"]] == [0.5, 1, 2, 4]
    assert [c["meets_both"] for c in result["checks"]] == [False, False, True, True]
    assert "recommended eps 2" in result["message"]


def test_floors_are_inclusive() -> None:
    result = recommend(_rows((1, 0.35, 40.0, 0.98)), **FLOORS)
    assert result["eps"] == 1


def test_only_protection_names_the_smallest_protecting_eps() -> None:
    rows = _rows((1, 0.60, 45.0, 0.99), (4, 0.30, 38.0, 0.97), (6, 0.12, 35.7, 0.95))
    result = recommend(rows, **FLOORS)
    assert result["status"] == "none" and result["eps"] is None
    assert result["outcome"] == "protection_or_fidelity"  # eps 1 keeps fidelity, eps 4 protects, none both
    assert [c["eps"] for c in result["closest"]] == [4, 1]
    rows = _rows((4, 0.30, 38.0, 0.97), (6, 0.12, 35.7, 0.95))
    result = recommend(rows, **FLOORS)
    assert result["outcome"] == "only_protection"
    assert [c["eps"] for c in result["closest"]] == [4]
    assert "protects, but fidelity is below the floor" in result["message"]


def test_only_fidelity_names_the_largest_faithful_eps() -> None:
    rows = _rows((0.5, 0.90, 50.0, 0.999), (1, 0.85, 45.0, 0.995), (2, 0.70, 39.0, 0.99))
    result = recommend(rows, **FLOORS)
    assert result["outcome"] == "only_fidelity"
    assert [c["eps"] for c in result["closest"]] == [1]
    assert "85.0%" in result["message"] and "no setting on the grid meets both" in result["message"]


def test_neither_names_best_protection_and_best_fidelity() -> None:
    rows = _rows((1, 0.70, 39.0, 0.97), (2, 0.50, 35.0, 0.95))
    result = recommend(rows, **FLOORS)
    assert result["outcome"] == "neither" and result["eps"] is None
    assert [c["eps"] for c in result["closest"]] == [2, 1]


def test_ssim_floor_alone_can_fail_a_row() -> None:
    result = recommend(_rows((2, 0.2, 45.0, 0.97)), **FLOORS)
    assert result["outcome"] == "only_protection"


def test_reference_comparison() -> None:
    rows = [
        {"eps": e, "worst_original_test": a, "psnr_db": p, "ssim": 0.99, "worst_victim": "v", "linf_max": 3.0}
        for e, a, p in ((2, 0.5, 44.0), (4, 0.3, 40.0))
    ]
    comparison = reference_comparison(rows, {"eps": 4.0}, 2.0)
    assert comparison["reference"]["worst_original_test"] == 0.5
    assert comparison["recommended"]["eps"] == 4
    assert reference_comparison(rows, {"eps": None}, 3.0) == {
        "reference_eps": 3.0,
        "reference": None,
        "recommended": None,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("1,,2", "not a number"),
        ("a", "not a number"),
        ("0", "> 0"),
        ("-1,2", "> 0"),
        ("inf", "finite"),
        ("2,2", "more than once"),
        (",".join(str(i) for i in range(1, 30)), "at most"),
    ],
)
def test_bad_grids(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_grid(text)


def test_grid_is_sorted() -> None:
    assert parse_grid(" 4, 0.5,2 ") == (0.5, 2.0, 4.0)
    assert check_grid([3, 1]) == (1, 3)


def test_settings_validation_rejects_bad_floors() -> None:
    from medenc.calibrate.run import CalibrationSettings

    for bad, message in (
        ({"target_orig_acc": 0.0}, "target-orig-acc"),
        ({"target_orig_acc": 35.0}, "target-orig-acc"),
        ({"min_psnr": float("nan")}, "min-psnr"),
        ({"min_ssim": -0.1}, "min-ssim"),
        ({"budget_minutes": -5.0}, "budget"),
        ({"victims": ()}, "at least one victim"),
        ({"victims": ("vgg11", "vgg11")}, "twice"),
        ({"combiner": "blend"}, "combiner"),
        ({"step_ratio": 0.0}, "step ratio"),
    ):
        with pytest.raises(InputError, match=message):
            CalibrationSettings(**bad).validate()
    CalibrationSettings().validate()


def test_report_writer_on_a_hand_made_report(tmp_path: Path) -> None:
    from medenc.calibrate.report import write_report

    def row(eps: float, acc: float, psnr: float) -> dict:
        victims = {
            "a": {"original_test": acc, "encrypted_test": 0.99, "clean_test": 0.8},
            "b": {"original_test": acc - 0.1, "encrypted_test": 0.95, "clean_test": 0.7},
        }
        return {
            "eps": eps,
            "step": eps / 10,
            "steps": 20,
            "key_fingerprint": "0" * 16,
            "psnr_db": psnr,
            "psnr_db_min": psnr - 1,
            "ssim": 0.99,
            "ssim_min": 0.98,
            "linf_mean": 5.0,
            "linf_max": 9.0,
            "l2_mean": 100.0,
            "base_model_hit_rate": 1.0,
            "victims": victims,
            "worst_victim": "a",
            "worst_original_test": acc,
        }

    rows = [row(1, 0.6, 46.0), row(2, 0.3, 41.0)]
    decision = recommend(rows, **FLOORS)
    report = {
        "manifest": "m.csv",
        "model": "b.pt",
        "classes": ["x", "y"],
        "chance": 0.5,
        "subset": None,
        "counts": {"train": 10, "train_total": 10, "test": 4},
        "settings": {
            **FLOORS,
            "train": {"epochs": 1, "batch_size": 8, "lr": 0.05, "size": 32, "augment": True, "seed": 0},
        },
        "key": {"source": "test", "combiner": "hconcat", "norm": "l2"},
        "step_rule": "step = eps x 0.1",
        "fidelity_units": "stored units",
        "clean_baseline": {"a": 0.8, "b": 0.7},
        "rows": rows,
        "recommendation": decision,
        "reference": reference_comparison(rows, decision, 1.0),
        "warnings": ["w"],
        "estimate": None,
        "device": "cpu",
        "seconds": 1.0,
    }
    write_report(report, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| **2** |" in md and "60.0% (99.0%)" in md and "Recommended eps 2" in md
    assert "At the fixed eps 1 the worst victim (a) reaches 60.0%" in md and "-30.0 points" in md
    assert json.loads((tmp_path / "report.json").read_text())["recommendation"]["eps"] == 2
    assert (tmp_path / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
