"""``medenc evaluate``: the paper's protocol (Table 12): do models trained on encrypted data fail on originals?

For every architecture: train on the encrypted training split, test on the encrypted test split and
on the original test split; and, as the baseline, train and test on the originals. Results go to
``report.json`` (accuracies as fractions; medenc 0.1 named it ``results.json``), ``report.md`` (the
Table 12 and Table 2 layouts), and PNG charts (accuracy bars, confusion matrices on original test images).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from medenc.core.encrypt import resolve_device
from medenc.errors import InputError
from medenc.files import check_output, manifest_inputs
from medenc.learn.recipe import TrainRecipe
from medenc.learn.victims import confusion, train_and_score
from medenc.reporting import REPORT_NAME, header, write_json


@dataclass
class EvalData:
    """Model inputs and labels of the four splits the protocol needs."""

    classes: tuple[str, ...]
    clean_train: tuple[torch.Tensor, torch.Tensor]
    clean_test: tuple[torch.Tensor, torch.Tensor]
    enc_train: tuple[torch.Tensor, torch.Tensor]
    enc_test: tuple[torch.Tensor, torch.Tensor]


def load_eval_data(
    clean: str | Path, encrypted: str | Path, size: int, classes: Sequence[str] | None = None
) -> EvalData:
    """Read both manifests (same cases, same classes) as model inputs of ``size x size``."""
    from medenc.core.mapping import Preprocess
    from medenc.experiment.dataset import load_images, read_manifest

    clean_m = read_manifest(clean, classes=classes)
    enc_m = read_manifest(encrypted, classes=clean_m.classes)
    clean_cases = {(r.case_id, r.split, r.label) for r in clean_m.rows}
    enc_cases = {(r.case_id, r.split, r.label) for r in enc_m.rows}
    if clean_cases != enc_cases:
        raise InputError(
            f"the encrypted manifest does not hold the same cases, splits and labels as {clean} "
            f"({len(clean_cases ^ enc_cases)} differ)",
            encrypted,
        )
    prep = Preprocess(size=(size, size))

    def split(manifest: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        part = manifest.subset(name)
        if not part.rows:
            raise InputError(f"no {name} slices", manifest.path)
        return load_images(part, preprocess=prep), torch.tensor(part.labels())

    return EvalData(
        classes=clean_m.classes,
        clean_train=split(clean_m, "train"),
        clean_test=split(clean_m, "test"),
        enc_train=split(enc_m, "train"),
        enc_test=split(enc_m, "test"),
    )


def evaluate(
    clean: str | Path,
    encrypted: str | Path,
    archs: Sequence[str],
    out: str | Path,
    settings: TrainRecipe,
    *,
    classes: Sequence[str] | None = None,
    force: bool = False,
    progress_factory: Callable[[str], Any] | None = None,
    on_model: Callable[[int, int, str, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Run the protocol for every architecture and write the report folder (atomically).

    Args:
        clean: original slice manifest.
        encrypted: encrypted slice manifest (from ``medenc encrypt-dataset``).
        archs: architectures to train (``medenc.learn.models``).
        out: report folder.
        settings: training recipe shared by every model.
        classes: class order (default: sorted labels).
        force: replace an existing ``out``.
        progress_factory: given a description, returns a progress object for :func:`medenc.learn.train.fit`.
        on_model: called after each trained model with ``(done, total, what, accuracies)``.

    Returns:
        The ``report.json`` content.
    """
    from medenc.atomic import atomic_directory
    from medenc.experiment.report import write_report
    from medenc.learn.models import ARCHITECTURES

    unknown = [a for a in archs if a not in ARCHITECTURES]
    if unknown:
        raise InputError(f"unknown architecture(s) {', '.join(unknown)}; known: {', '.join(ARCHITECTURES)}")
    if not archs:
        raise InputError("give at least one architecture")
    out = Path(out)
    inputs = [*manifest_inputs(clean), *manifest_inputs(encrypted)]
    check_output(out, inputs=inputs, force=force, what="report folder")
    started = time.perf_counter()
    data = load_eval_data(clean, encrypted, settings.size, classes)
    k = len(data.classes)
    results: dict[str, Any] = {}
    total = 2 * len(archs)
    for i, arch in enumerate(archs):
        progress = progress_factory(f"{arch} on encrypted") if progress_factory else None
        enc_acc, enc_pred = train_and_score(
            arch,
            data.enc_train,
            {"encrypted_test": data.enc_test, "original_test": data.clean_test},
            k,
            settings,
            progress,
        )
        if on_model is not None:
            on_model(2 * i + 1, total, f"{arch} trained on encrypted", enc_acc)
        progress = progress_factory(f"{arch} on clean") if progress_factory else None
        clean_acc, clean_pred = train_and_score(
            arch, data.clean_train, {"clean_test": data.clean_test}, k, settings, progress
        )
        if on_model is not None:
            on_model(2 * i + 2, total, f"{arch} trained on clean", clean_acc)
        truth = data.clean_test[1]
        results[arch] = {
            "clean_test": clean_acc["clean_test"],
            "encrypted_test": enc_acc["encrypted_test"],
            "original_test": enc_acc["original_test"],
            "confusion_original_test": confusion(enc_pred["original_test"], truth, k),
            "confusion_clean_test": confusion(clean_pred["clean_test"], truth, k),
        }
    report = {
        **header("evaluate", started=started, device=resolve_device(settings.device)),
        "architectures": results,
        "classes": list(data.classes),
        "chance": 1.0 / k,
        "counts": {
            "train": int(data.clean_train[1].numel()),
            "test": int(data.clean_test[1].numel()),
            "test_per_class": torch.bincount(data.clean_test[1], minlength=k).tolist(),
        },
        "clean_manifest": str(clean),
        "encrypted_manifest": str(encrypted),
        "settings": asdict(settings),
    }
    with atomic_directory(out, force=force, inputs=inputs) as tmp:
        write_json(tmp / REPORT_NAME, report)
        write_report(report, tmp)
    return report
