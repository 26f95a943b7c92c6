"""Markdown and PNG charts of a security evaluation (``report.json`` of ``medenc security-eval``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from medenc.experiment.report import protocol_text
from medenc.learn.intervals import interval_text
from medenc.reporting import markdown_table
from medenc.reporting import pct as _pct


def _cell_peak(cell: dict[str, Any]) -> dict[str, Any] | None:
    return cell.get("stats", {}).get("original_test", {}).get("peak")


def peak_value(cell: dict[str, Any]) -> float:
    """A cell's mean peak accuracy on original test images (its final accuracy in reports without peaks)."""
    peak = _cell_peak(cell)
    if peak:
        return float(peak["mean"])
    return float("nan") if cell.get("original_test") is None else float(cell["original_test"])


def cell_table(report: dict[str, Any], cell_text: Callable[[dict[str, Any]], str]) -> str:
    """Defence x architecture as a markdown table: ``cell_text`` writes each measured cell; a cell not run and a
    thief with nothing to train on (his note, e.g. "none available") are written here."""
    rows = []
    for label in report["rows"]:
        cells = [label]
        for arch in report["archs"]:
            r = report["table"][label].get(arch)
            cells.append("not run" if r is None else str(r["note"]) if r.get("note") else cell_text(r))
        rows.append(cells)
    return markdown_table(("thief's defence", *report["archs"]), rows)


def security_table(report: dict[str, Any]) -> str:
    """Defence x architecture: peak accuracy on original test images, mean [95% interval], and the verdict."""

    def text(r: dict[str, Any]) -> str:
        peak = _cell_peak(r)
        cell = interval_text(peak) if peak else _pct(r["original_test"])
        return cell + (" **not protected**" if r.get("verdict") == "not protected" else "")

    return cell_table(report, text)


def final_table(report: dict[str, Any]) -> str:
    """Defence x architecture: the last epoch's accuracy on original test images, mean [95% interval], and on
    encrypted test images in brackets."""

    def text(r: dict[str, Any]) -> str:
        final = r.get("stats", {}).get("original_test", {}).get("final")
        cell = interval_text(final) if final else _pct(r["original_test"])
        return cell + (f" ({_pct(r['encrypted_test'])})" if r.get("encrypted_test") is not None else "")

    return cell_table(report, text)


def compression_text(report: dict[str, Any]) -> str:
    """One line per compression row: the ratio achieved and the codec parameter."""
    lines = []
    for label, d in report.get("defences", {}).items():
        if "ratio_mean" not in d:
            continue
        param = next((k[: -len("_mean")] for k in d if k.endswith("_mean") and k != "ratio_mean"), None)
        extra = (
            f", {param} {d[param + '_min']:.3g}-{d[param + '_max']:.3g} (mean {d[param + '_mean']:.3g})"
            if param
            else ""
        )
        lines.append(
            f"- {label}: achieved {d['ratio_mean']:.1f}:1 on average (min {d['ratio_min']:.1f}, max "
            f"{d['ratio_max']:.1f}) over {d['images']} training images; {d['met_target']:.0%} met the target"
            f"{extra}; {d['ratio_basis']}"
        )
    return "\n".join(lines)


def fidelity_match_text(match: dict[str, Any]) -> str:
    """The PSNR search: every trial and the whole set's result."""
    trials = "; ".join(f"eps {t['eps']:.4g} -> {t['psnr_db']:.2f} dB" for t in match["trials"])
    whole = match.get("whole_set")
    text = (
        f"Target mean PSNR {match['target_psnr_db']:g} dB (stored units). Search on {match['subset_slices']} "
        f"slices: {trials} ({'converged' if match['converged'] else 'not converged'} within "
        f"{match['tolerance_db']:g} dB, {match['seconds']:.0f} s). Chosen eps {match['eps']:.4g} (step "
        f"{match['step']:.4g})."
    )
    if whole:
        text += (
            f" Whole set: {whole['slices']} slices at PSNR {whole['psnr_db_mean']:.2f} dB (min "
            f"{whole['psnr_db_min']:.2f}), encrypted in {match.get('encrypt_seconds', 0):.0f} s."
        )
    return text


def fidelity_line(report: dict[str, Any]) -> str:
    """One line of PSNR / SSIM figures."""
    fid = report["fidelity"]
    window = fid["model_input_window"]
    text = (
        f"PSNR {window['psnr_db_mean']:.1f} dB (min {window['psnr_db_min']:.1f}), "
        f"SSIM {window['ssim_mean']:.4f} (min {window['ssim_min']:.4f}) on the display window"
    )
    if "stored" in fid:
        stored = fid["stored"]
        text += (
            f"; stored units: PSNR {stored['psnr_db_mean']:.1f} dB (min {stored['psnr_db_min']:.1f}), "
            f"SSIM {stored['ssim_mean']:.4f} (min {stored['ssim_min']:.4f})"
        )
    return text


def key_recovery_text(recovery: dict[str, Any]) -> str:
    """The key-recovery section (ranks and counts only, never the correspondence itself)."""
    lines = [
        f"Combiner {recovery['combiner']} (k = {recovery['k']}); the thief holds {recovery['thief_images']} labelled "
        f"originals; his models: {recovery.get('thief_model_arch', '?')} trained on the encrypted set and a "
        f"surrogate trained on his originals. Candidate ratios: {recovery['ratio_grid'] or 'none (basic)'}.",
        "",
        "| source class | candidates searched | rank of the true targets | ratio error |",
        "|---|---|---|---|",
    ]
    for p in recovery["per_class"]:
        err = "-" if p["ratio_error"] is None else f"{p['ratio_error']:.2f}"
        lines.append(f"| {p['class']} | {p['candidates']} | {p['rank_of_true_targets']} | {err} |")
    lines.append("")
    lines.append(
        f"Simulated encryptions run: {recovery['simulations']}. Classes whose true targets ranked first: "
        f"{recovery['classes_top1']} of {len(recovery['per_class'])}."
    )
    if recovery.get("space") is not None:
        lines.append(
            f"Full correspondence: {recovery['space']} correspondences can be drawn; the true one ranks "
            f"{recovery['rank_of_true_key']} by summed scores ({'found: top-1' if recovery['top1'] else 'not top-1'})."
        )
    else:
        lines.append(f"Full correspondence: not ranked ({recovery.get('note', '')}).")
    return "\n".join(lines)


def comparison_table(report: dict[str, Any]) -> str:
    """Before -> after: the earlier report's accuracy on original test images beside this one's."""
    before = report["compared_with"]
    archs = [a for a in report["archs"] if any(a in before["table"].get(r, {}) for r in report["rows"])]
    lines = ["| thief's defence | " + " | ".join(f"{a}: before -> after" for a in archs) + " |"]
    lines.append("|---|" + "---|" * len(archs))
    for label in report["rows"]:
        if label not in before["table"]:
            continue
        cells = []
        for arch in archs:
            old = before["table"][label].get(arch, {}).get("original_test")
            new = report["table"][label].get(arch, {}).get("original_test")
            change = "" if old is None or new is None else f" ({(new - old) * 100:+.1f})"
            cells.append(f"{_pct(old)} -> {_pct(new)}{change}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    old_fid = (before.get("fidelity") or {}).get("model_input_window")
    if old_fid:
        lines += ["", f"Fidelity before: PSNR {old_fid['psnr_db_mean']:.1f} dB, SSIM {old_fid['ssim_mean']:.4f}; "
                  f"after: {fidelity_line(report)}."]  # fmt: skip
    old_rec, new_rec = before.get("key_recovery"), report.get("key_recovery")
    if old_rec and new_rec and old_rec.get("space") and new_rec.get("space"):
        lines.append(
            f"Key recovery: true key ranked {old_rec['rank_of_true_key']} of {old_rec['space']} before, "
            f"{new_rec['rank_of_true_key']} of {new_rec['space']} after."
        )
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    """The whole ``report.md``."""
    counts, key = report["counts"], report["key"]
    hardening = key["hardening"]
    harden_text = (
        f"EOT {','.join(hardening['eot']) or 'off'} x {hardening['eot_samples']}, ratio jitter "
        f"{hardening['ratio_jitter']}, layout {'flip-consistent' if key['combiner'] == 'hconcat_mirror' else 'plain'}"
    )
    ensemble = report["fidelity"].get("ensemble")
    if ensemble:
        harden_text += f", ensemble of the base model + {', '.join(ensemble)}"
    parts = [
        "# medenc security evaluation",
        "",
        f"Classes: {', '.join(report['classes'])} (chance {report['chance']:.0%}); {counts['train']} training and "
        f"{counts['test']} test slices; the thief also holds {counts['thief_clean']} labelled originals.",
        f"Key {key['fingerprint']}: {key['combiner']}, {key['pgd']['norm']} eps {key['pgd']['eps']}, step "
        f"{key['pgd']['step']} x {key['pgd']['steps']}; hardening: {harden_text}.",
        f"Base architecture: {report['base_arch']}. Thief's training recipe: {report['settings']}.",
        "",
        "## Peak accuracy on original test images (oracle early stop)",
        "",
        security_table(report),
        "",
        protocol_text(report),
        "",
        "## Final epoch: accuracy on original test images (on encrypted test images in brackets)",
        "",
        final_table(report),
        "",
        f"Fidelity of the encrypted images: {fidelity_line(report)}.",
        "",
        "Lower is better protection: the thief's model should fail on original images. The clean baseline is "
        "what the thief would get with the originals; 'few clean only' is what he gets from his labelled "
        "originals alone, without the encrypted set.",
        "",
    ]
    if report.get("fidelity_match"):
        parts += ["## Fidelity-matched encryption", "", fidelity_match_text(report["fidelity_match"]), ""]
    compression = compression_text(report)
    if compression:
        parts += ["## Compression achieved", "", compression, ""]
    if report.get("key_recovery"):
        parts += ["## Key recovery (paper sections 3.4, 4.3)", "", key_recovery_text(report["key_recovery"]), ""]
    if report.get("compared_with"):
        parts += [
            f"## Compared with `{report['compared_with']['path']}` (accuracy on original test images, change in "
            "points)",
            "",
            comparison_table(report),
            "",
        ]
    if report.get("volume"):
        from medenc.security.volume import volume_section

        parts += volume_section(report)
    charts = "`security_heatmap.png`, `security_bars.png`" + (
        ", `security_compare.png`" if report.get("compared_with") else ""
    )
    parts += [f"Charts: {charts}. Run time {report['seconds']:.0f} s.", ""]
    return "\n".join(parts)


def write_security_report(report: dict[str, Any], folder: Path) -> None:
    """Write ``report.md``, ``security_heatmap.png``, ``security_bars.png`` and, with an earlier report to
    compare with, ``security_compare.png`` into ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    (folder / "report.md").write_text(markdown(report), encoding="utf-8")
    rows, archs = report["rows"], report["archs"]
    values = np.array(
        [[peak_value(report["table"][r][a]) if a in report["table"][r] else np.nan for a in archs] for r in rows]
    )
    fig, ax = plt.subplots(figsize=(2.6 + 1.3 * len(archs), 0.9 + 0.34 * len(rows)), dpi=120)
    image = ax.imshow(values, cmap="RdYlGn_r", vmin=0.0, vmax=1.0, aspect="auto")
    for (r, c), v in np.ndenumerate(values):
        cell = report["table"][rows[r]].get(archs[c])
        text = f"{v:.0%}" if not np.isnan(v) else ("not run" if cell is None else cell.get("note", "n/a"))
        ax.text(c, r, text, ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(archs)), archs, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_title("thief's peak accuracy on original test images (mean over seeds)", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.05)
    fig.tight_layout()
    fig.savefig(folder / "security_heatmap.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(3.0 + 0.55 * len(rows), 3.6), dpi=120)
    width = 0.8 / max(1, len(archs))
    for i, arch in enumerate(archs):
        peaks = [_cell_peak(report["table"][r].get(arch, {})) for r in rows]
        errors = np.array([[v - p["low"], p["high"] - v] if p else [0, 0] for v, p in zip(values[:, i], peaks)]).T
        bars = ax.bar(
            np.arange(len(rows)) + (i - (len(archs) - 1) / 2) * width, values[:, i], width, label=arch, yerr=errors,
            capsize=2, error_kw={"linewidth": 0.7},
        )  # fmt: skip
        ax.bar_label(bars, labels=["" if np.isnan(v) else f"{v:.0%}" for v in values[:, i]], fontsize=6)
    ax.axhline(report["chance"], color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(np.arange(len(rows)), rows, rotation=40, ha="right", fontsize=7)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("peak accuracy on original test images")
    ax.set_title(f"fidelity: {fidelity_line(report).split(' on the')[0]}", fontsize=8)
    ax.legend(fontsize=7, ncols=len(archs) + 1, loc="upper left")
    fig.tight_layout()
    fig.savefig(folder / "security_bars.png")
    plt.close(fig)
    if report.get("compared_with"):
        _comparison_chart(report, folder / "security_compare.png")


def _value(cell: dict[str, Any]) -> float:
    """A cell's accuracy on original test images, NaN where there is none."""
    value = cell.get("original_test")
    return float("nan") if value is None else float(value)


def _psnr_text(fidelity: dict[str, Any] | None) -> str:
    window = (fidelity or {}).get("model_input_window")
    return "PSNR n/a" if not window else f"PSNR {window['psnr_db_mean']:.1f} dB, SSIM {window['ssim_mean']:.3f}"


def _comparison_chart(report: dict[str, Any], path: Path) -> None:
    """Before / after bars per thief architecture, the fidelity of each side in the legend."""
    import matplotlib.pyplot as plt
    import numpy as np

    before = report["compared_with"]
    rows = [r for r in report["rows"] if r in before["table"]]
    archs = [a for a in report["archs"] if any(a in before["table"][r] for r in rows)]
    if not rows or not archs:
        return
    fig, axes = plt.subplots(
        len(archs), 1, figsize=(3.2 + 0.55 * len(rows), 2.6 * len(archs)), dpi=120, sharex=True, squeeze=False
    )
    x = np.arange(len(rows))
    sides = (
        (f"before ({_psnr_text(before.get('fidelity'))})", before["table"], "#9e9e9e"),
        (f"after ({_psnr_text(report['fidelity'])})", report["table"], "#1f77b4"),
    )
    for ax, arch in zip(axes[:, 0], archs, strict=True):
        for i, (label, table, color) in enumerate(sides):
            values = [_value(table[r].get(arch, {})) for r in rows]
            bars = ax.bar(x + (i - 0.5) * 0.4, values, 0.4, label=label, color=color)
            ax.bar_label(bars, labels=["" if np.isnan(v) else f"{v:.0%}" for v in values], fontsize=6)
        ax.axhline(report["chance"], color="grey", linestyle="--", linewidth=1)
        ax.set_ylim(0, 1.15)
        ax.set_ylabel(f"{arch}\naccuracy on originals", fontsize=8)
        ax.legend(fontsize=6, loc="upper left", ncols=2)
    axes[-1, 0].set_xticks(x, rows, rotation=40, ha="right", fontsize=7)
    axes[0, 0].set_title("thief's accuracy on original test images: before / after (lower protects more)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
