"""``medenc calibrate``: choose the encryption strength for your own data, with the trade-off measured."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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


@app.command("calibrate")
def calibrate_command(
    manifest: Annotated[Path, typer.Argument(help="Clean slice manifest with train and test splits.")],
    model: Annotated[Path, typer.Option("--model", help="Base classifier checkpoint from `medenc train`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder (report.json, report.md, tradeoff.png).")],
    eps: Annotated[
        str | None,
        typer.Option(
            "--eps",
            help="Grid of PGD radii on the model-input scale, comma-separated (default 0.5,1,2,4,6,8; "
            "none with --psnr).",
        ),
    ] = None,
    psnr: Annotated[
        float | None,
        typer.Option(
            help="Fidelity-matched: also measure the eps whose mean PSNR (stored units) is this many dB "
            "(searched on a subset) and calibrate at it."
        ),
    ] = None,
    combiner: Annotated[str | None, typer.Option(help="Combiner of the calibration key (default: hconcat).")] = None,
    victims: Annotated[
        str | None, typer.Option(help="Thief architectures, comma-separated (default: resnet18,densenet121,vgg11).")
    ] = None,
    thief_augment: Annotated[
        bool, typer.Option("--thief-augment/--no-thief-augment", help="Train victims with random flips and crops.")
    ] = True,
    target_orig_acc: Annotated[
        float, typer.Option(help="Worst victim's accuracy on original test slices must be at most this.")
    ] = 0.35,
    min_psnr: Annotated[float, typer.Option(help="Floor of the mean PSNR in dB (stored pixel units).")] = 40.0,
    min_ssim: Annotated[float, typer.Option(help="Floor of the mean SSIM.")] = 0.98,
    budget_minutes: Annotated[
        float | None, typer.Option(help="Time budget: subsample the training split (stratified) to fit it.")
    ] = None,
    key: Annotated[
        Path | None, typer.Option("--key", help="Use this key's correspondence and ratios (eps/step replaced).")
    ] = None,
    write_key: Annotated[
        Path | None, typer.Option("--write-key", help="Save a fresh secret key with the recommended settings.")
    ] = None,
    cache: Annotated[
        Path | None, typer.Option("--cache", help="Cache folder (default: medenc-calibrate-cache beside --out).")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="PGD steps (default from config, else 100).")] = None,
    step_ratio: Annotated[
        float | None, typer.Option(help="PGD step = eps x this (default: the config's step / eps, else 0.05).")
    ] = None,
    reference_eps: Annotated[float, typer.Option(help="Fixed setting to compare with (the paper's).")] = 2.0,
    epochs: Annotated[int | None, typer.Option(help="Victim training epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Victim training batch size.")] = None,
    lr: Annotated[float | None, typer.Option(help="Victim peak SGD learning rate.")] = None,
    size: Annotated[int | None, typer.Option(help="Victim input size (default: the base model's).")] = None,
    seed: Annotated[int, typer.Option(help="First victim training seed.")] = 0,
    seeds: SeedsOption = None,
    key_seed: Annotated[int, typer.Option(help="Seed of the calibration key (measuring only).")] = 0,
    device: Annotated[str | None, typer.Option(help="cpu | cuda (default: CUDA if available).")] = None,
    precision: Annotated[str, typer.Option(help="PGD precision: fp32 | bf16 | auto (bf16 on CUDA).")] = "auto",
    config: ConfigOption = None,
    preset: PresetOption = None,
    force: ForceOption = False,
) -> None:
    """Encrypt at every eps of a grid, train the thief's models, and recommend the smallest eps that protects.

    Measures thieves' accuracy on original slices (peak over the epochs and final, mean and 95% interval over
    --seeds seeds) against fidelity (PSNR, SSIM, Linf); --psnr adds the eps measured to give that PSNR.
    Caches all work.
    """
    from dataclasses import replace

    from medenc.calibrate.run import DEFAULT_GRID, CalibrationSettings, calibrate, parse_grid
    from medenc.config import load_config, pick
    from medenc.files import check_output
    from medenc.learn.checkpoint import load_base_model

    grid = parse_grid(eps) if eps is not None else (() if psnr is not None else DEFAULT_GRID)
    if write_key is not None:
        check_output(write_key, inputs=[manifest, model, key], force=force, what="key file")
    cfg = load_config(config, preset)
    base_size = load_base_model(model).preprocess.size[0]
    cfg_ratio = float(cfg["step"]) / float(cfg["eps"]) if "step" in cfg and "eps" in cfg else 0.05
    settings = CalibrationSettings(
        eps_grid=grid,
        victims=tuple(parse_archs(pick(victims, cfg, "victims", "resnet18,densenet121,vgg11"))),
        train=recipe_from(
            cfg,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            size=size,
            default_size=base_size,
            augment=thief_augment,
            seed=seed,
            device=device,
        ),
        combiner=str(pick(combiner, cfg, "combiner", "hconcat")),
        ratio=float(cfg.get("ratio", 0.5)),
        norm=str(cfg.get("norm", "l2")),
        step_ratio=float(step_ratio if step_ratio is not None else cfg_ratio),
        steps=int(pick(steps, cfg, "steps", 100)),
        key_seed=key_seed,
        target_orig_acc=target_orig_acc,
        min_psnr=min_psnr,
        min_ssim=min_ssim,
        budget_minutes=budget_minutes,
        reference_eps=reference_eps,
        device=device,
        precision=precision,
        seeds=int(pick(seeds, cfg, "seeds", DEFAULT_SEEDS)),
        psnr_target=psnr,
    )
    with progress_bars() as bars:
        report = calibrate(
            manifest,
            model,
            out,
            settings,
            key=key,
            cache_dir=cache,
            force=force,
            estimate=True,
            progress=bars,
            log=lambda line: bars.console.print(line) if bars.console.is_terminal else typer.echo(line, err=True),
        )
    from medenc.calibrate.report import comparison_text, results_table

    typer.echo("")
    typer.echo(results_table(report))
    typer.echo("")
    typer.echo(report["recommendation"]["message"])
    typer.echo(comparison_text(report))
    for line in report["warnings"]:
        warn(line)
    typer.echo(f"report: {out / 'report.md'}, {out / 'report.json'}, {out / 'tradeoff.png'}; cache: {report['cache']}")
    if write_key is not None:
        rec = report["recommendation"]["eps"]
        if rec is None:
            warn(f"no setting met the floors, so no key was written to {write_key}")
            raise typer.Exit(1)
        from medenc.core.key import EncryptionKey

        if key is not None:
            base = EncryptionKey.load(key)
            new = replace(base, pgd=settings.pgd_for(rec, base.pgd))
        else:  # a fresh correspondence from the OS's cryptographic source; only the settings come from calibration
            classes = report["classes"]
            new = EncryptionKey.generate(
                classes, settings.combiner, seed=None, ratio=settings.ratio, pgd=settings.pgd_for(rec)
            )
        new.save(write_key, force=force, inputs=[manifest, model, key])
        typer.echo(f"wrote key {write_key} (eps {rec:g}, fingerprint {new.fingerprint()}); keep it secret")
