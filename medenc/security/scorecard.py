"""A one-page scorecard of a security evaluation: ``scorecard.md`` and ``scorecard.png``.

Rows are the thief's defences, columns the thief architectures, a cell is the peak accuracy on original
test images (an oracle early stop) with its 95% interval. Its colour places it between chance (green)
and the clean baseline of its architecture (red); a cell whose interval reaches the clean baseline's is
"not protected" (outlined). The header states the fidelity of the encrypted images, the key and the
protocol; the verdict line counts the defences protected against: a defence counts when every
architecture's cell is protected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medenc.learn.intervals import interval_text
from medenc.security.report import cell_table

__all__ = ["scorecard_markdown", "verdict", "write_scorecard"]


def _peak(report: dict[str, Any], row: str, arch: str) -> dict[str, Any]:
    return report["table"][row][arch]["stats"]["original_test"]["peak"]


def thief_rows(report: dict[str, Any]) -> list[str]:
    """The rows that are thieves (not reference rows such as the clean baseline or 'few clean only')."""
    reference = set(report.get("reference_rows", ["clean baseline", "few clean only"]))
    return [r for r in report["rows"] if r not in reference]


def verdict(report: dict[str, Any]) -> dict[str, Any]:
    """Counts: defences (rows) protected against on every architecture, and protected cells.

    Returns:
        ``protected_rows``, ``rows``, ``protected_cells``, ``cells``, ``exposed`` (row labels not protected
        against) and a one-line ``text``.
    """
    rows = thief_rows(report)
    measured = {r: list(report["table"][r].values()) for r in rows}  # cells not run are absent
    protected_rows = [r for r in rows if all(c["verdict"] == "protected" for c in measured[r])]
    cells = sum(c["verdict"] == "protected" for r in rows for c in measured[r])
    total = sum(len(m) for m in measured.values())
    text = (
        f"protected against {len(protected_rows)} of {len(rows)} thieves (on every architecture measured: "
        f"{', '.join(report['archs'])}); {cells} of {total} cells"
    )
    return {
        "protected_rows": len(protected_rows),
        "rows": len(rows),
        "protected_cells": int(cells),
        "cells": total,
        "exposed": [r for r in rows if r not in protected_rows],
        "text": text,
    }


def fidelity_header(report: dict[str, Any]) -> str:
    """Fidelity of the encrypted images (stored units first when known) and, if matched, the target."""
    fid = report["fidelity"]
    parts = []
    if "stored" in fid:
        s = fid["stored"]
        parts.append(f"PSNR {s['psnr_db_mean']:.1f} dB (min {s['psnr_db_min']:.1f}), SSIM {s['ssim_mean']:.3f} stored")
    w = fid["model_input_window"]
    parts.append(f"PSNR {w['psnr_db_mean']:.1f} dB, SSIM {w['ssim_mean']:.3f} display window")
    text = "; ".join(parts)
    match = report.get("fidelity_match")
    if match:
        text += f" (eps chosen for {match['target_psnr_db']:g} dB: {match['eps']:.3g})"
    return text


def scorecard_markdown(report: dict[str, Any]) -> str:
    """The scorecard page in markdown."""
    key = report["key"]
    archs = report["archs"]
    result = verdict(report)
    clean = {a: _peak(report, "clean baseline", a) for a in archs}
    marks = {"not protected": " **not protected**", "protected": " protected"}
    table = cell_table(
        report, lambda cell: interval_text(cell["stats"]["original_test"]["peak"]) + marks.get(cell["verdict"], "")
    )
    hard = key["hardening"]
    hardening = (
        "none"
        if not (
            hard["eot"]
            or hard["ratio_jitter"]
            or key["combiner"] == "hconcat_mirror"
            or report["fidelity"].get("ensemble")
        )
        else f"EOT {','.join(hard['eot']) or 'off'}, ratio jitter {hard['ratio_jitter']}, combiner {key['combiner']}"
        + (f", ensemble + {', '.join(report['fidelity']['ensemble'])}" if report["fidelity"].get("ensemble") else "")
    )
    counts = report["counts"]
    lines = [
        f"# Scorecard: `{report['encrypted_manifest'] or report.get('volume', {}).get('studies')}`",
        "",
        f"**Fidelity:** {fidelity_header(report)}.",
        f"**Key:** {key['combiner']}, {key['pgd']['norm']} eps {key['pgd']['eps']:.4g}, "
        f"{key['pgd']['steps']} PGD steps; hardening: {hardening}.",
        f"**Data:** {counts['train']} training / {counts['test']} test slices, {len(report['classes'])} classes "
        f"(chance {report['chance']:.0%}); the thief holds {counts['thief_clean']} labelled originals.",
        f"**Protocol:** peak accuracy on original test images (oracle early stop), mean over "
        f"{len(report['seeds'])} training seed(s) with a 95% interval ({report.get('interval')}); a cell is "
        "'not protected' when its interval reaches the clean baseline's."
        + (
            f" The interval over seeds holds the thief's training randomness on these {counts['test']} test slices, "
            f"not their own sampling error (about +-{50 / counts['test'] ** 0.5:.1f} points near 50%)."
            if len(report["seeds"]) > 1
            else ""
        ),
        "",
        f"**Verdict: {result['text']}.**",
        "",
        table,
        "",
        "Clean baseline (what the originals give): "
        + ", ".join(f"{a} {interval_text(clean[a])}" for a in archs)
        + f". Chance {report['chance']:.0%}.",
        "",
        "![scorecard](scorecard.png)",
        "",
    ]
    return "\n".join(lines)


def write_scorecard(report: dict[str, Any], folder: Path) -> None:
    """Write ``scorecard.md`` and ``scorecard.png`` into ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LinearSegmentedColormap
    from matplotlib.patches import Rectangle

    folder = Path(folder)
    (folder / "scorecard.md").write_text(scorecard_markdown(report), encoding="utf-8")
    rows, archs = report["rows"], report["archs"]
    chance = report["chance"]
    cmap = LinearSegmentedColormap.from_list("protection", ["#1a9850", "#fee08b", "#d73027"])
    result = verdict(report)
    header = [
        f"{Path(report['encrypted_manifest']).parent.name}: {result['text']}",
        f"fidelity: {fidelity_header(report)}",
        f"cell: peak accuracy on original test images, mean [95% interval] over {len(report['seeds'])} seed(s)",
        f"colour: green = chance ({chance:.0%}), red = the column's clean baseline; outlined = not protected; "
        "grey = reference row",
    ]
    header_h, table_h = 0.2 * len(header) + 0.15, 0.36 * len(rows) + 0.35
    fig_w, fig_h = 2.8 + 2.2 * len(archs), header_h + table_h + 0.1
    fig = plt.figure(figsize=(max(fig_w, 7.0), fig_h), dpi=130)
    for n, line in enumerate(header):
        fig.text(0.01, 1 - (0.12 + 0.2 * n) / fig_h, line, fontsize=7, va="top", weight="bold" if n == 0 else None)
    left = 1.7 / max(fig_w, 7.0)
    ax = fig.add_axes((left, 0.1 / fig_h, 0.98 - left, (table_h - 0.35) / fig_h))
    for j, arch in enumerate(archs):
        clean = _peak(report, "clean baseline", arch)["mean"]
        for i, row in enumerate(rows):
            cell = report["table"][row].get(arch)
            if cell is None:
                ax.add_patch(Rectangle((j, i), 1, 1, facecolor="white", edgecolor="#e0e0e0", linewidth=1.0))
                ax.text(j + 0.5, i + 0.5, "not run", ha="center", va="center", fontsize=6, color="grey")
                continue
            if cell.get("note"):  # a thief with nothing to train on
                ax.add_patch(Rectangle((j, i), 1, 1, facecolor=cmap(0.0), edgecolor="white", linewidth=1.5))
                ax.text(j + 0.5, i + 0.5, cell["note"], ha="center", va="center", fontsize=6)
                continue
            peak = cell["stats"]["original_test"]["peak"]
            span = max(1e-6, clean - chance)
            shade = min(1.0, max(0.0, (peak["mean"] - chance) / span))
            reference = cell["verdict"] == "reference"
            face = "#e0e0e0" if reference else cmap(shade)
            ax.add_patch(Rectangle((j, i), 1, 1, facecolor=face, edgecolor="white", linewidth=1.5))
            if cell["verdict"] == "not protected":
                ax.add_patch(Rectangle((j + 0.04, i + 0.08), 0.92, 0.84, fill=False, edgecolor="black", linewidth=1.4))
            ax.text(j + 0.5, i + 0.5, interval_text(peak, 0), ha="center", va="center", fontsize=7)
    ax.set_xlim(0, len(archs))
    ax.set_ylim(len(rows), 0)
    ax.set_xticks([j + 0.5 for j in range(len(archs))], archs, fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks([i + 0.5 for i in range(len(rows))], rows, fontsize=7)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    fig.savefig(folder / "scorecard.png")
    plt.close(fig)
