"""``medenc encrypt-dataset``: encrypt every slice of a data set with its true label.

Slices are read with their stored type and range, encrypted on their native grid through the base
model's input mapping (``Preprocess``), rounded back to the stored type, and written like the source
(same header and affine) under the same relative path. ``OUT`` holds only what may be shared (the
slices and ``manifest.csv``); the in-house summary beside it, ``OUT.summary.json`` (:func:`summary_path`),
holds the key's identifier, the settings, the fidelity of the change and the base model's hit rate on
the target classes, measured on what was written. It is never to be shared: the settings are part of
the secret.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from medenc.atomic import atomic_directory, atomic_write_text
from medenc.core.key import check_key_classes, load_key_for
from medenc.errors import InputError
from medenc.files import check_output, inside, manifest_inputs
from medenc.learn.checkpoint import BaseModel, load_base_model

if TYPE_CHECKING:  # pragma: no cover
    from medenc.core.encrypt import EncryptionResult, Encryptor
    from medenc.core.key import EncryptionKey
    from medenc.core.mapping import ModelInputMapping
    from medenc.experiment.dataset import ManifestRow

SUMMARY_SUFFIX = ".summary.json"


def summary_path(out: str | Path) -> Path:
    """Where the in-house summary of the encrypted set ``out`` goes: beside it, not inside it."""
    out = Path(out)
    return out.parent / f"{out.name}{SUMMARY_SUFFIX}"


def read_summary(out: str | Path) -> dict[str, Any] | None:
    """The in-house summary of an encrypted set (also the ``OUT/summary.json`` of medenc 0.1 sets), or None."""
    for candidate in (summary_path(out), Path(out) / "summary.json"):
        if candidate.is_file():
            return json.loads(candidate.read_text(encoding="utf-8"))
    return None


def output_name(row: ManifestRow) -> str:
    """Where a slice goes inside the output folder: its manifest path if that stays inside, else slices/."""
    relative = PurePosixPath(row.image)
    if not relative.is_absolute() and ".." not in relative.parts:
        return str(relative)
    return f"slices/{row.case_id}{''.join(Path(row.path).suffixes[-2:]) or '.nii.gz'}"


def encrypt_dataset(
    manifest: str | Path,
    model: str | Path,
    key: str | Path | Any,
    out: str | Path,
    *,
    device: str | None = None,
    batch_size: int = 64,
    precision: str = "auto",
    force: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    extra_models: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """Encrypt all slices of ``manifest`` into ``out`` (written atomically) and return the summary.

    Args:
        manifest: slice manifest (``case_id,label,split,image``).
        model: base model checkpoint.
        key: encryption key file, or an in-memory :class:`medenc.core.key.EncryptionKey` (e.g. a calibration
            key with its eps changed); its classes must be the model's.
        out: output folder (gets ``manifest.csv`` and the slices; the summary goes to :func:`summary_path`).
        device: PGD device (default: CUDA if available).
        batch_size: PGD samples per call.
        precision: ``fp32``, ``bf16`` or ``auto``.
        force: replace an existing ``out``.
        on_progress: called with ``(slices done, total)``: once with 0 before the first PGD batch, then after each.
        extra_models: hardening: more base model checkpoints (same classes and model-input mapping)
            attacked together with ``model`` as an ensemble (:class:`medenc.core.harden.EnsembleModel`).

    Returns:
        The summary also written to ``summary_path(out)`` (in-house: never share it).
    """
    from medenc.core.encrypt import Encryptor
    from medenc.core.fidelity import fidelity_table, summarize
    from medenc.experiment.dataset import read_manifest
    from medenc.io import read_image, write_like

    started = time.perf_counter()
    manifest = Path(manifest)
    inputs = [*manifest_inputs(manifest), model, *extra_models, key if isinstance(key, (str, Path)) else None]
    for target in (out, summary_path(out)):
        check_output(target, inputs=inputs, force=force)
    base = load_base_model(model)
    classes = tuple(base.info.classes)
    the_key = load_key_for(key, classes) if isinstance(key, (str, Path)) else check_key_classes(key, classes)
    data = read_manifest(manifest, classes=classes)
    inputs += [row.path for row in data.rows]
    for target in (out, summary_path(out)):
        check_output(target, inputs=inputs, force=force)
    if not data.rows:
        raise InputError("manifest has no slices", manifest)
    if on_progress is not None:  # the total before the first (slow) PGD batch: no "0/?" on the bar
        on_progress(0, len(data.rows))
    labels = data.labels()
    extras = [_load_ensemble_member(path, base) for path in extra_models]
    extras_models = [m.model for m in extras]
    encryptor = Encryptor(
        base.model,
        the_key,
        device=device,
        batch_size=batch_size,
        precision=precision,
        extra_models=extras_models,
    )
    volumes = [read_image(row.path) for row in data.rows]
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, volume in enumerate(volumes):
        if volume.shape[0] != 1:
            raise InputError(f"expected a 2D slice, got a volume of shape {volume.shape}", data.rows[i].path)
        groups[volume.shape].append(i)

    written: list[np.ndarray | None] = [None] * len(volumes)
    per_image: dict[str, list] = {"psnr_db": [], "ssim": [], "l2": [], "linf": []}
    order: list[int] = []
    hits_copy, hits_any = [], []
    member_hits: list[list[float]] = [[] for _ in extras]
    done = 0
    for members in groups.values():
        for start in range(0, len(members), max(1, batch_size // the_key.num_targets)):
            chunk = members[start : start + max(1, batch_size // the_key.num_targets)]
            x = torch.from_numpy(np.stack([volumes[i].slice_batch([0])[0] for i in chunk]).astype(np.float32))
            low = torch.from_numpy(np.stack([volumes[i].bounds([0])[0][0] for i in chunk]).astype(np.float32))
            high = torch.from_numpy(np.stack([volumes[i].bounds([0])[1][0] for i in chunk]).astype(np.float32))
            chunk_labels = torch.tensor([labels[i] for i in chunk])
            mapping = base.preprocess.mapping(x)
            result = encryptor.encrypt_with_details(
                x, chunk_labels, mapping=mapping, bounds=(low[:, None], high[:, None])
            )
            quantized = []
            for j, i in enumerate(chunk):
                native = result.encrypted[j, 0].numpy().astype(volumes[i].voxels.dtype)[None]
                written[i] = volumes[i].quantize(native)
                quantized.append(torch.from_numpy(written[i].astype(np.float32)))
            stored = torch.stack(quantized)  # (n, 1, H, W)
            table = fidelity_table(x, stored)
            for name in per_image:
                per_image[name].extend(table[name])
            order.extend(chunk)
            hit_copy, hit_any, hit_members = _hit_rates(
                encryptor, [base.model, *extras_models], mapping, result, stored
            )
            hits_copy.extend(hit_copy)
            hits_any.extend(hit_any)
            for hits, new in zip(member_hits, hit_members, strict=True):
                hits.extend(new)
            done += len(chunk)
            if on_progress is not None:
                on_progress(done, len(volumes))
    pgd_seconds = time.perf_counter() - started

    names = [output_name(row) for row in data.rows]
    summary = {
        "audience": "in-house: never share this file (it names the key and its settings); share only the folder",
        "encrypted": str(Path(out)),
        "slices": len(volumes),
        "classes": list(classes),
        "key_fingerprint": the_key.fingerprint(),
        "combiner": the_key.combiner,
        "pgd": {"norm": the_key.pgd.norm, "eps": the_key.pgd.eps, "step": the_key.pgd.step, "steps": the_key.pgd.steps},
        "model": {"path": str(base.path), "arch": base.info.arch, "preprocess": base.preprocess.to_dict()},
        "device": str(encryptor.device),
        "precision": encryptor.precision,
        "fidelity_native_units": {name: summarize(values) for name, values in per_image.items()},
        "base_model_hit_rate": {
            "copies_on_target": float(np.mean(hits_copy)),
            "written_image_predicted_as_a_target": float(np.mean(hits_any)),
        },
        **_hardening_summary(the_key, extras, [float(np.mean(h)) for h in member_hits]),
        "per_slice": [
            {
                "case_id": data.rows[i].case_id,
                "split": data.rows[i].split,
                **{name: per_image[name][pos] for name in per_image},
            }
            for pos, i in enumerate(order)
        ],
        "seconds": round(time.perf_counter() - started, 3),
        "encrypt_seconds": round(pgd_seconds, 3),
    }
    with atomic_directory(out, force=force, inputs=inputs) as tmp:
        table = io.StringIO()
        writer = csv.writer(table, lineterminator="\n")
        writer.writerow(("case_id", "label", "split", "image"))
        for i, row in enumerate(data.rows):
            target = tmp / names[i]
            if not inside(target, tmp):
                raise InputError(f"line {row.line}: image path {row.image!r} leads outside the output folder", manifest)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_like(volumes[i], written[i], target, force=True)
            writer.writerow((row.case_id, row.label, row.split, names[i]))
        (tmp / "manifest.csv").write_text(table.getvalue(), encoding="utf-8")
    atomic_write_text(summary_path(out), json.dumps(summary, indent=2) + "\n", inputs=inputs)
    return summary


def _load_ensemble_member(path: str | Path, base: BaseModel) -> BaseModel:
    """Load an extra base model and check it reads the same inputs as ``base`` and has its classes."""
    member = load_base_model(path)
    if tuple(member.info.classes) != tuple(base.info.classes):
        raise InputError(
            f"ensemble model classes ({', '.join(member.info.classes)}) differ from the base model's", path
        )
    if member.preprocess.to_dict() != base.preprocess.to_dict():
        raise InputError(
            "ensemble model has another model-input mapping (size or intensity window) than the base model",
            path,
            tip="train it with the same --size and --window",
        )
    return member


def _hardening_summary(
    key: EncryptionKey, extras: Sequence[BaseModel], member_hit_rates: Sequence[float]
) -> dict[str, Any]:
    """The summary's ``hardening`` entry, present only when some hardening is on."""
    if not extras and not key.hardened:
        return {}
    return {
        "hardening": {
            "ensemble": [
                {"path": str(m.path), "arch": m.info.arch, "copies_on_target": rate}
                for m, rate in zip(extras, member_hit_rates, strict=True)
            ],
            "eot": list(key.eot),
            "eot_samples": key.eot_samples,
            "ratio_jitter": key.ratio_jitter,
            "flip_consistent_layout": key.combiner == "hconcat_mirror",
        }
    }


def _hit_rates(
    encryptor: Encryptor,
    models: Sequence[torch.nn.Module],
    mapping: ModelInputMapping,
    result: EncryptionResult,
    stored: torch.Tensor,
) -> tuple[list[float], list[float], list[list[float]]]:
    """Per image: share of copies on target for ``models[0]`` (the base), written image predicted as a
    target by the base, and share of copies on target for each further model (ensemble members).

    Shape:
        result.copies: (n, k, 1, H, W); stored: (n, 1, H, W).
    """
    from medenc.learn.train import predict

    n, k = result.targets.shape
    copies = result.copies.reshape(n * k, *result.copies.shape[2:])
    with torch.no_grad():  # windows of the original images, as during PGD
        copy_inputs = mapping.select(torch.arange(n).repeat_interleave(k))(copies)
        image_inputs = mapping(stored)
    on_target = [
        (predict(model, copy_inputs, device=encryptor.device).argmax(1).view(n, k) == result.targets)
        .float()
        .mean(dim=1)
        .tolist()
        for model in models
    ]
    image_pred = predict(models[0], image_inputs, device=encryptor.device).argmax(1)
    any_target = (image_pred[:, None] == result.targets).any(dim=1).float()
    return on_target[0], any_target.tolist(), on_target[1:]
