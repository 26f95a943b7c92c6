"""PNG charts of a reader-study report (matplotlib Figures rendered by the Agg backend)."""

from __future__ import annotations

from pathlib import Path

VERSIONS = ("original", "encrypted")
CELLS = (
    ("same_correct", "same, correct", "#3a9d5d"),
    ("same_wrong", "same, wrong", "#b94a48"),
    ("original_only_correct", "correct on original only", "#e0a040"),
    ("encrypted_only_correct", "correct on encrypted only", "#4a7db9"),
    ("different_both_wrong", "different, both wrong", "#888888"),
)


def _rows(report: dict) -> list[tuple[str, dict]]:
    return [*report["per_reader"].items(), ("pooled", report["pooled"])]


def write_charts(report: dict, folder: Path) -> list[Path]:
    """Write ``accuracy.png``, ``concordance.png``, ``confusion.png`` and, with forced-choice answers,
    ``forced-choice.png`` into ``folder``.

    Returns:
        The written files.
    """
    import numpy as np
    from matplotlib.figure import Figure  # a bare Figure renders with Agg; pyplot's global state is untouched

    rows = _rows(report)
    names = [name for name, _ in rows]
    written = []

    fig = Figure(figsize=(max(5.0, 1.3 * len(rows) + 2), 3.8))
    ax = fig.subplots()
    x = np.arange(len(rows))
    for i, (version, color) in enumerate(zip(VERSIONS, ("#777777", "#4a7db9"), strict=True)):
        acc = [b["accuracy"][version]["accuracy"] or 0.0 for _, b in rows]
        ci = [b["accuracy"][version]["ci95"] or [a, a] for a, (_, b) in zip(acc, rows, strict=True)]
        err = np.array([[a - lo for a, (lo, _) in zip(acc, ci, strict=True)],
                        [hi - a for a, (_, hi) in zip(acc, ci, strict=True)]])
        ax.bar(x + (i - 0.5) * 0.38, acc, 0.38, yerr=err, capsize=3, color=color, label=version)
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1.18)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_title("Diagnostic accuracy per version")
    ax.legend(loc="upper center", ncol=2, frameon=False)
    fig.tight_layout()
    written.append(folder / "accuracy.png")
    fig.savefig(written[-1], dpi=110, bbox_inches="tight")

    fig = Figure(figsize=(8.0, 0.55 * len(rows) + 1.8))
    ax = fig.subplots()
    left = np.zeros(len(rows))
    for key, label, color in CELLS:
        counts = np.array([b["concordance"][key] for _, b in rows], dtype=float)
        totals = np.array([max(b["concordance"]["pairs"], 1) for _, b in rows], dtype=float)
        share = counts / totals
        ax.barh(names, share, left=left, color=color, label=label)
        for y, (s, n, lft) in enumerate(zip(share, counts, left, strict=True)):
            if s >= 0.06:
                ax.text(lft + s / 2, y, f"{int(n)}", ha="center", va="center", color="white", fontsize=8)
        left += share
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("share of paired cases")
    ax.set_title("Paired diagnoses, clean vs encrypted image (paper Fig. 6)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=3, fontsize=8, frameon=False)
    fig.tight_layout()
    written.append(folder / "concordance.png")
    fig.savefig(written[-1], dpi=110, bbox_inches="tight")

    classes = report["classes"]
    size = 2.2 + 0.45 * len(classes)
    fig = Figure(figsize=(2 * size + 1, size + 0.6))
    axes = fig.subplots(1, 2)
    for ax, version in zip(axes, VERSIONS, strict=True):
        matrix = np.array(report["pooled"]["confusion"][version])
        ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(int(matrix.max()), 1))
        for (i, j), n in np.ndenumerate(matrix):
            ax.text(j, i, str(n), ha="center", va="center",
                    color="white" if n > matrix.max() / 2 else "black", fontsize=8)
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(classes)), classes, fontsize=8)
        ax.set_xlabel("diagnosis")
        ax.set_ylabel("true class")
        ax.set_title(f"{version} images (pooled)")
    fig.tight_layout()
    written.append(folder / "confusion.png")
    fig.savefig(written[-1], dpi=110, bbox_inches="tight")
    if report.get("forced_choice"):
        written.append(_forced_choice_chart(report["forced_choice"], folder / "forced-choice.png"))
    return written


def _forced_choice_chart(forced: dict, path: Path) -> Path:
    """Detection rate per reader and pooled with exact 95% intervals, against the 50% of chance."""
    import numpy as np
    from matplotlib.figure import Figure

    rows = [*forced["per_reader"].items(), ("pooled", forced["pooled"])]
    rate = np.array([b["rate"] if b["rate"] is not None else np.nan for _, b in rows])
    ci = np.array([b["ci95"] or [np.nan, np.nan] for _, b in rows])
    fig = Figure(figsize=(max(4.5, 1.1 * len(rows) + 2), 3.6))
    ax = fig.subplots()
    x = np.arange(len(rows))
    ax.axhline(0.5, color="#b94a48", linestyle="--", linewidth=1, label="chance (50%)")
    ax.errorbar(x, rate, yerr=np.vstack([rate - ci[:, 0], ci[:, 1] - rate]), fmt="o", color="#4a7db9",
                capsize=4, label="changed image found (95% CI)")
    ax.set_xticks(x, [name for name, _ in rows])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("detection rate")
    ax.set_title("Forced choice: which image of the pair is changed?")
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path
