"""The thief who holds volumes: ``medenc security-eval --studies`` on shared studies.

The 2-D thieves of :mod:`medenc.security.defenses` see one slice per study. A study shared with
``medenc encrypt-study --batch`` is a volume, and its thief can use the third dimension:

- **neighbour slices** (``neighbours[:R]``): train on the unencrypted slices the shared studies hold within
  R slices (default 2) of an encrypted one, with the study's label. They exist only when a study was
  shared with ``--allow-original-slices``; in the default mode the row reads "none available".
- **through-plane averaging** (``mean[:W]``, ``median[:W]``): replace each slice by the mean (median) of
  the W adjacent slices centred on it (default 3), before training and before testing: independent
  per-slice perturbations partly cancel, while the anatomy changes slowly from slice to slice. The
  thief filters his own (original) test volumes the same way.
- **all-slice training** (``all-slices``): train on every shared slice of each study with the study's
  label, tumor or not.

Every row is tested on the original largest-tumor slice of each test study (through-plane filtered for
the averaging rows), as the 2-D rows are, so the table's rows compare. The unencrypted slices are found
by comparing the shared pixels with the original study's, so the measure does not trust any label.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from medenc.errors import InputError
from medenc.experiment.evaluate import EvalData
from medenc.files import safe_name
from medenc.learn.recipe import TrainRecipe
from medenc.security.rows import ORIGINAL, Row, RowContext

if TYPE_CHECKING:  # pragma: no cover
    from medenc.learn.victims import VictimResult

VOLUME_THIEVES = {"neighbours": 2, "mean": 3, "median": 3, "all-slices": None}
DEFAULT_VOLUME_THIEVES = ("neighbours", "mean:3", "median:5", "all-slices")
NONE_AVAILABLE = "none available"


@dataclass(frozen=True)
class VolumeThief:
    """One volume-aware counter-measure: a row of the security table.

    Attributes:
        name: ``neighbours``, ``mean``, ``median`` or ``all-slices``.
        param: slices each side (``neighbours``) or the window (``mean``, ``median``).
    """

    name: str
    param: int | None = None

    @property
    def label(self) -> str:
        """The row's name in the security table."""
        if self.name == "neighbours":
            return f"neighbour slices (unencrypted, within {self.param})"
        if self.name in ("mean", "median"):
            return f"through-plane {self.name} of {self.param}"
        return "all-slice training"


def parse_volume_thieves(text: str) -> list[VolumeThief]:
    """``"all"``, ``"none"`` or a comma list such as ``"neighbours:2,mean:3,median:5,all-slices"``.

    Raises:
        InputError: an unknown name or a bad parameter.
    """
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if items == ["all"]:
        items = list(DEFAULT_VOLUME_THIEVES)
    if items == ["none"]:
        return []
    result: list[VolumeThief] = []
    for item in items:
        name, _, raw = item.partition(":")
        if name not in VOLUME_THIEVES:
            raise InputError(f"unknown volume thief {name!r}; known: all, none, {', '.join(VOLUME_THIEVES)}")
        default = VOLUME_THIEVES[name]
        if raw and default is None:
            raise InputError(f"volume thief {name!r} takes no parameter, got {item!r}")
        try:
            param = int(raw) if raw else default
        except ValueError:
            raise InputError(f"parameter of {name!r} must be a whole number, got {raw!r}") from None
        if param is not None and (param < 1 or (name != "neighbours" and (param < 2 or param > 9))):
            raise InputError(f"{item!r}: use neighbours:1.. or a window of 2 to 9 slices")
        thief = VolumeThief(name, param)
        if thief not in result:
            result.append(thief)
    return result


@dataclass
class SharedCase:
    """One study as the hospital holds it and as it was shared.

    Attributes:
        case_id, split, label: from the studies manifest (label as a class index).
        largest: canonical index of the largest-tumor slice (per the mask).
        original: the original native voxels.
        shared: the shared native voxels on the same grid (zeros where a slice was not shared).
        present: which canonical slices the shared study holds.
        unencrypted: which of them carry the original pixels exactly.
        report: the shared study's ``report.json`` (in house).

    Shape:
        original, shared: (Z, H, W); present, unencrypted: (Z,) bool.
    """

    case_id: str
    split: str
    label: int
    largest: int
    original: np.ndarray
    shared: np.ndarray
    present: np.ndarray
    unencrypted: np.ndarray
    report: dict[str, Any] = field(repr=False)


@dataclass
class StudyEvalData(EvalData):
    """:class:`EvalData` of the largest-tumor slices, plus the studies the volume rows need."""

    cases: list[SharedCase] = field(default_factory=list)
    size: int = 0


def read_shared_case(row: dict[str, str], shared_dir: Path, classes: tuple[str, ...]) -> SharedCase:
    """Read one study (original, mask) and its shared copy ``shared_dir/<case_id>/``.

    Raises:
        InputError: a missing or foreign shared study, or one that lacks its largest-tumor slice.
    """
    from medenc.core.slices import largest_tumor_slice
    from medenc.io import read_image, read_mask
    from medenc.study.report import REPORT_NAME

    folder = shared_dir / safe_name(row["case_id"])
    try:
        report = json.loads((folder / REPORT_NAME).read_text(encoding="utf-8"))
        written = folder / Path(report["output"]["path"]).name
        encrypted = sorted(int(i) for i in report["slices"]["encrypted"])
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(
            "no encrypt-study report.json for this case",
            folder,
            tip="give the output folder of `medenc encrypt-study --batch` on these studies",
        ) from None
    if report.get("label") != row["label"]:
        raise InputError(f"shared with label {report.get('label')!r}, the manifest says {row['label']!r}", folder)
    volume = read_image(row["image"])
    largest = largest_tumor_slice(read_mask(row["mask"], like=volume))
    copy = read_image(written)
    present = np.zeros(volume.shape[0], dtype=bool)
    if copy.shape == volume.shape:
        present[:] = True
        shared = copy.voxels.astype(np.float32)
    elif copy.shape[1:] == volume.shape[1:] and copy.shape[0] == len(encrypted):
        present[encrypted] = True
        shared = np.zeros(volume.shape, dtype=np.float32)
        shared[encrypted] = copy.voxels
    else:
        raise InputError(f"shared volume of shape {copy.shape} does not fit the study's {volume.shape}", written)
    original = volume.voxels.astype(np.float32)
    if not present[largest]:
        raise InputError(f"the shared study lacks the largest-tumor slice {largest}", written)
    same = np.array([present[z] and np.array_equal(shared[z], original[z]) for z in range(volume.shape[0])])
    return SharedCase(
        row["case_id"], row["split"], classes.index(row["label"]), largest, original, shared, present, same, report
    )


def load_study_data(studies: str | Path, shared: str | Path, size: int, classes: tuple[str, ...]) -> StudyEvalData:
    """The studies manifest (``case_id,label,split,image,mask``) and their shared copies, as model inputs.

    The four splits of :class:`EvalData` are the largest-tumor slices: original and shared, of the
    training and test studies.

    Raises:
        InputError: a bad manifest, a class the model does not know, a study without a shared copy.
    """
    from medenc.experiment.prepare import read_studies

    rows = read_studies(Path(studies))
    unknown = sorted({r["label"] for r in rows} - set(classes))
    if unknown:
        raise InputError(f"label(s) {', '.join(unknown)} are not classes of the model", studies)
    cases = [read_shared_case(r, Path(shared), classes) for r in rows]
    splits = {c.split for c in cases}
    if not {"train", "test"} <= splits:
        raise InputError("the studies manifest needs train and test studies", studies)

    def largest(split: str, which: str) -> tuple[Tensor, Tensor]:
        chosen = [c for c in cases if c.split == split]
        slices = np.stack([getattr(c, which)[c.largest] for c in chosen])
        return model_inputs(slices, size), torch.tensor([c.label for c in chosen])

    return StudyEvalData(
        classes=tuple(classes),
        clean_train=largest("train", "original"),
        clean_test=largest("test", "original"),
        enc_train=largest("train", "shared"),
        enc_test=largest("test", "shared"),
        cases=cases,
        size=size,
    )


def model_inputs(slices: np.ndarray, size: int) -> Tensor:
    """Native slices -> model inputs (resize, intensity window), as :func:`load_eval_data` maps them.

    Shape:
        slices: (N, H, W); result: (N, 1, size, size).
    """
    from medenc.core.mapping import Preprocess

    return Preprocess(size=(size, size)).to_model(torch.from_numpy(np.ascontiguousarray(slices))[:, None].float())


def through_plane(volume: np.ndarray, present: np.ndarray, index: int, window: int, how: str) -> np.ndarray | None:
    """The mean or median of the ``window`` slices centred on ``index`` (the run of present slices only).

    The window is cut at the volume's ends and at slices that are not present. ``None`` when no
    neighbour is present.

    Shape:
        volume: (Z, H, W); present: (Z,); result: (H, W).
    """
    low, high = index, index
    half_below, half_above = (window - 1) // 2, window // 2
    while low - 1 >= 0 and index - (low - 1) <= half_below and present[low - 1]:
        low -= 1
    while high + 1 < volume.shape[0] and (high + 1) - index <= half_above and present[high + 1]:
        high += 1
    if low == high:
        return None
    stack = volume[low : high + 1]
    return stack.mean(axis=0) if how == "mean" else np.median(stack, axis=0)


def thief_data(
    thief: VolumeThief, data: StudyEvalData
) -> tuple[tuple[Tensor, Tensor] | None, dict[str, Any], dict[str, float]]:
    """The thief's training set and test sets for one volume row (``None``: nothing to train on).

    Returns:
        ``(train, tests, measures)``: train ``(x, y)`` or ``None``; tests ``{"original_test": ...,
        "encrypted_test": ...}``; for the averaging rows ``measures["perturbation_kept"]``, the share of the
        perturbation's L2 norm on the training studies' largest-tumor slices that the filter leaves
        (filtered shared minus filtered original, over shared minus original; 1 = untouched).
    """
    train_cases = [c for c in data.cases if c.split == "train"]
    tests: dict[str, Any] = {"original_test": data.clean_test, "encrypted_test": data.enc_test}
    images: list[np.ndarray] = []
    labels: list[int] = []
    measures: dict[str, float] = {}
    if thief.name == "neighbours":
        for c in train_cases:
            encrypted = np.flatnonzero(c.present & ~c.unencrypted)
            for z in np.flatnonzero(c.unencrypted):
                if encrypted.size and np.abs(encrypted - z).min() <= thief.param:
                    images.append(c.shared[z])
                    labels.append(c.label)
    elif thief.name == "all-slices":
        for c in train_cases:
            images += [c.shared[z] for z in np.flatnonzero(c.present)]
            labels += [c.label] * int(c.present.sum())
    else:
        window, how = int(thief.param or 3), thief.name
        kept = []
        for c in train_cases:
            filtered = through_plane(c.shared, c.present, c.largest, window, how)
            images.append(c.shared[c.largest] if filtered is None else filtered)
            labels.append(c.label)
            if filtered is not None:
                change = np.linalg.norm(c.shared[c.largest] - c.original[c.largest])
                same_filter = through_plane(c.original, c.present, c.largest, window, how)
                kept.append(np.linalg.norm(filtered - same_filter) / change if change > 0 else 1.0)
        if not kept:
            return None, tests, measures
        measures["perturbation_kept"] = round(float(np.mean(kept)), 4)
        test_cases = [c for c in data.cases if c.split == "test"]
        for name, which in (("original_test", "original"), ("encrypted_test", "shared")):
            slices = []
            for c in test_cases:  # the thief's own (original) test volumes are whole
                volume, present = getattr(c, which), np.ones_like(c.present) if which == "original" else c.present
                filtered = through_plane(volume, present, c.largest, window, how)
                slices.append(volume[c.largest] if filtered is None else filtered)
            tests[name] = (model_inputs(np.stack(slices), data.size), tests[name][1])
    if not images:
        return None, tests, measures
    return (model_inputs(np.stack(images), data.size), torch.tensor(labels)), tests, measures


def run_volume_row(
    thief: VolumeThief, context: RowContext, arch: str, recipe: TrainRecipe, progress: Any = None
) -> VictimResult:
    """One volume thief's model for one architecture and seed (:class:`medenc.security.rows.Row` runner).

    His training and test sets are built once per row (``context.transformed``); what he trained on
    (``train_images``, ``perturbation_kept``, or the note ``none available`` when nothing) goes into
    ``context.notes`` for the row's cells. With nothing to train on the result has no accuracies.
    """
    from medenc.learn.victims import VictimResult, train_and_score

    if thief.label not in context.transformed:
        train, tests, measures = thief_data(thief, context.data)  # type: ignore[arg-type]
        context.transformed[thief.label] = (train, tests)
        count = 0 if train is None else int(train[1].numel())
        context.notes[thief.label] = {"train_images": count, **measures}
        if train is None:
            context.notes[thief.label]["note"] = NONE_AVAILABLE
    train, tests = context.transformed[thief.label]
    if train is None:
        return VictimResult(recipe.seed, {})
    return train_and_score(arch, train, tests, context.num_classes, recipe, progress, watch=[ORIGINAL])


def volume_rows(thieves: list[VolumeThief]) -> list[Row]:
    """The rows of the thief who holds volumes, for :func:`medenc.security.evaluate.security_evaluate`."""
    return [Row(t.label, partial(run_volume_row, t)) for t in thieves]


def volume_entry(studies: str | Path, data: StudyEvalData) -> dict[str, Any]:
    """The report's ``volume`` entry: the shared studies and what they hold."""
    return {"studies": str(studies), "shared": sharing_summary(data)}


def sharing_summary(data: StudyEvalData) -> dict[str, Any]:
    """What the shared studies hold: slices, unencrypted ones, and how many of those hold tumor."""
    cases = data.cases
    return {
        "studies": len(cases),
        "slices_per_study": sorted({int(c.present.size) for c in cases}),
        "shared_slices": int(sum(c.present.sum() for c in cases)),
        "unencrypted_slices": int(sum(c.unencrypted.sum() for c in cases)),
        "unencrypted_slices_with_tumor": sum(
            int(c.report.get("sharing", {}).get("unencrypted_slices_with_tumor") or 0) for c in cases
        ),
        "slice_modes": sorted({str(c.report["slices"]["mode"]) for c in cases}),
        "coherent_slices": sorted({int(c.report.get("request", {}).get("coherent_slices", 1)) for c in cases}),
    }


def stored_fidelity(data: StudyEvalData) -> dict[str, Any]:
    """PSNR and SSIM of every encrypted slice in stored units, from the shared studies' reports."""
    rows = [r for c in data.cases for r in c.report.get("per_slice", [])]
    psnr = [r["psnr_db"] for r in rows if r.get("psnr_db") is not None]
    ssim = [r["ssim"] for r in rows if r.get("ssim") is not None]
    if not psnr or not ssim:
        return {}
    return {
        "stored": {
            "psnr_db_mean": float(np.mean(psnr)),
            "psnr_db_min": float(np.min(psnr)),
            "ssim_mean": float(np.mean(ssim)),
            "ssim_min": float(np.min(ssim)),
        }
    }


def volume_section(report: dict[str, Any]) -> list[str]:
    """The markdown lines of the volume thief: what was shared, every row's peak accuracy with its interval."""
    from medenc.learn.intervals import interval_text
    from medenc.reporting import markdown_table

    volume, n = report["volume"], report["counts"]["test"]
    shared = volume["shared"]
    rows = []
    for label in report["rows"]:
        cells = [label]
        for arch in report["archs"]:
            r = report["table"][label].get(arch)
            if r is None or r.get("original_test") is None:
                cells.append("not run" if r is None else r.get("note", "-"))
                continue
            peak = r.get("stats", {}).get(ORIGINAL, {}).get("peak")
            notes = [f"n train {r['train_images']}"] if "train_images" in r else []
            if "perturbation_kept" in r:
                notes.append(f"perturbation kept {r['perturbation_kept']:.0%}")
            text = interval_text(peak) if peak else f"{r['original_test']:.1%}"
            cells.append(text + (f" ({', '.join(notes)})" if notes else ""))
        rows.append(cells)
    return [
        "## The thief who holds volumes",
        "",
        f"Shared studies: `{volume['studies']}` ({shared['studies']} studies, {shared['shared_slices']} shared "
        f"slices, {shared['unencrypted_slices']} of them unencrypted, {shared['unencrypted_slices_with_tumor']} "
        f"unencrypted with tumor; slice modes {', '.join(shared['slice_modes'])}; through-plane coherence "
        f"{', '.join(map(str, shared['coherent_slices']))} slice(s)).",
        "",
        f"Peak accuracy on the {n} original test slices, mean over {len(report.get('seeds', [0]))} training "
        "seed(s) [95% interval]:",
        "",
        markdown_table(("thief", *report["archs"]), rows),
        "",
    ]
