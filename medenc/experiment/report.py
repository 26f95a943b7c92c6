"""Markdown tables and PNG charts of an evaluation (``report.json`` of ``medenc evaluate``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medenc.reporting import markdown_table, pct


def table12(report: dict[str, Any]) -> str:
    """The paper's Table 12 layout: per architecture, clean baseline vs trained-on-encrypted accuracies."""
    columns = (
        "model",
        "clean baseline (train+test original)",
        "trained on encrypted: encrypted test",
        "trained on encrypted: original test",
        "drop (encrypted - original)",
    )
    rows = [
        (arch, pct(r["clean_test"]), pct(r["encrypted_test"]), pct(r["original_test"]),
         f"{(r['encrypted_test'] - r['original_test']) * 100:+.1f} points")
        for arch, r in report["architectures"].items()
    ]
    return markdown_table(columns, rows)


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
        "",
        "## Accuracy (paper Table 12 layout)",
        "",
        table12(report),
        "",
        "A model trained on encrypted data is protected against when its accuracy on original test images "
        "falls far below its accuracy on encrypted test images and toward chance.",
        "",
    ]
    for arch in report["architectures"]:
        parts += [
            f"## {arch}: predictions on original test images (paper Table 2 layout)",
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
    keys = [("clean_test", "clean baseline"), ("encrypted_test", "encrypted test"), ("original_test", "original test")]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(archs), 3.6), dpi=120)
    width = 0.26
    for i, (key, label) in enumerate(keys):
        values = [report["architectures"][a][key] for a in archs]
        bars = ax.bar(np.arange(len(archs)) + (i - 1) * width, values, width, label=label)
        ax.bar_label(bars, labels=[f"{v:.0%}" for v in values], fontsize=7)
    ax.axhline(report["chance"], color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(np.arange(len(archs)), archs)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("accuracy")
    ax.set_title("Models trained on encrypted data", fontsize=9)
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
