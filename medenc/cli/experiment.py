"""The paper's experiment as commands: ``prepare``, ``encrypt-dataset``, ``evaluate`` and ``demo``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from medenc.cli._common import (
    DEFAULT_SEEDS,
    ConfigOption,
    ForceOption,
    PresetOption,
    SeedsOption,
    fail,
    model_done,
    parse_archs,
    print_encryption_summary,
    print_evaluation,
    progress_bars,
    recipe_from,
    warn,
)

app = typer.Typer()

@app.command("prepare")
def prepare(
    studies: Annotated[
        Path, typer.Argument(help="Studies manifest: case_id,label,split,image,mask (as `medenc synth` writes).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Data set folder to create.")],
    size: Annotated[
        int | None, typer.Option(help="Resample slices in-plane to SIZE x SIZE (default: keep the native grid).")
    ] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Prepare the good studies even if some fail.")] = False,
    force: ForceOption = False,
) -> None:
    """Take the largest-tumor axial slice of every study into a 2D NIfTI slice data set + manifest.csv."""
    from medenc.experiment.prepare import prepare_dataset, read_studies

    total = len(read_studies(studies))
    with progress_bars() as bars:
        task = bars.add_task("preparing studies", total=total)

        def on_case(case_id: str, reason: str | None) -> None:
            bars.update(task, advance=1)
            if reason is not None:
                warn(f"case {case_id}: {reason}")

        result = prepare_dataset(studies, out, size=size, skip_bad=skip_bad, force=force, on_case=on_case)
    if result.manifest is None:
        fail(f"no study could be prepared ({len(result.failed)} failed)")
    typer.echo(f"wrote {result.written} slices and {result.manifest}")
    if result.failed:
        typer.echo(f"{len(result.failed)} studies failed and were skipped: {', '.join(c for c, _ in result.failed)}")
        raise typer.Exit(1)


@app.command("encrypt-dataset")
def encrypt_dataset_command(
    manifest: Annotated[Path, typer.Argument(help="Slice manifest (case_id,label,split,image).")],
    model: Annotated[Path, typer.Option("--model", help="Base classifier checkpoint from `medenc train`.")],
    key: Annotated[Path, typer.Option("--key", help="Key file from `medenc keygen` (kept secret).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the encrypted slices and manifest.")],
    device: Annotated[str | None, typer.Option(help="cpu | cuda (default: CUDA if available).")] = None,
    batch_size: Annotated[int, typer.Option(help="PGD samples per batch (images x targets).")] = 64,
    precision: Annotated[str, typer.Option(help="fp32 | bf16 | auto (bf16 on CUDA).")] = "auto",
    extra_model: Annotated[
        list[Path] | None,
        typer.Option(
            "--extra-model",
            help="Hardening: another trained base model (same classes, --size and --window) attacked together "
            "with --model as an ensemble, so the perturbation carries to more architectures. Repeatable.",
        ),
    ] = None,
    force: ForceOption = False,
) -> None:
    """Encrypt every slice (train and test) with its true label; write slices, manifest.csv, and the summary beside."""
    import warnings

    from medenc.experiment.encrypt_dataset import encrypt_dataset

    with progress_bars() as bars, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        task = bars.add_task("encrypting slices", total=None)
        summary = encrypt_dataset(
            manifest,
            model,
            key,
            out,
            device=device,
            batch_size=batch_size,
            precision=precision,
            force=force,
            on_progress=lambda done, total: bars.update(task, completed=done, total=total),
            extra_models=extra_model or (),
        )
    for w in caught:
        warn(str(w.message))
    print_encryption_summary(summary, out)


@app.command("evaluate")
def evaluate_command(
    clean: Annotated[Path, typer.Option("--clean", help="Original slice manifest.")],
    encrypted: Annotated[Path, typer.Option("--encrypted", help="Encrypted slice manifest (encrypt-dataset).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder.")],
    arch: Annotated[
        str | None, typer.Option(help="Architectures, comma-separated (default from config: victims).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs per model.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Training batch size.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak SGD learning rate.")] = None,
    size: Annotated[int | None, typer.Option(help="Model input size (default: the base model's, or 128).")] = None,
    augment: Annotated[
        bool, typer.Option("--augment", help="Train with random flips and crops (a thief's recipe).")
    ] = False,
    seed: Annotated[int, typer.Option(help="First training seed.")] = 0,
    seeds: SeedsOption = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda (default: CUDA if available).")] = None,
    config: ConfigOption = None,
    preset: PresetOption = None,
    force: ForceOption = False,
) -> None:
    """Train each architecture on encrypted data; test on encrypted and original images (paper Table 12).

    Every model is trained with --seeds seeds and scored after every epoch: the table gives the final and the
    peak (oracle early stop) accuracy on original images with 95% intervals, and a verdict per architecture.
    """
    from medenc.config import load_config, pick
    from medenc.experiment.evaluate import evaluate

    settings = load_config(config, preset)
    archs = parse_archs(pick(arch, settings, "victims", "resnet18,densenet121,vgg11"))
    train_settings = recipe_from(
        settings, epochs=epochs, batch_size=batch_size, lr=lr, size=size, augment=augment, seed=seed, device=device
    )
    with progress_bars() as bars:
        report = evaluate(
            clean, encrypted, archs, out, train_settings, seeds=int(pick(seeds, settings, "seeds", DEFAULT_SEEDS)),
            force=force, progress_factory=lambda _: bars, on_model=model_done(time.perf_counter()),
        )
    print_evaluation(report, out)


