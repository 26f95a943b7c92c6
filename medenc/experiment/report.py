"""Markdown tables and PNG charts of an evaluation (``report.json`` of ``medenc evaluate``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medenc.learn.intervals import interval_text
from medenc.reporting import markdown_table, pct


def table12(report: dict[str, Any]) -> str:
    """The paper's Table 12 layout with the field's protocol: per architecture, the clean baseline's and the
    thief's peak (oracle early stop) and final accuracy on original test images, each with its 95% interval
    (mean over the seeds), and the verdict."""
    columns = (
        "model",
        "clean baseline: peak",
        "trained on encrypted: encrypted test",
        "trained on encrypted: original test, final",
        "trained on encrypted: original test, peak",
        "drop (encrypted - original, final)",
        "verdict",
    )
    rows = []
    for arch, r in report["architectures"].items():
        stats = r.get("stats")
        if stats is None:  # a medenc 0.1 report: one seed, final accuracies only
            rows.append(
                (arch, pct(r["clean_test"]), pct(r["encrypted_test"]), pct(r["original_test"]), "-",
                 f"{(r['encrypted_test'] - r['original_test']) * 100:+.1f} points", "-")
            )  # fmt: skip
            continue
        rows.append(
            (
                arch,
                interval_text(stats["clean_test"]["peak"]),
                pct(r["encrypted_test"]),
                interval_text(stats["original_test"]["final"]),
                interval_text(stats["original_test"]["peak"]),
                f"{(r['encrypted_test'] - r['original_test']) * 100:+.1f} points",
                "protected" if r["protected"] else "**not protected**",
            )
        )
    return markdown_table(columns, rows)


def fidelity_text(report: dict[str, Any]) -> str:
    """One line: PSNR and SSIM of the encrypted images (stored units when known, display window)."""
    fid = report.get("fidelity") or {}
    parts = []
    if "stored" in fid:
        s = fid["stored"]
        parts.append(
            f"PSNR {s['psnr_db_mean']:.1f} dB (min {s['psnr_db_min']:.1f}), SSIM {s['ssim_mean']:.4f} in stored units"
        )
    if "model_input_window" in fid:
        w = fid["model_input_window"]
        parts.append(f"PSNR {w['psnr_db_mean']:.1f} dB, SSIM {w['ssim_mean']:.4f} on the display window")
    return "; ".join(parts) if parts else "not measured"


def protocol_text(report: dict[str, Any]) -> str:
    """How the cells were measured: seeds, interval, peak and final."""
    seeds = report.get("seeds") or [report.get("settings", {}).get("seed", 0)]
    return (
        f"{len(seeds)} training seed(s) per model ({', '.join(str(s) for s in seeds)}); a cell is the mean over "
        f"them with a 95% interval ({report.get('interval', 'none')}). 'final' is the last epoch's model, 'peak' "
        "the best epoch on the original test images (an oracle early stop, the field's standard). A thief's "
        "result is 'not protected' when its peak interval reaches the clean baseline's."
    )


def table2(report: dict[str, Any], arch: str) -> str:
    """The paper's Table 2 layout: how original test images of each class are classified by a
    model trained on encrypted data (rows: true class, columns: share predicted as each class)."""
    classes = report["classes"]
    matrix = report["architectures"][arch]["confusion_original_test"]
    rows = [
        (f"{name} (n={sum(row)})", *(pct(v / max(1, sum(row)), 0) for v in row)) for name, row in zip(classes, matrix)
    ]
    return markdown_table(("true \\ predicted", *classes), rows)


def markdown(report: dict[str, Any]) -> str:
    """The whole ``report.md``."""
    counts = report["counts"]
    parts = [
        "# medenc evaluation",
        "",
        f"Classes: {', '.join(report['classes'])} (chance {report['chance']:.0%}); "
        f"{counts['train']} training and {counts['test']} test slices.",
        f"Training recipe: {report['settings']}.",
        f"Fidelity of the encrypted images: {fidelity_text(report)}.",
        "",
        "## Accuracy (paper Table 12 layout)",
        "",
        table12(report),
        "",
        protocol_text(report),
        "",
        "A model trained on encrypted data is protected against when its accuracy on original test images "
        "falls far below its accuracy on encrypted test images and toward chance.",
        "",
    ]
    for arch in report["architectures"]:
        parts += [
            f"## {arch}: predictions on original test images (paper Table 2 layout, summed over the seeds)",
            "",
            table2(report, arch),
            "",
        ]
    parts += ["Charts: `accuracy.png`, `confusion_<arch>.png`.", ""]
    return "\n".join(parts)


def write_report(report: dict[str, Any], folder: Path) -> None:
    """Write ``report.md``, ``accuracy.png`` and one confusion-matrix PNG per architecture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    (folder / "report.md").write_text(markdown(report), encoding="utf-8")
    archs = list(report["architectures"])
    bars_spec = [  # (label, test set, final/peak)
        ("clean baseline (peak)", "clean_test", "peak"),
        ("encrypted test", "encrypted_test", "final"),
        ("original test, final", "original_test", "final"),
        ("original test, peak", "original_test", "peak"),
    ]
    fig, ax = plt.subplots(figsize=(2.2 + 2.0 * len(archs), 3.8), dpi=120)
    width = 0.8 / len(bars_spec)
    for i, (label, name, which) in enumerate(bars_spec):
        cells = [report["architectures"][a].get("stats", {}).get(name, {}).get(which) for a in archs]
        values = [c["mean"] if c else report["architectures"][a][name] for a, c in zip(archs, cells)]
        errors = np.array(
            [[v - c["low"], c["high"] - v] if c else [0.0, 0.0] for v, c in zip(values, cells)]
        ).T  # fmt: skip
        bars = ax.bar(
            np.arange(len(archs)) + (i - (len(bars_spec) - 1) / 2) * width, values, width, yerr=errors,
            capsize=2, label=label, error_kw={"linewidth": 0.8},
        )  # fmt: skip
        ax.bar_label(bars, labels=[f"{v:.0%}" for v in values], fontsize=6, padding=2)
    ax.axhline(report["chance"], color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(np.arange(len(archs)), archs)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("accuracy")
    fidelity = fidelity_text(report).replace("; ", "\n")
    ax.set_title(f"Models trained on encrypted data (95% intervals)\nfidelity: {fidelity}", fontsize=7)
    ax.legend(fontsize=7, loc="upper right", ncols=2)
    fig.tight_layout()
    fig.savefig(folder / "accuracy.png")
    plt.close(fig)
    classes = report["classes"]
    for arch in archs:
        matrix = np.array(report["architectures"][arch]["confusion_original_test"])
        fig, ax = plt.subplots(figsize=(4.6, 4.0), dpi=120)
        ax.imshow(matrix, cmap="Blues")
        for (r, c), v in np.ndenumerate(matrix):
            ax.text(c, r, str(v), ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{arch} trained on encrypted, original test", fontsize=9)
        fig.tight_layout()
        fig.savefig(folder / f"confusion_{arch}.png")
        plt.close(fig)
