"""``medenc evaluate``: the paper's protocol (Table 12): do models trained on encrypted data fail on originals?

For every architecture: train on the encrypted training split, test on the encrypted test split and
on the original test split; and, as the baseline, train and test on the originals. Each model is trained
with several seeds and scored on the original test split after every epoch, so the report gives the final
and the peak (oracle early stop) accuracy with a 95% interval, and marks an architecture "not protected"
when its peak interval reaches the clean baseline's. Results go to
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
from medenc.learn.victims import confusion, seed_recipes, summarize_runs, train_and_score
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
    seeds: int = 1,
    classes: Sequence[str] | None = None,
    force: bool = False,
    progress_factory: Callable[[str], Any] | None = None,
    on_model: Callable[[int, int, str, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Run the protocol for every architecture and write the report folder (atomically).

    Every model is trained with ``seeds`` training seeds (``settings.seed``, ``+1``, ...) and scored on the
    original test images after every epoch, so each cell has a final and a peak (oracle early stop)
    accuracy with a 95% interval (:mod:`medenc.learn.intervals`).

    Args:
        clean: original slice manifest.
        encrypted: encrypted slice manifest (from ``medenc encrypt-dataset``).
        archs: architectures to train (``medenc.learn.models``).
        out: report folder.
        settings: training recipe shared by every model.
        seeds: training seeds per model.
        classes: class order (default: sorted labels).
        force: replace an existing ``out``.
        progress_factory: given a description, returns a progress object for :func:`medenc.learn.train.fit`.
        on_model: called after each trained model with ``(done, total, what, accuracies)``.

    Returns:
        The ``report.json`` content.
    """
    from medenc.atomic import atomic_directory
    from medenc.experiment.report import write_report
    from medenc.learn.intervals import not_protected
    from medenc.learn.models import ARCHITECTURES

    unknown = [a for a in archs if a not in ARCHITECTURES]
    if unknown:
        raise InputError(f"unknown architecture(s) {', '.join(unknown)}; known: {', '.join(ARCHITECTURES)}")
    if not archs:
        raise InputError("give at least one architecture")
    recipes = seed_recipes(settings, seeds)
    out = Path(out)
    inputs = [*manifest_inputs(clean), *manifest_inputs(encrypted)]
    check_output(out, inputs=inputs, force=force, what="report folder")
    started = time.perf_counter()
    data = load_eval_data(clean, encrypted, settings.size, classes)
    k = len(data.classes)
    truth = data.clean_test[1]
    n_test = int(truth.numel())
    sizes = {"clean_test": n_test, "original_test": n_test, "encrypted_test": int(data.enc_test[1].numel())}
    results: dict[str, Any] = {}
    total, done = 2 * len(archs) * len(recipes), 0
    for arch in archs:
        enc_runs, clean_runs = [], []
        for recipe in recipes:
            progress = progress_factory(f"{arch} on encrypted") if progress_factory else None
            tests = {"encrypted_test": data.enc_test, "original_test": data.clean_test}
            enc_runs.append(train_and_score(arch, data.enc_train, tests, k, recipe, progress, watch=("original_test",)))
            done += 1
            if on_model is not None:
                on_model(done, total, f"{arch} trained on encrypted (seed {recipe.seed})", _scores(enc_runs[-1]))
            progress = progress_factory(f"{arch} on clean") if progress_factory else None
            clean_runs.append(
                train_and_score(arch, data.clean_train, {"clean_test": data.clean_test}, k, recipe, progress)
            )
            done += 1
            if on_model is not None:
                on_model(done, total, f"{arch} trained on clean (seed {recipe.seed})", _scores(clean_runs[-1]))
        enc_cell, clean_cell = summarize_runs(enc_runs, sizes), summarize_runs(clean_runs, sizes)
        stats = {"clean_test": clean_cell["stats"]["clean_test"], **enc_cell["stats"]}
        results[arch] = {
            "clean_test": clean_cell["clean_test"],
            "encrypted_test": enc_cell["encrypted_test"],
            "original_test": enc_cell["original_test"],
            "stats": stats,
            "protected": not not_protected(stats["original_test"]["peak"], stats["clean_test"]["peak"]),
            "runs": {"encrypted": enc_cell["runs"], "clean": clean_cell["runs"]},
            "confusion_original_test": _summed_confusion([r.predictions["original_test"] for r in enc_runs], truth, k),
            "confusion_clean_test": _summed_confusion([r.predictions["clean_test"] for r in clean_runs], truth, k),
        }
    report = {
        **header("evaluate", started=started, device=resolve_device(settings.device)),
        "architectures": results,
        "classes": list(data.classes),
        "chance": 1.0 / k,
        "seeds": [r.seed for r in recipes],
        "interval": stats["original_test"]["peak"]["method"],
        "counts": {
            "train": int(data.clean_train[1].numel()),
            "test": n_test,
            "test_per_class": torch.bincount(truth, minlength=k).tolist(),
        },
        "fidelity": data_fidelity(data, encrypted),
        "clean_manifest": str(clean),
        "encrypted_manifest": str(encrypted),
        "settings": asdict(settings),
    }
    with atomic_directory(out, force=force, inputs=inputs) as tmp:
        write_json(tmp / REPORT_NAME, report)
        write_report(report, tmp)
    return report


def _scores(run: Any) -> dict[str, float]:
    """A run's final accuracies and its peak on the watched sets, for a progress line."""
    return {**run.final, **{f"{name} peak": run.peak(name) for name in run.curves}}


def _summed_confusion(predictions: Sequence[torch.Tensor], truth: torch.Tensor, k: int) -> list[list[int]]:
    """Confusion matrix of every seed's predictions, summed (rows: true class)."""
    total = torch.tensor(confusion(predictions[0], truth, k))
    for pred in predictions[1:]:
        total += torch.tensor(confusion(pred, truth, k))
    return total.tolist()


def data_fidelity(data: EvalData, encrypted: str | Path) -> dict[str, Any]:
    """Fidelity of the encrypted images: on the model inputs (display window) and, from ``encrypt-dataset``'s
    in-house summary when present, in stored units, with the base model's hit rate."""
    return {"model_input_window": image_fidelity(data), **stored_fidelity(Path(encrypted))}


def image_fidelity(data: Any) -> dict[str, float]:
    """PSNR and SSIM of the encrypted vs original images as the model (and a window display) sees them.

    Computed on the intensity-windowed model inputs with a peak of 1 (the display window's width).
    """
    import math

    from medenc.core.fidelity import psnr, ssim

    reference = torch.cat([data.clean_train[0], data.clean_test[0]])
    changed = torch.cat([data.enc_train[0], data.enc_test[0]])
    p, s = psnr(reference, changed, 1.0), ssim(reference, changed, 1.0)
    finite = p[torch.isfinite(p)]
    return {
        "psnr_db_mean": float(finite.mean()) if finite.numel() else math.inf,
        "psnr_db_min": float(p.min()),
        "ssim_mean": float(s.mean()),
        "ssim_min": float(s.min()),
    }


def stored_fidelity(encrypted: Path) -> dict[str, Any]:
    """Fidelity in stored units and the hardening from ``encrypt-dataset``'s in-house summary, if present."""
    from medenc.experiment.encrypt_dataset import read_summary

    try:
        data = read_summary(encrypted.parent)
        if data is None:
            return {}
        fid = data["fidelity_native_units"]
        result = {
            "stored": {
                "psnr_db_mean": fid["psnr_db"]["mean"],
                "psnr_db_min": fid["psnr_db"]["min"],
                "ssim_mean": fid["ssim"]["mean"],
                "ssim_min": fid["ssim"]["min"],
            },
            "base_model_hit_rate": data.get("base_model_hit_rate"),
        }
        if "hardening" in data:
            result["ensemble"] = [m["arch"] for m in data["hardening"].get("ensemble", [])]
        return result
    except (OSError, ValueError, KeyError, TypeError):
        return {}
