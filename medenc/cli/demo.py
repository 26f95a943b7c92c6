"""``medenc demo``: the whole experiment on the synthetic data set, end to end."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from medenc.cli._common import (
    DEFAULT_SEEDS,
    model_done,
    parse_archs,
    print_encryption_summary,
    print_evaluation,
    progress_bars,
    recipe_from,
)

app = typer.Typer()


@app.command("demo")
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for everything the demo makes.")] = Path(
        "medenc-demo"
    ),
    preset: Annotated[
        str | None,
        typer.Option(
            help="quick (CPU-sized, the default without CUDA), medium (CPU, 128 px, 1,005 cases: hours) or paper "
            "(the paper's setting; for a GPU)."
        ),
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML file overriding the preset.")] = None,
    cases: Annotated[int | None, typer.Option(help="Synthetic cases (default from the preset).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the data, the training and the key.")] = 0,
    device: Annotated[str | None, typer.Option(help="cpu | cuda (default: CUDA if available).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing demo folder.")] = False,
) -> None:
    """Synthesize MRI studies, prepare slices, train a base model, draw a key, encrypt, and evaluate.

    Prints the paper's Table 12 for the synthetic data: for each architecture, accuracy of a model
    trained on encrypted data on encrypted vs original test images, beside the clean baseline.
    """
    import torch

    from medenc.cli._common import train_with_progress
    from medenc.config import load_config
    from medenc.core.key import EncryptionKey, PGDSettings
    from medenc.errors import OutputExistsError
    from medenc.experiment.encrypt_dataset import encrypt_dataset
    from medenc.experiment.evaluate import evaluate
    from medenc.experiment.prepare import prepare_dataset
    from medenc.experiment.train import TrainJob
    from medenc.synth.generate import write_dataset

    started = time.perf_counter()
    if preset is None:
        preset = "paper" if torch.cuda.is_available() and device != "cpu" else "quick"
    settings = {**load_config(preset=preset), **load_config(config)}  # the file's keys override the preset's
    if out.exists() and any(out.iterdir()) and not force:
        raise OutputExistsError(out)
    size = int(settings["size"])
    n_cases = int(cases or settings["cases"])
    source = f"{preset} + {config}" if config else preset
    typer.echo(f"medenc demo: preset {source}, {n_cases} synthetic cases, {size}x{size}, into {out}/")

    # 1. synthetic studies (DICOM series + tumor masks)
    with progress_bars() as bars:
        task = bars.add_task("1/6 synthesizing studies", total=n_cases)
        studies = write_dataset(
            out / "studies",
            n_cases,
            seed=seed,
            size=size,
            fmt="dicom",
            difficulty=settings.get("difficulty", "paper"),
            progress=lambda done, total: bars.update(task, completed=done),
            force=True,
        )
        # 2. largest-tumor slices
        task = bars.add_task("2/6 preparing slices", total=n_cases)
        prepared = prepare_dataset(
            studies, out / "dataset", force=True, on_case=lambda *_: bars.update(task, advance=1)
        )
    typer.echo(f"[{time.perf_counter() - started:.0f} s] data: {prepared.written} slices in {prepared.manifest}")

    # 3. base classifier
    typer.echo(f"3/6 training the base classifier ({settings['arch']})", err=True)
    train_with_progress(
        TrainJob(
            manifest=prepared.manifest,
            out=out / "base-model.pt",
            arch=settings["arch"],
            epochs=int(settings["epochs"]),
            batch_size=int(settings["batch_size"]),
            lr=float(settings["lr"]),
            size=(size, size),
            device=device or "auto",
            seed=seed,
            force=True,
        )
    )

    # 4. secret key (seeded here so the demo is reproducible; real keys use cryptographic randomness)
    from medenc.learn.checkpoint import load_checkpoint

    _, info = load_checkpoint(out / "base-model.pt")
    pgd = PGDSettings(
        norm=settings["norm"], eps=float(settings["eps"]), step=float(settings["step"]), steps=int(settings["steps"])
    )
    key = EncryptionKey.generate(info.classes, settings["combiner"], seed=seed, ratio=float(settings["ratio"]), pgd=pgd)
    key.save(out / "key.json", force=True)
    typer.echo(f"4/6 drew key {out / 'key.json'} (fingerprint {key.fingerprint()}, {key.combiner})")

    # 5. encrypt every slice with its true label
    with progress_bars() as bars:
        task = bars.add_task("5/6 encrypting slices", total=prepared.written)
        summary = encrypt_dataset(
            prepared.manifest,
            out / "base-model.pt",
            out / "key.json",
            out / "encrypted",
            device=device,
            force=True,
            on_progress=lambda done, total: bars.update(task, completed=done),
        )
    print_encryption_summary(summary, out / "encrypted")

    # 6. the paper's protocol
    archs = parse_archs(settings["victims"])
    typer.echo(f"6/6 evaluating: training {', '.join(archs)} on encrypted and on clean slices", err=True)
    train_settings = recipe_from(settings, size=size, seed=seed, device=device)
    with progress_bars() as bars:
        report = evaluate(
            prepared.manifest,
            out / "encrypted" / "manifest.csv",
            archs,
            out / "report",
            train_settings,
            seeds=int(settings.get("seeds", DEFAULT_SEEDS)),
            classes=info.classes,
            force=True,
            progress_factory=lambda _: bars,
            on_model=model_done(started),
        )
    print_evaluation(report, out / "report")
    typer.echo(f"demo finished in {time.perf_counter() - started:.0f} s")
