"""``medenc security-eval``: the thief's counter-measures x architectures table, and key recovery."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from medenc.cli._common import (
    DEFAULT_SEEDS,
    ConfigOption,
    ForceOption,
    PresetOption,
    SeedsOption,
    parse_archs,
    progress_bars,
    recipe_from,
    warn,
)

app = typer.Typer()


@app.command("security-eval")
def security_eval_command(
    clean: Annotated[
        Path, typer.Option("--clean", help="Original slice manifest (with --studies: the studies manifest).")
    ],
    model: Annotated[Path, typer.Option("--model", help="Base model checkpoint the data was encrypted with.")],
    key: Annotated[Path, typer.Option("--key", help="The key the data was encrypted with (kept secret).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder (report.json, report.md, charts).")],
    encrypted: Annotated[
        Path | None,
        typer.Option("--encrypted", help="Encrypted slice manifest (encrypt-dataset); or give --psnr or --studies."),
    ] = None,
    studies: Annotated[
        Path | None,
        typer.Option(
            "--studies",
            help="Instead of --encrypted: the shared studies (OUT of encrypt-study --batch over the studies "
            "manifest given as --clean); adds the volume thief's rows.",
        ),
    ] = None,
    volume_thieves: Annotated[
        str,
        typer.Option(
            "--volume-thieves",
            help="With --studies: 'all', 'none' or a comma list of neighbours[:R], mean[:W], median[:W], all-slices.",
        ),
    ] = "all",
    arch: Annotated[
        str | None,
        typer.Option(help="Thief architectures, comma-separated, besides the base's (default from config: victims)."),
    ] = None,
    defenses: Annotated[
        str,
        typer.Option(
            "--defenses",
            help="'all', 'none' (reference rows only) or a comma list of jpeg[:Q], jpeg-cr[:RATIO], j2k-cr[:RATIO] "
            "(JPEG / JPEG 2000 at RATIO:1), squeeze[:Q], blur[:SIGMA], median[:SIZE], bitdepth[:BITS], flip-aug, "
            "crop-aug, augment, ueraser[:REPEATS], cutout, mixup, cutmix, early-stop, advtrain, finetune, "
            "ssl-finetune.",
        ),
    ] = "all",
    key_recovery: Annotated[
        bool, typer.Option("--key-recovery", help="Also run the paper's key-recovery attack.")
    ] = False,
    epochs: Annotated[int | None, typer.Option(help="Training epochs per thief model.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Training batch size.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak SGD learning rate.")] = None,
    clean_fraction: Annotated[
        float, typer.Option(help="Share of the clean training split the thief holds with labels.")
    ] = 0.2,
    adv_steps: Annotated[int, typer.Option(help="PGD steps per batch of the thief's adversarial training.")] = 5,
    seed: Annotated[int, typer.Option(help="First training seed (and the thief's draw of clean images).")] = 0,
    seeds: SeedsOption = None,
    psnr: Annotated[
        float | None,
        typer.Option(
            help="Fidelity-matched: encrypt --clean with --key at the eps whose mean PSNR (stored units) is this "
            "many dB (searched on a subset), into OUT/encrypted, instead of reading --encrypted."
        ),
    ] = None,
    scorecard: Annotated[
        bool, typer.Option("--scorecard", help="Also write the one-page scorecard (scorecard.md, scorecard.png).")
    ] = False,
    base_only: Annotated[
        str,
        typer.Option(
            "--base-only",
            help="Defences (names or row labels, comma-separated) trained for the base architecture only, to save "
            "time; their other cells read 'not run'.",
        ),
    ] = "",
    device: Annotated[str | None, typer.Option(help="cpu | cuda (default: CUDA if available).")] = None,
    compare: Annotated[
        Path | None,
        typer.Option(help="An earlier report.json (e.g. before hardening) to put beside this one."),
    ] = None,
    config: ConfigOption = None,
    preset: PresetOption = None,
    force: ForceOption = False,
) -> None:
    """How much does a determined thief recover? Train thief models defence by defence and report accuracy on
    original test images, beside the clean baseline, the undefended thief and the images' fidelity.

    Every cell is trained with --seeds seeds and scored after every epoch: peak (oracle early stop) and final
    accuracy, mean and 95% interval; a cell whose interval reaches the clean baseline's is "not protected".
    """
    from dataclasses import asdict

    from medenc.cli._common import fail
    from medenc.config import load_config, pick
    from medenc.security.defenses import parse_defences
    from medenc.security.evaluate import ThiefSettings, security_evaluate
    from medenc.security.report import (
        fidelity_line,
        fidelity_match_text,
        final_table,
        key_recovery_text,
        peak_value,
        security_table,
    )
    from medenc.security.volume import parse_volume_thieves, volume_rows

    if sum(x is not None for x in (encrypted, psnr, studies)) != 1:
        fail("give exactly one of --encrypted ENCRYPTED.csv, --psnr DB or --studies SHARED_DIR")
    settings = load_config(config, preset)
    chosen = parse_defences(defenses)
    volume_thieves_chosen = parse_volume_thieves(volume_thieves) if studies is not None else []
    recipe = recipe_from(settings, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device)
    thief = ThiefSettings(
        **asdict(recipe), clean_fraction=clean_fraction, adv_steps=adv_steps,
        seeds=int(pick(seeds, settings, "seeds", DEFAULT_SEEDS)),
    )  # fmt: skip
    archs = parse_archs(pick(arch, settings, "victims", "")) if (arch or settings.get("victims")) else []
    with progress_bars() as bars:
        overall = bars.add_task("thief models", total=None)
        started: list[str] = []

        def model_bars(description: str) -> Any:  # one call per thief model, as it starts
            started.append(description)
            bars.update(overall, completed=len(started) - 1, description=f"thief models (now: {description})")
            return bars

        report = security_evaluate(
            clean,
            encrypted,
            model,
            key,
            out,
            archs=archs,
            defences=chosen,
            settings=thief,
            key_recovery=key_recovery,
            force=force,
            progress_factory=model_bars,
            on_plan=lambda total: bars.update(overall, total=total),
            compare_with=compare,
            on_result=lambda row, a, r: typer.echo(
                f"{row} / {a}: "
                + (r.get("note") or f"original test {r['original_test']:.1%}")
                + (f" (peak {peak_value(r):.1%})" if "stats" in r else "")
                + (f", encrypted test {r['encrypted_test']:.1%}" if r.get("encrypted_test") is not None else ""),
                err=True,
            ),
            psnr=psnr,
            scorecard=scorecard,
            base_only=parse_archs(base_only),
            log=lambda line: typer.echo(line, err=True),
            studies=studies,
            extra_rows=volume_rows(volume_thieves_chosen),
        )
        bars.update(overall, completed=len(started), description="thief models")
    typer.echo("")
    typer.echo("Thief's peak accuracy on original test images (oracle early stop), mean [95% interval]:")
    typer.echo(security_table(report))
    typer.echo("\nLast epoch: original test images (encrypted test images in brackets):")
    typer.echo(final_table(report))
    typer.echo(f"\nfidelity: {fidelity_line(report)}")
    if report.get("volume"):
        from medenc.security.volume import volume_section

        typer.echo("\n" + "\n".join(volume_section(report)[2:]))
    if report.get("fidelity_match"):
        typer.echo(fidelity_match_text(report["fidelity_match"]))
    if scorecard:
        from medenc.security.scorecard import verdict

        typer.echo(f"scorecard: {out / 'scorecard.md'}, {out / 'scorecard.png'}: {verdict(report)['text']}")
    if report.get("key_recovery"):
        typer.echo("\nkey recovery:")
        typer.echo(key_recovery_text(report["key_recovery"]))
    if report.get("compared_with"):
        from medenc.security.report import comparison_table

        typer.echo(f"\ncompared with {compare}:")
        typer.echo(comparison_table(report))
    typer.echo(f"\nreport: {out / 'report.json'}, {out / 'report.md'}, {out / 'security_heatmap.png'}")
    exposed = [
        f"{label} / {a}" for label in report["rows"] for a in report["archs"]
        if report["table"][label].get(a, {}).get("verdict") == "not protected"
    ]  # fmt: skip
    if exposed:
        warn(f"not protected (peak interval reaches the clean baseline's): {', '.join(exposed)}")
