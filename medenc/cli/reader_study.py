"""``medenc reader-study``: build blinded doctor packets, simulate readers, score the answers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medenc.cli._common import warn

app = typer.Typer()

reader_study = typer.Typer(
    name="reader-study",
    no_args_is_help=True,
    help="Blinded two-session reader study (paper Fig. 5-6): do doctors diagnose encrypted images as "
    "well as the clean ones, and can they tell them apart (forced choice)?",
)
app.add_typer(reader_study, name="reader-study")


@reader_study.command("build")
def build(
    clean: Annotated[Path, typer.Option("--clean", exists=True, dir_okay=False,
                                        help="Manifest CSV of the clean slices (split == test rows).")],
    encrypted: Annotated[Path, typer.Option("--encrypted", exists=True, dir_okay=False,
                                            help="Manifest CSV of the encrypted slices (same case ids).")],
    out: Annotated[Path, typer.Option("--out", help="Study folder to create (packets/ and key/).")],
    cases: Annotated[int | None, typer.Option(
        "--cases", min=1, help="Use N test cases, stratified by label (default: all).")] = None,
    readers: Annotated[str, typer.Option("--readers", help="Comma-separated reader names.")] = "R1,R2,R3",
    seed: Annotated[int | None, typer.Option(
        "--seed", min=0, help="Seed of the case selection (default: fresh, recorded in the key). Codes, orders "
        "and UIDs come from a fresh secret kept in the key folder, never from the seed.")] = None,
    forced_choice: Annotated[bool, typer.Option(
        "--forced-choice/--no-forced-choice",
        help="Also write a forced-choice packet per reader: both versions of each case side by side, the "
        "reader marks the changed one.")] = True,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing study folder.")] = False,
) -> None:
    """Pick the test cases and write blinded packets per reader (two sessions, forced choice) and the key."""
    from medenc.reader_study.build import build_study

    result = build_study(
        clean, encrypted, out, cases=cases, readers=[r for r in readers.split(",") if r.strip()],
        seed=seed, forced_choice=forced_choice, force=force,
    )
    typer.echo(
        f"reader study: {result.cases} cases, {len(result.readers)} reader(s), 2 sessions"
        + (" + forced choice" if result.forced_choice else "") + f", selection seed {result.seed}"
    )
    for packet in result.packets:
        typer.echo(f"  packet  {packet}")
    typer.echo(f"  key     {result.study_dir / 'key'}  (never give this folder to a reader)")


@reader_study.command("simulate")
def simulate(
    study_dir: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="A built study folder.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the simulated answer files.")],
    accuracy_original: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Chance of a correct read of a clean image.")] = 0.8,
    accuracy_encrypted: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Chance of a correct fresh read of an encrypted image.")] = 0.8,
    consistency: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Chance the encrypted image gets the clean image's diagnosis.")] = 0.8,
    skip: Annotated[float, typer.Option(min=0.0, max=1.0, help="Chance an image is left unanswered.")] = 0.0,
    detection: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Forced choice: chance of marking the encrypted image as changed (0.5 = chance).")
    ] = 0.5,
    seed: Annotated[int, typer.Option(min=0)] = 0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing answer files.")] = False,
) -> None:
    """Write answers of simulated readers with known behaviour (they read the key: for trials only)."""
    from medenc.reader_study.simulate import simulate_answers

    files = simulate_answers(
        study_dir, out, accuracy_original=accuracy_original, accuracy_encrypted=accuracy_encrypted,
        consistency=consistency, skip=skip, detection=detection, seed=seed, force=force,
    )
    for path in files:
        typer.echo(f"  answers {path}")


@reader_study.command("score")
def score(
    study_dir: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="A built study folder.")],
    answers: Annotated[list[Path], typer.Option("--answers", exists=True, dir_okay=False,
                                                help="Answer CSV file(s); more files may follow.")],
    out: Annotated[Path, typer.Option("--out", help="Report folder to create.")],
    more: Annotated[list[Path] | None, typer.Argument(exists=True, dir_okay=False, show_default=False,
                                                      help="Further answer files (--answers A.csv B.csv).",
                                                      metavar="[FILES]...")] = None,
    partial: Annotated[bool, typer.Option(
        "--partial", help="Score incomplete or partly invalid answers, with warnings.")] = False,
    margin: Annotated[float, typer.Option(
        "--margin", min=0.0, max=99.0,
        help="Non-inferiority margin of the accuracy difference, in percentage points.")] = 5.0,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing report folder.")] = False,
) -> None:
    """Check the answers; report accuracy, its paired difference, McNemar, kappa, the Fig. 6 table, forced choice."""
    from medenc.reader_study.report import detection_text, difference_text, non_inferiority_text
    from medenc.reader_study.score import score_study

    result = score_study(study_dir, [*answers, *(more or [])], out, partial=partial, margin=margin / 100,
                         force=force)
    for message in result.warnings:
        warn(message)
    report = result.report
    if "sessions" in report["validation"]["parts"]:
        pooled = report["pooled"]
        acc = pooled["accuracy"]
        table = pooled["concordance"]
        kappa = pooled["kappa"]

        def pct(a: dict) -> str:
            if a["accuracy"] is None:
                return "n/a"
            return f"{100 * a['accuracy']:.1f}% ({a['correct']}/{a['answered']})"

        typer.echo(f"accuracy original {pct(acc['original'])}, encrypted {pct(acc['encrypted'])}")
        typer.echo(f"difference encrypted - original {difference_text(pooled['paired_difference'])}; "
                   f"non-inferior at {margin:g} points: {non_inferiority_text(pooled['paired_difference'])}")
        typer.echo(
            f"pairs {table['pairs']}: same+correct {table['same_correct']}, same+wrong {table['same_wrong']}, "
            f"original only {table['original_only_correct']}, encrypted only {table['encrypted_only_correct']}, "
            f"different+wrong {table['different_both_wrong']}"
        )
        kci = f" ({kappa['ci95'][0]:.2f} to {kappa['ci95'][1]:.2f})" if kappa["ci95"] else ""
        typer.echo(f"McNemar exact p = {pooled['mcnemar']['p_value']:.4g}, Cohen's kappa = "
                   + ("n/a" if kappa["kappa"] is None else f"{kappa['kappa']:.3f}{kci}"))
    if report["forced_choice"]:
        typer.echo(f"forced choice: changed image found {detection_text(report['forced_choice']['pooled'])} "
                   "(exact 95% CI, binomial test against 50%)")
    typer.echo(f"report: {result.out / 'report.md'}")
