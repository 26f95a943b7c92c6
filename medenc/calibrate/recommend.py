"""The recommendation of ``medenc calibrate``: a pure function of its results table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from medenc.errors import InputError


def recommend(
    rows: Sequence[Mapping[str, Any]], *, target_orig_acc: float, min_psnr: float, min_ssim: float
) -> dict[str, Any]:
    """Pick the smallest eps that protects enough while keeping the fidelity floors.

    Args:
        rows: one per eps with ``eps``, ``worst_original_test`` (the worst victim's accuracy on
            original test slices: the highest one; ``medenc calibrate`` gives its mean peak over the seeds),
            ``psnr_db`` and ``ssim`` (means over slices).
        target_orig_acc: protection holds when ``worst_original_test <= target_orig_acc``.
        min_psnr: fidelity holds when ``psnr_db >= min_psnr`` ...
        min_ssim: ... and ``ssim >= min_ssim``.

    Returns:
        ``status`` (``"recommended"`` or ``"none"``), ``eps`` (or None), ``outcome`` (``meets_both``,
        ``only_protection``, ``only_fidelity``, ``protection_or_fidelity`` (some rows meet one floor,
        others the other, none both) or ``neither``), ``checks`` per eps, ``closest`` (when none
        qualifies: the best-protecting eps with fidelity and the best-fidelity eps with protection, as
        available) and a plain-language ``message``.
    """
    if not rows:
        raise InputError("no results to recommend from")
    checks = []
    for row in sorted(rows, key=lambda r: float(r["eps"])):
        protects = float(row["worst_original_test"]) <= target_orig_acc
        fidelity = float(row["psnr_db"]) >= min_psnr and float(row["ssim"]) >= min_ssim
        checks.append(
            {
                "eps": float(row["eps"]),
                "worst_original_test": float(row["worst_original_test"]),
                "psnr_db": float(row["psnr_db"]),
                "ssim": float(row["ssim"]),
                "protects": protects,
                "fidelity_ok": fidelity,
                "meets_both": protects and fidelity,
            }
        )
    floors = f"worst victim <= {target_orig_acc:.0%} on original images, PSNR >= {min_psnr:g} dB, SSIM >= {min_ssim:g}"
    both = [c for c in checks if c["meets_both"]]
    if both:
        best = both[0]
        return {
            "status": "recommended",
            "eps": best["eps"],
            "outcome": "meets_both",
            "checks": checks,
            "closest": [],
            "message": (
                f"recommended eps {best['eps']:g}: the smallest on the grid that meets {floors} "
                f"(worst victim {best['worst_original_test']:.1%}, PSNR {best['psnr_db']:.1f} dB, "
                f"SSIM {best['ssim']:.4f})"
            ),
        }
    protecting = [c for c in checks if c["protects"]]
    faithful = [c for c in checks if c["fidelity_ok"]]
    closest = []
    if protecting:
        c = protecting[0]
        closest.append(
            {
                **c,
                "why": f"protects, but fidelity is below the floor (PSNR {c['psnr_db']:.1f} dB, SSIM {c['ssim']:.4f})",
            }
        )
    if faithful:
        c = faithful[-1]
        closest.append(
            {
                **c,
                "why": f"keeps the fidelity floors, but the worst victim still reaches "
                f"{c['worst_original_test']:.1%} on original images",
            }
        )
    if not closest:
        lowest = min(checks, key=lambda c: c["worst_original_test"])
        sharpest = max(checks, key=lambda c: (c["psnr_db"], c["ssim"]))
        closest.append({**lowest, "why": "best protection on the grid (neither floor met)"})
        if sharpest["eps"] != lowest["eps"]:
            closest.append({**sharpest, "why": "best fidelity on the grid (neither floor met)"})
    outcome = {
        (True, True): "protection_or_fidelity",
        (True, False): "only_protection",
        (False, True): "only_fidelity",
        (False, False): "neither",
    }[(bool(protecting), bool(faithful))]
    return {
        "status": "none",
        "eps": None,
        "outcome": outcome,
        "checks": checks,
        "closest": closest,
        "message": f"no setting on the grid meets both {floors}; closest: "
        + "; ".join(f"eps {c['eps']:g} {c['why']}" for c in closest),
    }
