"""The scorecard's verdict and page, on a report built by hand (no training)."""

from __future__ import annotations

from pathlib import Path

from medenc.security.scorecard import scorecard_markdown, verdict, write_scorecard


def _cell(mean: float, low: float, high: float, verdict: str) -> dict:
    peak = {"mean": mean, "low": low, "high": high, "method": "t over 3 seeds"}
    return {"original_test": mean, "stats": {"original_test": {"peak": peak, "final": peak}}, "verdict": verdict}


def _report() -> dict:
    table = {
        "clean baseline": {"a": _cell(0.66, 0.60, 0.72, "reference"), "b": _cell(0.60, 0.55, 0.65, "reference")},
        "undefended": {"a": _cell(0.30, 0.25, 0.35, "protected"), "b": _cell(0.50, 0.40, 0.58, "not protected")},
        "jpeg 10:1": {"a": _cell(0.40, 0.35, 0.45, "protected"), "b": _cell(0.45, 0.40, 0.50, "protected")},
        "ueraser (1 draw)": {"a": _cell(0.65, 0.61, 0.69, "not protected")},  # b not run
        "mixup": {"a": _cell(0.20, 0.15, 0.25, "protected")},  # b not run
        "few clean only": {"a": _cell(0.50, 0.45, 0.55, "reference"), "b": _cell(0.40, 0.35, 0.45, "reference")},
    }
    return {
        "rows": list(table),
        "archs": ["a", "b"],
        "table": table,
        "reference_rows": ["clean baseline", "few clean only"],
        "chance": 0.2,
        "seeds": [0, 1, 2],
        "interval": "t over 3 seeds",
        "classes": ["c1", "c2", "c3", "c4", "c5"],
        "counts": {"train": 800, "test": 202, "thief_clean": 160},
        "encrypted_manifest": "runs/medium/encrypted/manifest.csv",
        "fidelity": {
            "model_input_window": {"psnr_db_mean": 33.2, "ssim_mean": 0.97},
            "stored": {"psnr_db_mean": 36.5, "psnr_db_min": 35.0, "ssim_mean": 0.98},
        },
        "fidelity_match": None,
        "key": {
            "combiner": "hconcat",
            "pgd": {"norm": "l2", "eps": 2.0, "steps": 20},
            "hardening": {"eot": [], "eot_samples": 1, "ratio_jitter": 0.0},
        },
    }


def test_verdict_counts_thief_rows_protected_on_every_measured_architecture() -> None:
    result = verdict(_report())
    # thieves: undefended (b exposed), jpeg (both protected), ueraser (a exposed), mixup (a protected, b not run)
    assert (result["protected_rows"], result["rows"]) == (2, 4)
    assert (result["protected_cells"], result["cells"]) == (4, 6)
    assert result["exposed"] == ["undefended", "ueraser (1 draw)"]
    assert result["text"].startswith("protected against 2 of 4 thieves")


def test_scorecard_page_states_fidelity_verdict_and_cells(tmp_path: Path) -> None:
    text = scorecard_markdown(_report())
    assert "**Fidelity:** PSNR 36.5 dB (min 35.0), SSIM 0.980 stored; PSNR 33.2 dB" in text
    assert "**Verdict: protected against 2 of 4 thieves" in text and "4 of 6 cells" in text
    assert "| ueraser (1 draw) | 65.0% [61.0-69.0] **not protected** | not run |" in text
    assert "| clean baseline | 66.0% [60.0-72.0] | 60.0% [55.0-65.0] |" in text
    # what the seeds' interval leaves out: the 202 test slices' own sampling error, 50 / sqrt(202) points
    assert "on these 202 test slices, not their own sampling error (about +-3.5 points near 50%)" in text
    one_seed = scorecard_markdown({**_report(), "seeds": [0]})
    assert "sampling error" not in one_seed  # one seed: the Wilson interval over the test slices is that error
    write_scorecard(_report(), tmp_path)
    from PIL import Image

    with Image.open(tmp_path / "scorecard.png") as image:
        assert image.format == "PNG" and image.width > 800
        pixels = image.convert("RGB")
        colours = {pixels.getpixel((x, y)) for x in range(0, image.width, 7) for y in range(0, image.height, 7)}
    assert (26, 152, 80) in colours or any(abs(c[0] - 26) < 40 and c[1] > 120 and c[2] < 110 for c in colours)
    assert (tmp_path / "scorecard.md").read_text() == text
