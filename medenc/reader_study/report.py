"""The reader-study report as Markdown (``report.md``): tables per reader and pooled, confusion matrices."""

from __future__ import annotations

VERSIONS = ("original", "encrypted")
POOLED = "pooled"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _points(value: float) -> str:
    return f"{100 * value:+.1f}"


def difference_text(diff: dict) -> str:
    """``-1.7 pp (-7.3 to +4.0)`` for a paired difference block, ``n/a`` without pairs."""
    if diff["estimate"] is None:
        return "n/a"
    lo, hi = diff["ci95"]
    return f"{_points(diff['estimate'])} pp ({_points(lo)} to {_points(hi)})"


def non_inferiority_text(diff: dict) -> str:
    """``yes (p = 0.012)`` / ``not shown (p = 0.21)`` for a paired difference block."""
    test = diff.get("non_inferiority")
    if not test:
        return "n/a"
    verdict = "yes" if test["non_inferior"] else "not shown"
    return f"{verdict} (p = {test['p_value']:.3g})"


def detection_text(block: dict) -> str:
    """``27/60 = 45.0% (32.1-58.4%), p = 0.52`` for a forced-choice block."""
    if not block["trials"]:
        return "n/a"
    lo, hi = block["ci95"]
    return (f"{block['detected']}/{block['trials']} = {_pct(block['rate'])} ({_pct(lo)}-{_pct(hi)}), "
            f"p = {block['p_value']:.3g}")


def _session_tables(report: dict) -> list[str]:
    rows = [*report["per_reader"].items(), (POOLED, report[POOLED])]
    margin = 100 * report["non_inferiority_margin"]
    out = [
        "## Concordance of paired diagnoses (paper Fig. 6)",
        "",
        "| reader | same, correct | same, wrong | correct on original only | correct on encrypted only "
        "| different, both wrong | pairs |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, block in rows:
        t = block["concordance"]
        out.append(f"| {name} | {t['same_correct']} | {t['same_wrong']} | {t['original_only_correct']} | "
                   f"{t['encrypted_only_correct']} | {t['different_both_wrong']} | {t['pairs']} |")
    out += [
        "",
        "## Accuracy, paired difference, McNemar and kappa",
        "",
        "| reader | accuracy original (95% CI) | accuracy encrypted (95% CI) | difference, encrypted - original "
        f"(95% CI) | non-inferior (margin {margin:g} points) | McNemar exact p | Cohen's kappa (95% CI) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, block in rows:
        cells = []
        for version in VERSIONS:
            a = block["accuracy"][version]
            ci = a["ci95"]
            cells.append(f"{_pct(a['accuracy'])} ({a['correct']}/{a['answered']}"
                         + (f"; {_pct(ci[0])}-{_pct(ci[1])})" if ci else ")"))
        k = block["kappa"]
        kci = f" ({_num(k['ci95'][0], 2)} to {_num(k['ci95'][1], 2)})" if k["ci95"] else ""
        diff = block["paired_difference"]
        out.append(f"| {name} | {cells[0]} | {cells[1]} | {difference_text(diff)} | {non_inferiority_text(diff)} "
                   f"| {_num(block['mcnemar']['p_value'], 4)} | {_num(k['kappa'])}{kci} |")
    out += ["", "## Confusion matrices (pooled; rows = true class, columns = diagnosis)", ""]
    classes = report["classes"]
    for version in VERSIONS:
        out += [f"**{version}**", "", "| true \\ diagnosis | " + " | ".join(classes) + " |",
                "|---|" + "---:|" * len(classes)]
        for name, counts in zip(classes, report[POOLED]["confusion"][version], strict=True):
            out.append(f"| {name} | " + " | ".join(str(n) for n in counts) + " |")
        out.append("")
    return out


def _forced_choice_table(report: dict) -> list[str]:
    forced = report.get("forced_choice")
    if not forced:
        return []
    out = [
        "## Forced choice: can readers tell the encrypted image from the original?",
        "",
        "| reader | changed image found (95% CI), exact binomial p against 50% | missing | mean confidence |",
        "|---|---:|---:|---:|",
    ]
    for name, block in [*forced["per_reader"].items(), (POOLED, forced[POOLED])]:
        out.append(f"| {name} | {detection_text(block)} | {block['missing']} | "
                   f"{_num(block['confidence']['mean'], 2)} |")
    return [*out, "", "![forced choice](forced-choice.png)", ""]


def report_markdown(report: dict) -> str:
    """The report as Markdown (tables per reader and pooled, confusion matrices, chart links)."""
    v = report["validation"]
    out = [
        "# Reader study report",
        "",
        f"{report['cases']} cases, {len(report['readers'])} reader(s) ({', '.join(report['readers'])}); "
        f"session 1 = {report['sessions']['1']} images, session 2 = {report['sessions']['2']} images. "
        f"Answers: {v['answered']} of {v['expected']} images ({v['missing']} missing).",
        "",
    ]
    if v["warnings"]:
        out += ["**Warnings (scored with --partial):**", "", *[f"- {w}" for w in v["warnings"]], ""]
    if "sessions" in v["parts"]:
        out += _session_tables(report)
        out += ["## Charts", "", "![accuracy](accuracy.png)", "", "![concordance](concordance.png)", "",
                "![confusion](confusion.png)", ""]
    out += _forced_choice_table(report)
    out += [
        "## Reading this report",
        "",
        "- The difference is encrypted minus original accuracy over the cases read in both sessions, with "
        "Tango's score interval (it stays informative when no pair is discordant). Non-inferiority is shown "
        "when the interval's lower end lies above minus the margin (one-sided score test, level 2.5%).",
        "- McNemar compares the two discordant cells (correct on one version only); a large p-value means "
        "no detectable difference, not proof of equivalence: look at the interval and the number of pairs.",
        "- The pooled rows treat every reader-case pair as independent, which overstates the evidence when "
        "readers share cases; prefer the per-reader rows for inference.",
        "- Kappa measures agreement between the two sessions' diagnoses beyond chance (1 = identical); its "
        "asymptotic interval has zero width when agreement is perfect.",
        "- Forced choice: a detection rate whose interval contains 50% means the readers could not tell which "
        "image of a pair was changed; the interval's width says how large an ability the study could miss.",
        "",
    ]
    return "\n".join(out)
