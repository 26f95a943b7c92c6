"""What ``medenc encrypt-study`` measures and records: per-slice fidelity and predictions, the re-read
check of the written files, and ``report.json`` (no key material, no pixel values)."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medenc.files import files_under, sha256_files

if TYPE_CHECKING:  # pragma: no cover
    from medenc.study.encrypt import Session
    from medenc.study.request import StudyRequest

REPORT_NAME = "report.json"
REPORT_FORMAT = "medenc.encrypt-study/2"  # /2: sharing modes (no original slices by default)
CHUNK_PIXELS = 1 << 19  # pixels measured at once (SSIM in float64 unfolds 121 values per pixel)


def slice_metrics(
    volume: Any,
    written: np.ndarray,
    selected: list[int],
    session: Session,
    tumor: np.ndarray | None,
    progress: Callable[[float], None] | None = None,
) -> list[dict[str, Any]]:
    """Per selected slice: fidelity in native, stored and model units and the base model's probabilities.

    The model-unit change uses the original slice's intensity window (as PGD did); the probabilities
    apply the model's own preprocessing to each image, as any user of the files would. Slices are
    measured a few at a time (SSIM's convolution needs ~1 kB of memory per pixel); ``progress`` is
    called with the number of slices measured after each chunk.

    Shape:
        written: (Z, Y, X) like ``volume.voxels``.
    """
    per_chunk = max(1, CHUNK_PIXELS // (volume.shape[1] * volume.shape[2]))
    rows: list[dict[str, Any]] = []
    for start in range(0, len(selected), per_chunk):
        chunk = selected[start : start + per_chunk]
        rows.extend(_chunk_metrics(volume, written, chunk, session, tumor))
        if progress is not None:
            progress(len(rows))
    return rows


def _chunk_metrics(
    volume: Any, written: np.ndarray, chunk: list[int], session: Session, tumor: np.ndarray | None
) -> list[dict[str, Any]]:
    import torch

    from medenc.core.fidelity import change_norms, fidelity_table
    from medenc.learn.train import predict

    device = session.encryptor.device  # the measures run where PGD ran (SSIM is slow on a CPU)
    before = torch.from_numpy(volume.slice_batch(chunk).astype(np.float32)).to(device)
    after = torch.from_numpy(np.ascontiguousarray(written[chunk][:, None]).astype(np.float32)).to(device)
    table = fidelity_table(before, after)
    if volume.codec.integer:
        unit = volume.stored_unit(chunk)
    else:  # float storage: one stored unit is the slope's worth of native value
        unit = np.full((len(chunk), *volume.shape[1:]), abs(float(volume.codec.slope[0])))
    delta_stored = ((after - before)[:, 0].double().cpu().numpy() / unit).reshape(len(chunk), -1)
    preprocess = session.base.preprocess
    with torch.no_grad():
        mapping = preprocess.mapping(before)
        l2_model, linf_model = change_norms(mapping(before), mapping(after))
    probs_before = predict(session.base.model, before, device=device, preprocess=preprocess, probs=True)
    probs_after = predict(session.base.model, after, device=device, preprocess=preprocess, probs=True)
    classes = list(session.base.info.classes)
    rows = []
    for i, index in enumerate(chunk):
        rows.append(
            {
                "index": int(index),
                "tumor_voxels": None if tumor is None else int(np.count_nonzero(tumor[index])),
                "psnr_db": _finite(table["psnr_db"][i]),
                "ssim": _finite(table["ssim"][i]),
                "l2_native": _finite(table["l2"][i]),
                "linf_native": _finite(table["linf"][i]),
                "l2_stored": float(np.sqrt(np.square(delta_stored[i]).sum())),
                "linf_stored": float(np.abs(delta_stored[i]).max()),
                "l2_model": float(l2_model[i].item()),
                "linf_model": float(linf_model[i].item()),
                "predicted_before": classes[int(probs_before[i].argmax())],
                "predicted_after": classes[int(probs_after[i].argmax())],
                "probabilities_before": {c: round(float(p), 6) for c, p in zip(classes, probs_before[i])},
                "probabilities_after": {c: round(float(p), 6) for c, p in zip(classes, probs_after[i])},
            }
        )
    return rows


def _finite(value: float) -> float | None:
    """JSON-safe: ``None`` for an infinite PSNR (slice unchanged after rounding)."""
    return float(value) if math.isfinite(value) else None


def verify_output(volume: Any, written: np.ndarray, path: Path, only: list[int] | None) -> dict[str, Any]:
    """Re-read the written output and check its pixels and geometry; return its identifiers.

    Raises:
        RuntimeError: the files do not hold what was meant to be written (a bug, never expected).
    """
    from medenc.io import read_image

    with warnings.catch_warnings():  # e.g. the gaps of a subset of slices: not news to the user
        warnings.simplefilter("ignore")
        again = read_image(path)
    expected = written if only is None or again.shape == volume.shape else written[sorted(only)]
    if again.shape != expected.shape or not np.array_equal(again.voxels, expected.astype(again.voxels.dtype)):
        raise RuntimeError(f"{path}: the re-read output differs from what was written")
    if again.shape == volume.shape and not np.allclose(again.affine, volume.affine, atol=1e-3):
        raise RuntimeError(f"{path}: the re-read output's geometry differs from the source's")
    output: dict[str, Any] = {"format": again.format, "shape": list(again.shape)}
    if again.format == "dicom":
        headers = {f.path: f.header for f in again.frames}
        output["series_uid"] = again.info["series_uid"]
        output["study_uid"] = again.info["study_uid"]
        output["uid_map"] = {
            str(h.SourceImageSequence[0].ReferencedSOPInstanceUID): str(h.SOPInstanceUID) for h in headers.values()
        }
    return output


def add_uids(volume: Any, selected: list[int], per_slice: list[dict[str, Any]], uid_map: dict[str, str]) -> None:
    """Source and derived SOP Instance UIDs of each selected slice (DICOM whose stored slices are axial)."""
    if volume.format != "dicom":
        return
    stored_of: dict[int, int] = {}
    if volume.layout.slice_axis == 0:  # each stored slice is one canonical axial slice
        z = np.broadcast_to(np.arange(volume.shape[0])[:, None, None], volume.shape)
        stored_of = {int(plane[0, 0]): s for s, plane in enumerate(volume.layout.to_stored(z))}
    for row, index in zip(per_slice, selected):
        frame = volume.frames[stored_of[index]] if index in stored_of else None
        source = None if frame is None else str(frame.header.SOPInstanceUID)
        row["source_sop_uid"] = source
        row["source_frame"] = None if frame is None or frame.frame is None else int(frame.frame) + 1
        row["output_sop_uid"] = uid_map.get(source) if source else None


def versions() -> dict[str, str]:
    """Versions of medenc, Python and the libraries that touch the data."""
    import platform
    from importlib import metadata

    from medenc import __version__

    found = {"medenc": __version__, "python": platform.python_version()}
    for package in ("torch", "numpy", "pydicom", "nibabel", "highdicom", "monai"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def build_report(
    request: StudyRequest,
    session: Session,
    volume: Any,
    selected: list[int],
    per_slice: list[dict[str, Any]],
    output: dict[str, Any],
    requested: dict[str, Any],
    pgd: dict[str, Any],
    timing: dict[str, float],
) -> dict[str, Any]:
    """The report.json content (no key material, no pixel values)."""
    from datetime import datetime, timezone

    import torch

    from medenc.core.fidelity import summarize

    device = session.encryptor.device
    io_seconds = timing["read"] + timing["write"] + timing["verify"]
    hits_before = sum(r["predicted_before"] == request.label for r in per_slice)
    hits_after = sum(r["predicted_after"] == request.label for r in per_slice)
    fidelity = {}
    for name in ("psnr_db", "ssim", "l2_stored", "linf_stored", "l2_model", "linf_model"):
        values = [float("inf") if r[name] is None else r[name] for r in per_slice]
        fidelity[name] = {k: _finite(v) for k, v in summarize(values).items()}
    return {
        "format": REPORT_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "request": requested,
        "input": {
            "path": str(request.study),
            "format": volume.format,
            "shape": list(volume.shape),
            "spacing_mm": [round(s, 6) for s in volume.spacing],
            "files": len(volume.info.get("files", [])) or 1,
            "series_uid": volume.info.get("series_uid"),
            "study_uid": volume.info.get("study_uid"),
            "modality": volume.info.get("modality"),
            "mask": None if request.mask is None else str(request.mask),
        },
        "output": output,
        "share_only": Path(output["path"]).name,  # this report stays in house (see docs/encrypt-study.md)
        "label": request.label,
        "slices": {
            "mode": request.slices,
            "encrypted": [int(i) for i in selected],
            "total": int(volume.shape[0]),
            "copied_unchanged": (
                int(volume.shape[0]) - len(selected) if request.allow_original_slices else 0
            ),
            "allow_original_slices": request.allow_original_slices,
        },
        "fidelity": fidelity,
        "base_model": {
            "path": str(session.base.path),
            "sha256": session.model_sha256,
            "arch": session.base.info.arch,
            "classes": list(session.base.info.classes),
            "preprocess": session.base.preprocess.to_dict(),
            "slices_predicted_as_label_before": hits_before,
            "slices_predicted_as_label_after": hits_after,
        },
        "key_fingerprint": session.key.fingerprint(),
        "per_slice": per_slice,
        "versions": versions(),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "precision": session.encryptor.precision,
        "pgd_batches": pgd,
        "timing_s": {
            **{name: round(value, 4) for name, value in timing.items()},
            "io": round(io_seconds, 4),
            "pgd_share_of_total": round(timing["pgd"] / timing["total"], 4) if timing["total"] > 0 else None,
        },
    }


def report_state(out: Path, requested: dict[str, Any]) -> str:
    """What a resumed batch finds in ``out`` for this request.

    Returns:
        ``"done"``: a complete report for exactly this request, and the written files match its checksum
        (skip the case); ``"damaged"``: this request's report, but files missing, added or changed since
        (redo the case); ``"other"``: no report of medenc's, or one for another request (replace it only
        with ``--force``).
    """
    try:
        report = json.loads((out / REPORT_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "other"
    if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT or report.get("request") != requested:
        return "other"
    output = report.get("output") or {}
    target = out / Path(str(output.get("path", ""))).name
    files = files_under(target) if target.exists() else []
    # the written files themselves, not their presence: an output replaced or damaged since is redone
    if files and output.get("sha256") == sha256_files(files, target if target.is_dir() else None):
        return "done"
    return "damaged"
