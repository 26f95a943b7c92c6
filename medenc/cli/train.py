"""``medenc train``: train a classifier on the train split of a slice manifest and save a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from medenc.cli._app import app, warn
from medenc.config import SHARED_KEYS
from medenc.errors import InputError, OutputExistsError

# option name -> (type, default); a --config YAML may set any of these, flags given override it
DEFAULTS: dict[str, tuple[type, Any]] = {
    "manifest": (str, None),
    "arch": (str, "resnet18"),
    "out": (str, None),
    "epochs": (int, 30),
    "batch-size": (int, 64),
    "lr": (float, 0.05),
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
    """Read a YAML config whose keys are option names (``batch-size`` or ``batch_size``), type-checked."""
    if path is None:
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise InputError("config file not found", path=path) from error
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise InputError(f"cannot read YAML config ({type(error).__name__})", path=path) from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"config must be a mapping of option names to values, got {type(data).__name__}", path=path)
    config: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("_", "-")
        if key not in DEFAULTS and str(raw_key).replace("-", "_") in SHARED_KEYS:
            continue  # a shared config's setting for another command
        if key not in DEFAULTS:
            raise InputError(f"unknown config key {raw_key!r}; known: {', '.join(DEFAULTS)}", path=path)
        kind = DEFAULTS[key][0]
        if key == "classes" and isinstance(value, list):
            value = ",".join(str(v) for v in value)
        if key == "size" and isinstance(value, (int, list)):
            value = "x".join(str(v) for v in value) if isinstance(value, list) else str(value)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            raise InputError(f"config key {raw_key!r} must be {kind.__name__}, got {value!r}", path=path)
        config[key] = value
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
    epochs: Annotated[int | None, typer.Option(help="Training epochs. (default: 30)", show_default=False)] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size. (default: 64)", show_default=False)] = None,
    lr: Annotated[
        float | None, typer.Option(help="Peak SGD learning rate. (default: 0.05)", show_default=False)
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
    """Validate ``settings`` (option name -> value), train, evaluate and write the checkpoint."""
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from medenc import __version__
    from medenc.dataset import load_images, read_manifest
    from medenc.models import ARCHITECTURES, build_model, count_parameters
    from medenc.preprocess import Preprocess
    from medenc.train import (
        ModelInfo,
        accuracy,
        fit,
        predict,
        resolve_device,
        save_checkpoint,
        seed_everything,
    )

    # ---- validate everything before any work
    if settings["manifest"] is None:
        raise InputError("no manifest given", tip="medenc train MANIFEST --arch ARCH --out MODEL.pt")
    if settings["out"] is None:
        raise InputError("no output checkpoint given", tip="pass --out MODEL.pt")
    out = Path(settings["out"])
    if out.exists() and not settings["force"]:
        raise OutputExistsError(out)
    arch = settings["arch"]
    if arch not in ARCHITECTURES:
        raise InputError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    if settings["epochs"] < 1 or settings["batch-size"] < 1 or not settings["lr"] > 0:
        raise InputError("--epochs and --batch-size must be >= 1 and --lr > 0")
    dev = resolve_device(settings["device"])
    class_names = None
    if settings["classes"]:
        class_names = [c.strip() for c in settings["classes"].split(",") if c.strip()]
    data = read_manifest(settings["manifest"], classes=class_names)
    train_rows, test_rows, val_rows = data.subset("train"), data.subset("test"), data.subset("val")
    if len(train_rows) == 0:
        raise InputError("manifest has no rows with split 'train'", path=data.path)
    if len(data.classes) < 2:
        raise InputError(f"need at least 2 classes, the manifest has {list(data.classes)}", path=data.path)
    missing = sorted(set(data.classes) - {r.label for r in train_rows.rows})
    if missing:
        warn(f"no training slices of class(es) {', '.join(missing)}")
    if settings["size"] is not None:
        model_size = parse_size(settings["size"])
    else:
        from medenc.dataset import load_slice

        model_size = tuple(load_slice(train_rows.rows[0].path).shape)
    if min(model_size) < ARCHITECTURES[arch].min_size:
        raise InputError(
            f"{arch} needs inputs of at least {ARCHITECTURES[arch].min_size} px, size is {model_size}",
            tip="pass a larger --size",
        )
    window_args = {k: settings[f"window-{k}"] for k in ("low", "high") if settings[f"window-{k}"] is not None}
    if settings["window"] == "fixed" and len(window_args) != 2:
        raise InputError("--window fixed needs --window-low and --window-high (native intensity values)")
    try:
        preprocess = Preprocess(size=model_size, rule=settings["window"], **window_args)
    except ValueError as error:
        raise InputError(f"bad model-input settings: {error}") from error

    # ---- load, train, evaluate
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
        x_train = load_images(train_rows, preprocess=preprocess, progress=progress)
        x_test = load_images(test_rows, preprocess=preprocess, progress=progress) if len(test_rows) else None
        x_val = load_images(val_rows, preprocess=preprocess, progress=progress) if len(val_rows) else None
        y_train, y_test = torch.tensor(train_rows.labels()), torch.tensor(test_rows.labels())
        fingerprint = data.fingerprint()
        seed_everything(settings["seed"])
        model = build_model(arch, 1, len(data.classes))
        history = fit(
            model,
            x_train,
            y_train,
            epochs=settings["epochs"],
            batch_size=settings["batch-size"],
            lr=settings["lr"],
            device=dev,
            seed=settings["seed"],
            augment=settings["augment"],
            progress=progress,
            val=None if x_val is None else (x_val, torch.tensor(val_rows.labels())),
        )
    metrics: dict[str, Any] = {
        "n_train": len(train_rows),
        "n_test": len(test_rows),
        "final_loss": history[-1]["loss"],
        "train_seconds": sum(r["seconds"] for r in history),
        "train_accuracy": accuracy(predict(model, x_train, batch_size=settings["batch-size"]), y_train),
    }
    if x_test is not None:
        pred = predict(model, x_test, batch_size=settings["batch-size"]).argmax(1)
        metrics.update(_test_metrics(pred, y_test, data.classes))
    info = ModelInfo(
        arch=arch,
        classes=data.classes,
        in_channels=1,
        preprocess=preprocess.to_dict(),
        metrics=metrics,
        data_fingerprint=fingerprint,
        medenc_version=__version__,
        seed=settings["seed"],
        training={
            "epochs": settings["epochs"],
            "batch_size": settings["batch-size"],
            "lr": settings["lr"],
            "augment": settings["augment"],
            "device": str(dev),
            "torch_version": str(torch.__version__),
            "manifest": str(Path(settings["manifest"]).name),
            "history": history,
        },
    )
    save_checkpoint(out, model, info, force=True)

    typer.echo(
        f"trained {arch} ({count_parameters(model) / 1e6:.2f} M parameters) on {len(train_rows)} slices, "
        f"{len(data.classes)} classes, {preprocess.size[0]}x{preprocess.size[1]}, {settings['epochs']} "
        f"epochs in {metrics['train_seconds']:.1f} s on {dev}"
    )
    typer.echo(f"train accuracy {metrics['train_accuracy']:.3f}")
    if x_test is not None:
        per_class = ", ".join(f"{k} {v:.2f}" for k, v in metrics["test_per_class_accuracy"].items())
        typer.echo(f"test accuracy {metrics['test_accuracy']:.3f} on {len(test_rows)} slices ({per_class})")
    else:
        warn("manifest has no test split: no test accuracy")
    typer.echo(f"wrote {out}")


def _test_metrics(pred: Any, y: Any, classes: tuple[str, ...]) -> dict[str, Any]:
    k = len(classes)
    confusion = [[0] * k for _ in range(k)]
    for t, p in zip(y.tolist(), pred.tolist(), strict=True):
        confusion[t][p] += 1
    per_class = {
        name: (confusion[i][i] / sum(confusion[i]) if sum(confusion[i]) else float("nan"))
        for i, name in enumerate(classes)
    }
    return {
        "test_accuracy": float((pred == y).float().mean()),
        "test_per_class_accuracy": per_class,
        "test_confusion": confusion,
    }
