"""``medenc security-eval``: what a determined data thief recovers, defence by defence, architecture by
architecture.

For every thief's counter-measure (:mod:`medenc.security.defenses`) and every architecture, a fresh model
is trained the thief's way on the encrypted training split and tested on the original test split (the
images the thief really wants to classify) and on the encrypted test split. Two reference rows frame
the table: the clean baseline (trained and tested on originals) and the undefended thief. The thief
also holds a few labelled originals (``ThiefSettings.clean_fraction`` of the clean training split,
stratified): his validation set for early stopping, his fine-tuning set, and his surrogate's training
set for key recovery. The fidelity of the encrypted images (PSNR, SSIM) goes beside every figure.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from medenc.core.encrypt import resolve_device
from medenc.errors import InputError
from medenc.files import check_output, manifest_inputs
from medenc.learn.recipe import TrainRecipe
from medenc.learn.victims import score, train_victim
from medenc.reporting import REPORT_NAME, header, write_json
from medenc.security.defenses import Defence, adversarial_hook, crop_only, flip_only
from medenc.security.volume import VolumeThief, run_volume_thief

if TYPE_CHECKING:  # pragma: no cover
    from medenc.core.key import EncryptionKey
    from medenc.experiment.evaluate import EvalData


@dataclass(frozen=True)
class ThiefSettings(TrainRecipe):
    """How the thief trains (the fields of :class:`~medenc.learn.recipe.TrainRecipe`) and what else he holds.

    Attributes:
        clean_fraction: share of the clean training split the thief holds with labels (stratified).
        finetune_epochs: epochs of fine-tuning on those images (``finetune``).
        finetune_lr: peak learning rate of the fine-tuning.
        adv_steps: PGD steps per batch of adversarial training (budget: the key's eps and norm).
    """

    clean_fraction: float = 0.2
    finetune_epochs: int = 15
    finetune_lr: float = 0.01
    adv_steps: int = 5


def thief_subset(labels: Tensor, fraction: float, seed: int) -> Tensor:
    """Indices of a stratified random share of the samples (at least one per class).

    Shape:
        labels: (N,); result: (M,) long, sorted.
    """
    if not 0.0 < fraction <= 1.0:
        raise InputError(f"the thief's clean fraction must lie in (0, 1], got {fraction}")
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in torch.unique(labels):
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(members.numel(), generator=generator)]
        chosen.append(members[: max(1, round(fraction * members.numel()))])
    return torch.sort(torch.cat(chosen)).values


def run_defence(
    defence: Defence | str,
    arch: str,
    data: EvalData,
    thief: tuple[Tensor, Tensor],
    settings: ThiefSettings,
    key: EncryptionKey,
    progress: Any = None,
) -> tuple[dict[str, float], nn.Module]:
    """Train one thief's model and measure it.

    Args:
        defence: a :class:`Defence`, or ``"none"`` (the undefended thief), ``"clean"`` (the clean
            baseline) or ``"few-clean"`` (trained on the thief's labelled originals only).
        arch: architecture.
        data: :class:`medenc.experiment.evaluate.EvalData` (model inputs).
        thief: the thief's labelled originals ``(x, y)``.
        settings: the training recipe.
        key: the encryption key (its eps and norm set the adversarial-training budget).
        progress: a progress display for :func:`medenc.learn.train.fit`.

    Returns:
        ``{"original_test": ..., "encrypted_test": ...}`` accuracies (``clean``: ``original_test``
        only) and the trained model.
    """
    if isinstance(defence, VolumeThief):  # a row of the thief who holds volumes (medenc.security.volume)
        return run_volume_thief(defence, arch, data, settings, progress)  # type: ignore[arg-type]
    k = len(data.classes)
    x, y = data.enc_train
    tests = {"original_test": data.clean_test, "encrypted_test": data.enc_test}
    if defence == "clean":
        model = train_victim(arch, *data.clean_train, k, settings, progress=progress)
        return score(model, {"original_test": data.clean_test}, settings.device)[0], model
    if defence == "few-clean":
        steps = settings.epochs * math.ceil(y.numel() / settings.batch_size)  # as many steps as the others
        epochs = max(1, round(steps / math.ceil(thief[1].numel() / settings.batch_size)))
        model = train_victim(arch, *thief, k, settings, progress=progress, epochs=epochs)
        return score(model, {"original_test": data.clean_test}, settings.device)[0], model
    fit_kwargs: dict[str, Any] = {}
    if isinstance(defence, Defence) and defence.kind == "input":
        x = defence.transform(x)
        tests = {name: (defence.transform(tx), ty) for name, (tx, ty) in tests.items()}
    elif isinstance(defence, Defence):
        fit_kwargs = _recipe(defence, thief, settings, key)
    elif defence != "none":
        raise ValueError(f"unknown defence {defence!r}")
    model = train_victim(arch, x, y, k, settings, progress=progress, **fit_kwargs)
    if isinstance(defence, Defence) and defence.name == "finetune":
        from medenc.learn.train import fit

        fit(
            model,
            *thief,
            epochs=settings.finetune_epochs,
            batch_size=settings.batch_size,
            lr=settings.finetune_lr,
            device=settings.device,
            seed=settings.seed,
            progress=progress,
        )
    return score(model, tests, settings.device)[0], model


def _recipe(
    defence: Defence, thief: tuple[Tensor, Tensor], settings: ThiefSettings, key: EncryptionKey
) -> dict[str, Any]:
    """``fit`` options of a training recipe."""
    if defence.name == "flip-aug":
        return {"augment": flip_only}
    if defence.name == "crop-aug":
        return {"augment": crop_only}
    if defence.name == "augment":
        return {"augment": True}
    if defence.name == "early-stop":
        return {"val": thief, "keep_best": True}
    if defence.name == "advtrain":
        return {"batch_hook": adversarial_hook(key.pgd.eps, settings.adv_steps, key.pgd.norm)}
    return {}  # finetune: trained as usual, then fine-tuned


def image_fidelity(data: Any) -> dict[str, float]:
    """PSNR and SSIM of the encrypted vs original images as the model (and a window display) sees them.

    Computed on the intensity-windowed model inputs with a peak of 1 (the display window's width).
    """
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


def security_evaluate(
    clean: str | Path,
    encrypted: str | Path | None,
    model: str | Path,
    key: str | Path,
    out: str | Path,
    *,
    archs: Sequence[str] = (),
    defences: Sequence[Defence] = (),
    settings: ThiefSettings | None = None,
    key_recovery: bool = False,
    force: bool = False,
    progress_factory: Callable[[str], Any] | None = None,
    compare_with: str | Path | None = None,
    on_result: Callable[[str, str, dict[str, float]], None] | None = None,
    studies: str | Path | None = None,
    volume_thieves: Sequence[VolumeThief] = (),
) -> dict[str, Any]:
    """Run the defence x architecture table (and optionally key recovery); write the report folder.

    Args:
        clean: original slice manifest.
        encrypted: encrypted slice manifest of the same cases.
        model: the base model checkpoint (its architecture is always a column; its input size is used).
        key: the key the data was encrypted with (for the adversarial-training budget and to score key
            recovery; the report names it by fingerprint only).
        out: report folder (``report.json``, ``report.md``, PNG charts), written atomically.
        archs: thief architectures besides the base's.
        defences: the thief's counter-measures.
        settings: the thief's training recipe.
        key_recovery: also run the paper's key-recovery attack.
        force: replace an existing ``out``.
        progress_factory: given a description, returns a progress display for :func:`medenc.learn.train.fit`.
        compare_with: an earlier ``report.json`` (e.g. before hardening): the report gets a before/after
            table, and the rows that do not depend on the encrypted set (clean baseline, few clean only)
            are taken from it when it used the same clean manifest and training recipe.
        on_result: called with ``(row, architecture, accuracies)`` after every model (a log line).
        studies: instead of ``encrypted``: the output folder of ``encrypt-study --batch`` on the studies of
            ``clean``, then a studies manifest (``case_id,label,split,image,mask``); every row runs on the
            largest-tumor slices, and ``volume_thieves`` add the rows of :mod:`medenc.security.volume`.
        volume_thieves: the volume-aware rows (with ``studies`` only).

    Returns:
        The ``report.json`` content.
    """
    from medenc.atomic import atomic_directory
    from medenc.core.key import load_key_for
    from medenc.experiment.evaluate import load_eval_data
    from medenc.learn.checkpoint import load_base_model
    from medenc.learn.models import ARCHITECTURES
    from medenc.security.report import write_security_report

    settings = settings or ThiefSettings()
    out = Path(out)
    if (encrypted is None) == (studies is None):
        raise InputError("give the encrypted slices or the shared studies, not both or neither")
    encrypted_inputs = manifest_inputs(encrypted) if encrypted is not None else [Path(studies)]  # type: ignore[arg-type]
    inputs = [*manifest_inputs(clean), *encrypted_inputs, model, key]
    check_output(out, inputs=inputs, force=force, what="report folder")
    base = load_base_model(model)
    the_key = load_key_for(key, tuple(base.info.classes))
    columns = list(dict.fromkeys([base.info.arch, *archs]))
    unknown = [a for a in columns if a not in ARCHITECTURES]
    if unknown:
        raise InputError(f"unknown architecture(s) {', '.join(unknown)}; known: {', '.join(ARCHITECTURES)}")
    started = time.perf_counter()
    if studies is not None:
        from medenc.security.volume import load_study_data

        data = load_study_data(clean, studies, base.preprocess.size[0], tuple(base.info.classes))
    else:
        data = load_eval_data(clean, encrypted, base.preprocess.size[0], base.info.classes)  # type: ignore[arg-type]
    index = thief_subset(data.clean_train[1], settings.clean_fraction, settings.seed)
    thief = (data.clean_train[0][index], data.clean_train[1][index])

    previous = _read_previous(compare_with, clean, settings)
    rows: list[tuple[str, Any]] = [("clean baseline", "clean"), ("undefended", "none")]
    rows += [(d.label, d) for d in defences]
    if any(d.name == "finetune" for d in defences):
        rows.append(("few clean only", "few-clean"))
    rows += [(t.label, t) for t in volume_thieves if studies is not None]
    table: dict[str, dict[str, dict[str, float]]] = {}
    seconds: dict[str, float] = {}
    kept: dict[tuple[str, str], nn.Module] = {}
    for label, defence in rows:
        table[label] = {}
        t0 = time.perf_counter()
        for arch in columns:
            reuse = previous.get("reusable") and defence in ("clean", "few-clean")
            if reuse and arch in previous["table"].get(label, {}):
                table[label][arch] = previous["table"][label][arch]  # same clean data, same recipe
                continue
            progress = progress_factory(f"{label} / {arch}") if progress_factory else None
            result, trained = run_defence(defence, arch, data, thief, settings, the_key, progress)
            table[label][arch] = result
            if on_result is not None:
                on_result(label, arch, result)
            if defence in ("none", "few-clean") and arch == base.info.arch:
                kept[(defence, arch)] = trained
        seconds[label] = round(time.perf_counter() - t0, 1)

    recovery = None
    if key_recovery:
        from medenc.security.key_recovery import recover_key

        t0 = time.perf_counter()
        enc_model = kept[("none", base.info.arch)]
        surrogate = kept.get(("few-clean", base.info.arch))
        if surrogate is None:
            surrogate = run_defence("few-clean", base.info.arch, data, thief, settings, the_key)[1]
        recovery = recover_key(enc_model, surrogate, *thief, the_key, device=settings.device)
        recovery["surrogate_arch"] = recovery["thief_model_arch"] = base.info.arch
        recovery["seconds"] = round(time.perf_counter() - t0, 1)

    report = {
        "rows": [label for label, _ in rows],
        "archs": columns,
        "base_arch": base.info.arch,
        "table": table,
        "defences": {d.label: {"name": d.name, "param": d.param, "kind": d.kind} for d in defences},
        "classes": list(data.classes),
        "chance": 1.0 / len(data.classes),
        "counts": {
            "train": int(data.clean_train[1].numel()),
            "test": int(data.clean_test[1].numel()),
            "thief_clean": int(index.numel()),
        },
        "fidelity": {"model_input_window": image_fidelity(data), **_stored_fidelity(encrypted, data)},
        "key": {
            "fingerprint": the_key.fingerprint(),
            "combiner": the_key.combiner,
            "pgd": asdict(the_key.pgd),
            "hardening": {
                "eot": list(the_key.eot),
                "eot_samples": the_key.eot_samples,
                "ratio_jitter": the_key.ratio_jitter,
            },
        },
        "key_recovery": recovery,
        "compared_with": previous.get("summary"),
        "clean_manifest": str(clean),
        "encrypted_manifest": None if encrypted is None else str(encrypted),
        "model": str(model),
        "settings": asdict(settings),
        "row_seconds": seconds,
        **_volume_entry(studies, data),
        **header("security-eval", started=started, device=resolve_device(settings.device)),
    }
    with atomic_directory(out, force=force, inputs=inputs) as tmp:
        write_json(tmp / REPORT_NAME, report)
        write_security_report(report, tmp)
    return report


def _read_previous(path: str | Path | None, clean: str | Path, settings: ThiefSettings) -> dict[str, Any]:
    """An earlier report to compare with; ``reusable`` when its clean-data rows can be taken over."""
    if path is None:
        return {}
    try:
        old = json.loads(Path(path).read_text(encoding="utf-8"))
        table, rows = old["table"], old["rows"]
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError("not a security-eval report.json", path) from None
    same_data = Path(old.get("clean_manifest", "")).resolve() == Path(clean).resolve()
    summary = {
        "path": str(path),
        "rows": rows,
        "table": table,
        "fidelity": old.get("fidelity"),
        "key": old.get("key"),
        "key_recovery": old.get("key_recovery"),
    }
    return {"table": table, "summary": summary, "reusable": same_data and old.get("settings") == asdict(settings)}


def _volume_entry(studies: str | Path | None, data: Any) -> dict[str, Any]:
    """The report's ``volume`` entry (shared studies only)."""
    if studies is None:
        return {}
    from medenc.security.volume import sharing_summary

    return {"volume": {"studies": str(studies), "shared": sharing_summary(data)}}


def _stored_fidelity(encrypted: str | Path | None, eval_data: Any = None) -> dict[str, Any]:
    """Fidelity in stored units and the hardening from ``encrypt-dataset``'s in-house summary, if present
    (for shared studies: from their reports)."""
    from medenc.experiment.encrypt_dataset import read_summary

    if encrypted is None:
        from medenc.security.volume import stored_fidelity

        return stored_fidelity(eval_data)
    try:
        data = read_summary(Path(encrypted).parent)
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
