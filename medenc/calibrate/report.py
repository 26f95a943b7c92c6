"""The calibration report: ``report.json`` (every figure), ``report.md`` and the ``tradeoff.png`` plot."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medenc.learn.intervals import interval_text, not_protected
from medenc.reporting import REPORT_NAME, write_json
from medenc.reporting import pct as _pct


def result_row(eps: float, summary: Mapping[str, Any], victims: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One row of the results table from an encrypt-dataset summary and the victims' accuracies."""
    fid = summary["fidelity_native_units"]

    def peak(v: str) -> float:  # mean peak over the seeds (the final accuracy for a pre-0.2 cache entry)
        stats = victims[v].get("stats", {}).get("original_test", {})
        return float(stats["peak"]["mean"]) if "peak" in stats else float(victims[v]["original_test"])

    worst = max(victims, key=peak)
    return {
        "eps": float(eps),
        "step": summary["pgd"]["step"],
        "steps": summary["pgd"]["steps"],
        "key_fingerprint": summary["key_fingerprint"],
        "psnr_db": fid["psnr_db"]["mean"],
        "psnr_db_min": fid["psnr_db"]["min"],
        "ssim": fid["ssim"]["mean"],
        "ssim_min": fid["ssim"]["min"],
        "linf_mean": fid["linf"]["mean"],
        "linf_max": fid["linf"]["max"],
        "l2_mean": fid["l2"]["mean"],
        "base_model_hit_rate": summary["base_model_hit_rate"]["written_image_predicted_as_a_target"],
        "victims": {v: dict(r) for v, r in victims.items()},
        "worst_victim": worst,
        "worst_original_test": peak(worst),
        "worst_original_test_final": victims[worst]["original_test"],
    }


def reference_comparison(rows: Sequence[Mapping[str, Any]], decision: Mapping[str, Any], eps: float) -> dict[str, Any]:
    """The recommended row against the fixed reference eps (if both are on the grid)."""
    by_eps = {float(r["eps"]): r for r in rows}
    ref = by_eps.get(float(eps))
    rec = by_eps.get(decision["eps"]) if decision["eps"] is not None else None
    fields = ("worst_victim", "worst_original_test", "psnr_db", "ssim", "linf_max")

    def pick(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
        return None if row is None else {"eps": row["eps"], **{f: row[f] for f in fields}}

    return {"reference_eps": float(eps), "reference": pick(ref), "recommended": pick(rec)}


def _peak_mean(r: Mapping[str, Any]) -> float:
    stats = r.get("stats", {}).get("original_test", {})
    return float(stats["peak"]["mean"]) if "peak" in stats else float(r["original_test"])


def _victim_cell(r: Mapping[str, Any]) -> str:
    """Peak [interval] / final (encrypted) of one victim, with the verdict against its clean baseline."""
    stats = r.get("stats", {}).get("original_test", {})
    if "peak" not in stats:
        return f"{_pct(r['original_test'])} ({_pct(r['encrypted_test'])})"
    text = f"{interval_text(stats['peak'])} / {_pct(r['original_test'])} ({_pct(r['encrypted_test'])})"
    if "clean_peak" in r and not_protected(stats["peak"], r["clean_peak"]):
        text += " **not protected**"
    return text


def results_table(report: dict[str, Any]) -> str:
    """Markdown table: one row per eps, fidelity then per-victim accuracy on original test slices: peak
    [95% interval] / final (encrypted test in brackets)."""
    victims = list(report["clean_baseline"])
    checks = {c["eps"]: c for c in report["recommendation"]["checks"]}
    head = (
        "| eps | step | PSNR dB mean (min) | SSIM mean (min) | Linf mean / max (stored units) | base model on target | "
        + " | ".join(f"{v}: original peak [95%] / final (encrypted)" for v in victims)
        + " | worst victim on original (peak) | protects | fidelity floors |"
    )
    lines = [head, "|" + "---|" * (9 + len(victims))]
    recommended = report["recommendation"]["eps"]
    for row in report["rows"]:
        check = checks[row["eps"]]
        cells = [
            f"**{row['eps']:g}**" if row["eps"] == recommended else f"{row['eps']:.4g}",
            f"{row['step']:.4g}",
            f"{row['psnr_db']:.1f} ({row['psnr_db_min']:.1f})",
            f"{row['ssim']:.4f} ({row['ssim_min']:.4f})",
            f"{row['linf_mean']:.1f} / {row['linf_max']:.1f}",
            _pct(row["base_model_hit_rate"]),
        ]
        cells += [_victim_cell(row["victims"][v]) for v in victims]
        cells += [
            f"{_pct(row['worst_original_test'])} ({row['worst_victim']})",
            "yes" if check["protects"] else "no",
            "yes" if check["fidelity_ok"] else "no",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_text(report: dict[str, Any]) -> str:
    """One paragraph: the recommended setting against the fixed reference eps."""
    ref = report["reference"]
    r, c = ref["recommended"], ref["reference"]
    eps = ref["reference_eps"]
    if c is None:
        return f"The reference setting eps {eps:g} is not on the grid; add it to compare."
    at_ref = (
        f"At the fixed eps {eps:g} the worst victim ({c['worst_victim']}) reaches {_pct(c['worst_original_test'])} on "
        f"original test slices, at a mean PSNR of {c['psnr_db']:.1f} dB and SSIM {c['ssim']:.4f}."
    )
    if r is None:
        return at_ref + " No setting on the grid was recommended."
    if r["eps"] == c["eps"]:
        return at_ref + " This is also the recommended setting."
    return at_ref + (
        f" The recommended eps {r['eps']:g} gives {_pct(r['worst_original_test'])} ({r['worst_victim']}) at "
        f"{r['psnr_db']:.1f} dB and SSIM {r['ssim']:.4f}: "
        f"{(r['worst_original_test'] - c['worst_original_test']) * 100:+.1f} points of worst-victim accuracy and "
        f"{r['psnr_db'] - c['psnr_db']:+.1f} dB of PSNR against eps {c['eps']:g}."
    )


def psnr_text(match: Mapping[str, Any]) -> str:
    """The fidelity-matched eps search in one paragraph."""
    trials = "; ".join(f"eps {t['eps']:.4g} -> {t['psnr_db']:.2f} dB" for t in match["trials"])
    return (
        f"Target mean PSNR {match['target_psnr_db']:g} dB (stored units), searched on {match['subset_slices']} "
        f"slices: {trials}. Chosen eps {match['eps']:.4g} ({match['psnr_db']:.2f} dB on the subset; "
        f"{'converged' if match['converged'] else 'not converged'} within {match['tolerance_db']:g} dB); the "
        "results table gives its PSNR over the calibrated slices."
    )


def markdown(report: dict[str, Any]) -> str:
    """The whole ``report.md``."""
    s = report["settings"]
    counts = report["counts"]
    rec = report["recommendation"]
    clean_stats = report.get("clean_stats", {})
    baseline = ", ".join(
        f"{v} {interval_text(clean_stats[v]['peak'])} (peak)" if v in clean_stats else f"{v} {_pct(a)}"
        for v, a in report["clean_baseline"].items()
    )
    parts = [
        "# medenc calibration",
        "",
        f"Data: `{report['manifest']}`; classes {', '.join(report['classes'])} (chance {_pct(report['chance'])}); "
        f"{counts['train']} training slices (of {counts['train_total']}) and {counts['test']} test slices.",
    ]
    if report["subset"]:
        parts.append(f"Subset: {report['subset']}.")
    parts += [
        f"Base model: `{report['model']}`. Key: {report['key']['source']}, combiner {report['key']['combiner']}, "
        f"norm {report['key']['norm']}; PGD {report['step_rule']} (eps on the model-input scale).",
        f"Thief's recipe: {s['train']['epochs']} epochs, batch {s['train']['batch_size']}, lr {s['train']['lr']}, "
        f"{s['train']['size']} px, augmentation {'flip + crop' if s['train']['augment'] else 'none'}, "
        f"seed {s['train']['seed']}; device {report['device']}.",
        f"Clean baseline (trained and tested on originals): {baseline}.",
        f"Fidelity: {report['fidelity_units']}.",
        "",
        "## Results",
        "",
        results_table(report),
        "",
        "Accuracy of each victim trained on the encrypted training slices, on original test slices: the peak over "
        "the epochs (an oracle early stop) with its 95% interval, then the last epoch's (on encrypted test slices "
        "in brackets). Protection is the worst (highest) mean peak over the victims; 'not protected' marks a "
        "victim whose peak interval reaches its clean baseline's. "
        + (f"{len(report['seeds'])} training seed(s) per victim ({report['interval']})." if "seeds" in report else ""),
        "",
        "![trade-off](tradeoff.png)",
        "",
        *(
            ["## Fidelity-matched eps", "", psnr_text(report["fidelity_match"]), ""]
            if report.get("fidelity_match")
            else []
        ),
        "## Recommendation",
        "",
        f"Floors: worst victim at most {_pct(s['target_orig_acc'])} on original test slices; mean PSNR at least "
        f"{s['min_psnr']:g} dB; mean SSIM at least {s['min_ssim']:g}.",
        "",
        rec["message"][0].upper() + rec["message"][1:] + ".",
        "",
        comparison_text(report),
        "",
    ]
    for warning in report["warnings"]:
        parts += [f"**Warning:** {warning}.", ""]
    est = report.get("estimate")
    if est:
        parts += [
            f"Planned {est['planned_seconds'] / 60:.1f} min for {est['items_to_run']} uncached work items "
            f"(PGD {est['pgd_per_slice']:.3f} s per slice); the run took {report['seconds'] / 60:.1f} min.",
            "",
        ]
    else:
        parts += [f"The run took {report['seconds'] / 60:.1f} min.", ""]
    return "\n".join(parts)


def plot(report: dict[str, Any], path: Path) -> None:
    """Original-test accuracy per victim against mean PSNR and mean SSIM; worst case, chance, baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    s = report["settings"]
    victims = list(report["clean_baseline"])
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), dpi=120, sharey=True)
    for ax, metric, label, floor in (
        (axes[0], "psnr_db", "mean PSNR (dB, stored units)", s["min_psnr"]),
        (axes[1], "ssim", "mean SSIM", s["min_ssim"]),
    ):
        xs = [r[metric] for r in rows]
        for i, v in enumerate(victims):
            color = colors[i % len(colors)]
            ax.plot(xs, [_peak_mean(r["victims"][v]) for r in rows], "o-", color=color, alpha=0.7, label=v)
            ax.axhline(report["clean_baseline"][v], color=color, linestyle=":", linewidth=1)
        ax.plot(
            xs,
            [r["worst_original_test"] for r in rows],
            "-",
            color="black",
            linewidth=2.5,
            alpha=0.85,
            label="worst victim",
            zorder=3,
        )
        for r in rows:
            ax.annotate(
                f"eps {r['eps']:g}",
                (r[metric], r["worst_original_test"]),
                textcoords="offset points",
                xytext=(3, 6),
                fontsize=7,
            )
        ax.axhline(report["chance"], color="grey", linestyle="--", linewidth=1, label="chance")
        ax.axhline(s["target_orig_acc"], color="tab:red", linestyle="-.", linewidth=1, label="target")
        if math.isfinite(floor) and floor > 0:
            ax.axvline(floor, color="tab:green", linestyle="-.", linewidth=1, label="fidelity floor")
        rec = report["recommendation"]["eps"]
        for r in rows:
            if r["eps"] == rec:
                ax.plot(
                    [r[metric]],
                    [r["worst_original_test"]],
                    "*",
                    color="gold",
                    markersize=16,
                    markeredgecolor="black",
                    zorder=4,
                    label="recommended",
                )
        ax.set_xlabel(label)
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("peak accuracy on original test slices")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle("Trained on encrypted data, tested on originals (dotted: clean baselines)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(report: dict[str, Any], folder: Path) -> None:
    """Write ``report.json``, ``report.md`` and ``tradeoff.png`` into ``folder``."""
    folder = Path(folder)
    write_json(folder / REPORT_NAME, report)
    (folder / "report.md").write_text(markdown(report), encoding="utf-8")
    plot(report, folder / "tradeoff.png")
