"""What the command modules share: one-line errors and warnings, option types, progress, printing.

Heavy imports (torch, MONAI, pydicom) stay inside the functions so ``medenc --help`` is quick.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from medenc.errors import MedencError

ConfigOption = Annotated[Path | None, typer.Option("--config", help="YAML file of option values; flags override it.")]
PresetOption = Annotated[
    str | None,
    typer.Option("--preset", help="Shipped config: 'paper' (the paper's MRI setting), 'medium' or 'quick' (CPU)."),
]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace an existing output.")]
#: training seeds per evaluated model when neither --seeds nor the config's ``seeds`` says
DEFAULT_SEEDS = 3
SeedsOption = Annotated[
    int | None,
    typer.Option(
        "--seeds",
        help=f"Training seeds per model (--seed, +1, ...): mean and 95% interval per cell (default from config, "
        f"else {DEFAULT_SEEDS}).",
    ),
]
LOW_HIT_RATE = 0.9  # encrypt-dataset warns below this share of perturbed copies on target


def one_line(text: str) -> str:
    """``text`` as one printable line: newlines and control characters (e.g. from a binary file) escaped."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text))


def report_error(error: BaseException) -> NoReturn:
    """Print ``medenc: error: <message>`` as one line on stderr and exit with status 2."""
    typer.echo(f"medenc: error: {one_line(str(error))}", err=True)
    raise typer.Exit(2)


def path_problem(path: str | Path, what: str, kind: str | None = None) -> str | None:
    """What is wrong with an input path, in the words every command uses (``<what> not found``, ...), or None.

    The error then reads ``medenc: error: PATH: <problem>``, like the library's ``InputError(problem, path)``.

    Args:
        path: the input path.
        what: how the message names it (``"--clean"``, ``"manifest"``).
        kind: ``"file"``, ``"folder"`` or None (either).
    """
    import os

    path = Path(path)
    if not path.exists():
        return f"{what} {kind or 'path'} not found" if what.startswith("-") or what.isupper() else f"{what} not found"
    if kind == "file" and path.is_dir():
        return f"{what} is a folder, not a file"
    if kind == "folder" and not path.is_dir():
        return f"{what} is a file, not a folder"
    if not os.access(path, os.R_OK):
        return f"{what} cannot be read (permission denied)"
    return None


def fail(message: str) -> NoReturn:
    """Print ``message`` as a one-line user error on stderr and exit with status 2."""
    report_error(MedencError(message))


def warn(message: str) -> None:
    """Print a one-line warning on stderr."""
    print(f"medenc: warning: {message}", file=sys.stderr)


@contextlib.contextmanager
def progress_bars() -> Iterator[Any]:
    """The progress display every long step uses: on stderr, so stdout carries only results.

    Each bar shows its step, done/total, elapsed time and time left. It is drawn only when stderr is
    a terminal (``medenc synth ... > out.txt`` still shows it); logs redirected to a file stay free of it.
    """
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


def model_done(started: float) -> Callable[[int, int, str, dict[str, float]], None]:
    """An ``on_model`` callback: one line per trained model on stderr (elapsed, accuracies, time left).

    The time left is the mean time per model so far times the models still to train.
    """
    import time

    def say(done: int, total: int, what: str, accuracies: dict[str, float]) -> None:
        elapsed = time.perf_counter() - started
        scores = ", ".join(f"{name.replace('_', ' ')} {value:.1%}" for name, value in accuracies.items())
        left = f"; about {eta_text(elapsed / done * (total - done))} left" if 0 < done < total else ""
        typer.echo(f"[{elapsed:.0f} s] model {done}/{total}: {what}: {scores}{left}", err=True)

    return say


def eta_text(seconds: float) -> str:
    """``75`` -> ``"1 min 15 s"``, ``7300`` -> ``"2 h 01 min"`` (an estimate's precision)."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def parse_archs(text: str) -> list[str]:
    """``"resnet18,vgg11"`` -> ``["resnet18", "vgg11"]``."""
    return [a.strip() for a in str(text).split(",") if a.strip()]


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
    from medenc.experiment.encrypt_dataset import summary_path

    typer.echo(f"wrote {out / 'manifest.csv'} (share the folder {out}/)")
    typer.echo(f"wrote {summary_path(out)} (in-house: names the key and its settings; never share it)")
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


def print_evaluation(report: dict[str, Any], out: Path) -> None:
    """Print the Table 12 layout, the fidelity beside it, and where the report is."""
    from medenc.experiment.report import fidelity_text, protocol_text, table12

    typer.echo("")
    typer.echo(table12(report))
    typer.echo(f"\nfidelity of the encrypted images: {fidelity_text(report)}")
    typer.echo(protocol_text(report))
    typer.echo(
        f"chance level {report['chance']:.0%}; report: {out / 'report.json'}, {out / 'report.md'}, "
        f"{out / 'accuracy.png'}"
    )
    exposed = [a for a, r in report["architectures"].items() if r.get("protected") is False]
    if exposed:
        warn(
            f"not protected (the thief's peak accuracy on original images reaches the clean baseline's interval): "
            f"{', '.join(exposed)}; see docs/evaluation.md"
        )
    weak = [
        a for a, r in report["architectures"].items()
        if a not in exposed and r["encrypted_test"] - r["original_test"] < 0.30
    ]  # fmt: skip
    if weak:
        warn(
            f"models trained on encrypted data lost less than 30 points on original images for: {', '.join(weak)}; "
            "see docs/evaluation.md for why (an architecture other than the base model's, task too easy for "
            "robust features, eps too small, few PGD steps)"
        )


def train_with_progress(job: Any) -> Any:
    """Run :func:`medenc.experiment.train.train_from_manifest` under rich progress bars and print its outcome."""
    from medenc.experiment.train import train_from_manifest

    with progress_bars() as progress:
        outcome = train_from_manifest(job, progress=progress, on_warning=warn)
    metrics = outcome.metrics
    typer.echo(
        f"trained {outcome.arch} ({outcome.parameters / 1e6:.2f} M parameters) on {metrics['n_train']} slices, "
        f"{len(outcome.classes)} classes, {outcome.size[0]}x{outcome.size[1]}, {job.epochs} "
        f"epochs in {metrics['train_seconds']:.1f} s on {outcome.device}"
    )
    typer.echo(f"train accuracy {metrics['train_accuracy']:.3f}")
    if "test_accuracy" in metrics:
        per_class = ", ".join(f"{k} {v:.2f}" for k, v in metrics["test_per_class_accuracy"].items())
        typer.echo(f"test accuracy {metrics['test_accuracy']:.3f} on {metrics['n_test']} slices ({per_class})")
    typer.echo(f"wrote {outcome.checkpoint}")
    return outcome


def recipe_from(
    config: dict[str, Any],
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    size: int | None = None,
    default_size: int | None = None,
    augment: bool = False,
    seed: int = 0,
    device: str | None = None,
    victim: bool = True,
) -> Any:
    """The :class:`~medenc.learn.recipe.TrainRecipe` of flags over a config over the recipe's defaults.

    ``victim`` reads the thieves' keys (``victim_epochs``, ``victim_lr``); otherwise the base model's.
    """
    from medenc.config import pick
    from medenc.learn.recipe import DEFAULT_RECIPE, TrainRecipe

    prefix = "victim_" if victim else ""
    return TrainRecipe(
        epochs=int(pick(epochs, config, f"{prefix}epochs", DEFAULT_RECIPE.epochs)),
        batch_size=int(pick(batch_size, config, "batch_size", DEFAULT_RECIPE.batch_size)),
        lr=float(pick(lr, config, f"{prefix}lr", DEFAULT_RECIPE.lr)),
        size=int(pick(size, config, "size", default_size or DEFAULT_RECIPE.size)),
        augment=augment,
        seed=seed,
        device=device,
    )
