"""The paper's experiment as commands: ``prepare``, ``encrypt-dataset``, ``evaluate`` and ``demo``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from medenc.cli._app import app, fail, warn

ConfigOption = Annotated[Path | None, typer.Option("--config", help="YAML file of option values; flags override it.")]
PresetOption = Annotated[
    str | None, typer.Option("--preset", help="Shipped config: 'paper' (the paper's MRI setting) or 'quick' (CPU).")
]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace an existing output.")]
LOW_HIT_RATE = 0.9  # encrypt-dataset warns below this share of perturbed copies on target


@contextlib.contextmanager
def progress_bars() -> Iterator[Any]:
    """A rich progress display on stderr (quiet when stderr is not a terminal)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
        yield progress


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
    from medenc.prepare import prepare_dataset, read_studies

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
    """Encrypt every slice (train and test) with its true label; write slices, manifest.csv and summary.json."""
    import warnings

    from medenc.encrypt_dataset import encrypt_dataset

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


def print_encryption_summary(summary: dict[str, Any], out: Path) -> None:
    """Print the fidelity and hit-rate lines of an encrypt-dataset summary."""
    fid = summary["fidelity_native_units"]
    hit = summary["base_model_hit_rate"]
    typer.echo(
        f"encrypted {summary['slices']} slices in {summary['seconds']:.1f} s on {summary['device']} "
        f"({summary['combiner']}, {summary['pgd']['norm']} eps {summary['pgd']['eps']}, "
        f"{summary['pgd']['steps']} steps; key {summary['key_fingerprint']})"
    )
    typer.echo(
        f"fidelity: PSNR mean {fid['psnr_db']['mean']:.1f} dB (min {fid['psnr_db']['min']:.1f}), "
        f"SSIM mean {fid['ssim']['mean']:.4f} (min {fid['ssim']['min']:.4f}), "
        f"Linf max {fid['linf']['max']:.1f} native units"
    )
    typer.echo(
        f"base model: perturbed copies on their target {hit['copies_on_target']:.1%}; "
        f"written images predicted as one of their targets {hit['written_image_predicted_as_a_target']:.1%}"
    )
    for member in summary.get("hardening", {}).get("ensemble", []):
        typer.echo(
            f"ensemble member {member['arch']} ({member['path']}): copies on target {member['copies_on_target']:.1%}"
        )
    typer.echo(f"wrote {out / 'manifest.csv'} and {out / 'summary.json'}")
    if hit["copies_on_target"] >= LOW_HIT_RATE:
        return
    if summary.get("hardening", {}).get("eot"):
        typer.echo(
            "note: with EOT the copies are optimised for randomly transformed views, so the hit rate on the "
            "untransformed copies understates them; measure the protection with `medenc security-eval`"
        )
    else:
        warn(
            f"only {hit['copies_on_target']:.0%} of the perturbed copies reach their target on the base model: "
            "the planted features are weak; raise the key's PGD steps (keygen --steps)"
        )


def parse_archs(text: str) -> list[str]:
    """``"resnet18,vgg11"`` -> ``["resnet18", "vgg11"]``."""
    return [a.strip() for a in str(text).split(",") if a.strip()]


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
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    device: Annotated[str | None, typer.Option(help="cpu | cuda (default: CUDA if available).")] = None,
    config: ConfigOption = None,
    preset: PresetOption = None,
    force: ForceOption = False,
) -> None:
    """Train each architecture on encrypted data; test on encrypted and original images (paper Table 12)."""
    from medenc.config import load_config, pick
    from medenc.evaluate import TrainSettings, evaluate

    settings = load_config(config, preset)
    archs = parse_archs(pick(arch, settings, "victims", "resnet18,densenet121,vgg11"))
    train_settings = TrainSettings(
        epochs=int(pick(epochs, settings, "victim_epochs", 30)),
        batch_size=int(pick(batch_size, settings, "batch_size", 64)),
        lr=float(pick(lr, settings, "victim_lr", 0.05)),
        size=int(pick(size, settings, "size", 128)),
        augment=augment,
        seed=seed,
        device=device,
    )
    with progress_bars() as bars:
        report = evaluate(clean, encrypted, archs, out, train_settings, force=force, progress_factory=lambda _: bars)
    print_evaluation(report, out)


def print_evaluation(report: dict[str, Any], out: Path) -> None:
    """Print the Table 12 layout and where the report is."""
    from medenc.report import table12

    typer.echo("")
    typer.echo(table12(report))
    typer.echo(
        f"\nchance level {report['chance']:.0%}; report: {out / 'results.json'}, {out / 'report.md'}, "
        f"{out / 'accuracy.png'}"
    )
    weak = [a for a, r in report["architectures"].items() if r["encrypted_test"] - r["original_test"] < 0.30]
    if weak:
        warn(
            f"models trained on encrypted data lost less than 30 points on original images for: {', '.join(weak)}; "
            "see docs/evaluation.md for why (an architecture other than the base model's, task too easy for "
            "robust features, eps too small, few PGD steps)"
        )
