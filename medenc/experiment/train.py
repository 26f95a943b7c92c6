"""Train a classifier on the train split of a slice manifest and save a self-describing checkpoint.

The library side of ``medenc train`` (and step 3 of ``medenc demo``): everything is validated before
any work, then the slices are loaded, the model trained, tested on the test split and saved with its
architecture, classes, model-input mapping, metrics and the data's fingerprint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medenc.errors import InputError
from medenc.files import check_output
from medenc.learn.recipe import DEFAULT_RECIPE


@dataclass(frozen=True)
class TrainJob:
    """What to train, on what, and how (the options of ``medenc train``)."""

    manifest: str | Path
    out: str | Path
    arch: str = "resnet18"
    epochs: int = DEFAULT_RECIPE.epochs
    batch_size: int = DEFAULT_RECIPE.batch_size
    lr: float = DEFAULT_RECIPE.lr
    size: tuple[int, int] | None = None  # model input H, W; None: the slices' own size
    window: str = "percentile"
    window_low: float | None = None
    window_high: float | None = None
    classes: tuple[str, ...] | None = None  # index order; None: the manifest's labels, sorted
    device: str | None = "auto"
    seed: int = 0
    augment: bool = False
    force: bool = False


@dataclass
class TrainOutcome:
    """What :func:`train_from_manifest` did."""

    checkpoint: Path
    arch: str
    parameters: int
    classes: tuple[str, ...]
    size: tuple[int, int]
    device: str
    metrics: dict[str, Any]


def train_from_manifest(
    job: TrainJob,
    *,
    progress: Any = None,
    on_warning: Callable[[str], None] | None = None,
) -> TrainOutcome:
    """Validate ``job``, train, test and write the checkpoint (atomically).

    Args:
        job: the training request.
        progress: a rich ``Progress`` for loading and epoch bars (optional).
        on_warning: called with one-line warnings (e.g. a class without training slices).

    Returns:
        Where the checkpoint went and the metrics it holds.

    Raises:
        InputError: bad settings or manifest, before anything is written.
        OutputExistsError: ``job.out`` exists and ``job.force`` is false.
    """
    import torch

    from medenc import __version__
    from medenc.core.mapping import Preprocess
    from medenc.experiment.dataset import load_images, load_slice, read_manifest
    from medenc.learn.models import ARCHITECTURES, build_model, count_parameters
    from medenc.learn.train import ModelInfo, accuracy, fit, predict, resolve_device, save_checkpoint, seed_everything

    warn = on_warning or (lambda _message: None)
    # ---- validate everything before any work
    out = check_output(job.out, inputs=[job.manifest], force=job.force, what="checkpoint")
    if job.arch not in ARCHITECTURES:
        raise InputError(f"unknown architecture {job.arch!r}; known: {', '.join(ARCHITECTURES)}")
    if job.epochs < 1 or job.batch_size < 1 or not job.lr > 0:
        raise InputError("--epochs and --batch-size must be >= 1 and --lr > 0")
    device = resolve_device(job.device)
    data = read_manifest(job.manifest, classes=list(job.classes) if job.classes else None)
    train_rows, test_rows, val_rows = data.subset("train"), data.subset("test"), data.subset("val")
    if len(train_rows) == 0:
        raise InputError("manifest has no rows with split 'train'", path=data.path)
    if len(data.classes) < 2:
        raise InputError(f"need at least 2 classes, the manifest has {list(data.classes)}", path=data.path)
    missing = sorted(set(data.classes) - {r.label for r in train_rows.rows})
    if missing:
        warn(f"no training slices of class(es) {', '.join(missing)}")
    model_size = tuple(job.size) if job.size is not None else tuple(load_slice(train_rows.rows[0].path).shape)
    if min(model_size) < ARCHITECTURES[job.arch].min_size:
        raise InputError(
            f"{job.arch} needs inputs of at least {ARCHITECTURES[job.arch].min_size} px, size is {model_size}",
            tip="pass a larger --size",
        )
    window = {"low": job.window_low, "high": job.window_high}
    window_args = {name: value for name, value in window.items() if value is not None}
    if job.window == "fixed" and len(window_args) != 2:
        raise InputError("--window fixed needs --window-low and --window-high (native intensity values)")
    try:
        preprocess = Preprocess(size=model_size, rule=job.window, **window_args)
    except ValueError as error:
        raise InputError(f"bad model-input settings: {error}") from error

    # ---- load, train, test
    x_train = load_images(train_rows, preprocess=preprocess, progress=progress)
    x_test = load_images(test_rows, preprocess=preprocess, progress=progress) if len(test_rows) else None
    x_val = load_images(val_rows, preprocess=preprocess, progress=progress) if len(val_rows) else None
    y_train, y_test = torch.tensor(train_rows.labels()), torch.tensor(test_rows.labels())
    seed_everything(job.seed)
    model = build_model(job.arch, 1, len(data.classes))
    history = fit(
        model,
        x_train,
        y_train,
        epochs=job.epochs,
        batch_size=job.batch_size,
        lr=job.lr,
        device=device,
        seed=job.seed,
        augment=job.augment,
        progress=progress,
        val=None if x_val is None else (x_val, torch.tensor(val_rows.labels())),
    )
    metrics: dict[str, Any] = {
        "n_train": len(train_rows),
        "n_test": len(test_rows),
        "final_loss": history[-1]["loss"],
        "train_seconds": sum(r["seconds"] for r in history),
        "train_accuracy": accuracy(predict(model, x_train, batch_size=job.batch_size), y_train),
    }
    if x_test is not None:
        pred = predict(model, x_test, batch_size=job.batch_size).argmax(1)
        metrics.update(test_metrics(pred, y_test, data.classes))
    else:
        warn("manifest has no test split: no test accuracy")
    info = ModelInfo(
        arch=job.arch,
        classes=data.classes,
        in_channels=1,
        preprocess=preprocess.to_dict(),
        metrics=metrics,
        data_fingerprint=data.fingerprint(),
        medenc_version=__version__,
        seed=job.seed,
        training={
            "epochs": job.epochs,
            "batch_size": job.batch_size,
            "lr": job.lr,
            "augment": job.augment,
            "device": str(device),
            "torch_version": str(torch.__version__),
            "manifest": str(Path(job.manifest).name),
            "history": history,
        },
    )
    save_checkpoint(out, model, info, force=True)
    return TrainOutcome(out, job.arch, count_parameters(model), data.classes, preprocess.size, str(device), metrics)


def test_metrics(pred: Any, truth: Any, classes: tuple[str, ...]) -> dict[str, Any]:
    """Accuracy, per-class accuracy and confusion matrix (rows = true class) of predicted class indices."""
    k = len(classes)
    confusion = [[0] * k for _ in range(k)]
    for t, p in zip(truth.tolist(), pred.tolist(), strict=True):
        confusion[t][p] += 1
    per_class = {
        name: (confusion[i][i] / sum(confusion[i]) if sum(confusion[i]) else float("nan"))
        for i, name in enumerate(classes)
    }
    return {
        "test_accuracy": float((pred == truth).float().mean()),
        "test_per_class_accuracy": per_class,
        "test_confusion": confusion,
    }


test_metrics.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite its name
