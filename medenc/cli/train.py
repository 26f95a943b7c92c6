"""``medenc train``: train a classifier on the train split of a slice manifest and save a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from medenc.cli._common import train_with_progress
from medenc.errors import InputError
from medenc.learn.recipe import DEFAULT_RECIPE

app = typer.Typer()

# option name -> (type, default); a --config YAML may set any of these, flags given override it
DEFAULTS: dict[str, tuple[type, Any]] = {
    "manifest": (str, None),
    "arch": (str, "resnet18"),
    "out": (str, None),
    "epochs": (int, DEFAULT_RECIPE.epochs),
    "batch-size": (int, DEFAULT_RECIPE.batch_size),
    "lr": (float, DEFAULT_RECIPE.lr),
    "size": (str, None),
    "window": (str, "percentile"),
    "window-low": (float, None),
    "window-high": (float, None),
    "classes": (str, None),
    "device": (str, "auto"),
    "seed": (int, 0),
    "augment": (bool, False),
    "force": (bool, False),
}


def load_config(path: Path | None) -> dict[str, Any]:
    """The ``medenc train`` options a YAML config sets (checked by :func:`medenc.config.load_config`)."""
    from medenc.config import load_config as read_config

    config: dict[str, Any] = {}
    for key, value in read_config(path).items():
        option = key.replace("_", "-")
        if option not in DEFAULTS:
            continue  # a shared config's setting for another command
        if key == "classes" and isinstance(value, list):
            value = ",".join(str(v) for v in value)
        if key == "size" and isinstance(value, (int, list)):
            value = "x".join(str(v) for v in value) if isinstance(value, list) else str(value)
        if DEFAULTS[option][0] is float and isinstance(value, int):
            value = float(value)
        config[option] = value
    return config


def parse_size(text: str) -> tuple[int, int]:
    """``"320"`` -> (320, 320); ``"320x256"`` or ``"320,256"`` -> (320, 256)."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError as error:
        raise InputError(f"--size must be N or HxW, got {text!r}") from error
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 1:
        raise InputError(f"--size must be N or HxW with positive sizes, got {text!r}")
    return values[0], values[1]


@app.command("train")
def train_command(
    manifest: Annotated[
        Path | None,
        typer.Argument(help="Slice manifest CSV (case_id,label,split,image).", show_default=False),
    ] = None,
    arch: Annotated[
        str | None,
        typer.Option(
            help="Architecture (resnet18, densenet121, vgg11, vgg19, "
            "preresnet20, preresnet110, smallcnn, ...). (default: resnet18)",
            show_default=False,
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Checkpoint to write (MODEL.pt).", show_default=False)] = None,
    epochs: Annotated[
        int | None, typer.Option(help=f"Training epochs. (default: {DEFAULT_RECIPE.epochs})", show_default=False)
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help=f"Batch size. (default: {DEFAULT_RECIPE.batch_size})", show_default=False)
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help=f"Peak SGD learning rate. (default: {DEFAULT_RECIPE.lr})", show_default=False)
    ] = None,
    size: Annotated[
        str | None,
        typer.Option(help="Model input size N or HxW. (default: the slices' size)", show_default=False),
    ] = None,
    window: Annotated[
        str | None,
        typer.Option(
            help="Intensity window rule: percentile, minmax or fixed. (default: percentile)",
            show_default=False,
        ),
    ] = None,
    window_low: Annotated[
        float | None,
        typer.Option(help="Window start (percentile, or value for fixed). (default: 0.5)", show_default=False),
    ] = None,
    window_high: Annotated[
        float | None,
        typer.Option(help="Window end (percentile, or value for fixed). (default: 99.5)", show_default=False),
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option(
            help="Class names in index order, comma-separated. (default: the manifest's labels, sorted)",
            show_default=False,
        ),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="auto, cpu, cuda or cuda:N. (default: auto)", show_default=False)
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed. (default: 0)", show_default=False)] = None,
    augment: Annotated[
        bool | None,
        typer.Option("--augment/--no-augment", help="Random flip + padded crop. (default: no)", show_default=False),
    ] = None,
    force: Annotated[
        bool | None, typer.Option("--force", help="Replace an existing --out.", show_default=False)
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="YAML file of option values (keys = option names); flags override it.", show_default=False),
    ] = None,
) -> None:
    """Train a classifier on the train split, report test accuracy, save a self-describing checkpoint.

    The checkpoint keeps architecture, classes, input size, intensity window, metrics, data fingerprint.
    """
    given = {
        "manifest": None if manifest is None else str(manifest),
        "arch": arch,
        "out": None if out is None else str(out),
        "epochs": epochs,
        "batch-size": batch_size,
        "lr": lr,
        "size": size,
        "window": window,
        "window-low": window_low,
        "window-high": window_high,
        "classes": classes,
        "device": device,
        "seed": seed,
        "augment": augment,
        "force": force,
    }
    settings = {key: default for key, (_, default) in DEFAULTS.items()}
    settings.update({k: v for k, v in load_config(config).items() if v is not None})
    settings.update({k: v for k, v in given.items() if v is not None})
    run_training(settings)


def run_training(settings: dict[str, Any]) -> None:
    """Turn ``settings`` (option name -> value) into a :class:`TrainJob`, train with progress bars, print."""
    from medenc.experiment.train import TrainJob

    if settings["manifest"] is None:
        raise InputError("no manifest given", tip="medenc train MANIFEST --arch ARCH --out MODEL.pt")
    if settings["out"] is None:
        raise InputError("no output checkpoint given", tip="pass --out MODEL.pt")
    classes = None
    if settings["classes"]:
        classes = tuple(c.strip() for c in settings["classes"].split(",") if c.strip())
    job = TrainJob(
        manifest=settings["manifest"],
        out=settings["out"],
        arch=settings["arch"],
        epochs=settings["epochs"],
        batch_size=settings["batch-size"],
        lr=settings["lr"],
        size=None if settings["size"] is None else parse_size(str(settings["size"])),
        window=settings["window"],
        window_low=settings["window-low"],
        window_high=settings["window-high"],
        classes=classes,
        device=settings["device"],
        seed=settings["seed"],
        augment=settings["augment"],
        force=settings["force"],
    )
    train_with_progress(job)


