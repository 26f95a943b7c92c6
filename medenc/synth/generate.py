"""Synthetic 5-class brain-tumour MRI data set on real anatomy (``medenc synth``).

Each case is the MNI ICBM152 2009a brain (shipped in the ``nilearn`` wheel) inside a synthetic head,
posed and deformed at random, with one tumour grown at a site its class favours, rendered with a
T1 post-contrast look (bias field, gamma, Rician noise) on an axial slab. It is **synthetic**: no
patient's data is in it, and it only imitates the task of the paper's private data set.

Library entry points: :func:`generate_case` (one volume in memory), :func:`plan_cases` (labels and
splits), :func:`write_dataset` (DICOM / NIfTI files plus ``manifest.csv``) and :func:`save_montage`.
See ``docs/synthetic-data.md``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medenc.errors import InputError
from medenc.synth.anatomy import MIN_SLICES, head_model, mni_coordinates, output_grid, sample
from medenc.synth.tumors import CLASSES, DIFFICULTIES, Difficulty, render, sample_tumour

#: Table 11 of the paper (train + test per class), in :data:`CLASSES` order.
PAPER_COUNTS: tuple[int, ...] = (879 + 219, 1149 + 287, 541 + 135, 1451 + 362, 233 + 58)
FORMATS = ("dicom", "nifti", "both")
MIN_SIZE, MAX_SIZE = 32, 1024
TEST_FRACTION = 0.2
MAX_VALUE = 4095  # 12-bit stored values


@dataclass(frozen=True)
class SynthCase:
    """One synthetic case.

    Attributes:
        volume: stored intensities, uint16, shape (W, W, S) in NIfTI axis order (column, row, slice);
            slices run from inferior to superior.
        mask: tumour mask, uint8 (0/1), same shape.
        affine: 4x4 voxel -> RAS (mm) matrix, as in NIfTI.
        label: class name.
        site: anatomical site the tumour was drawn at.
        head: voxels inside the head, bool, same shape.
    """

    volume: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    label: str
    site: str
    head: np.ndarray

    def largest_slice(self) -> int:
        """Axial index with the most tumour voxels."""
        return int(self.mask.sum(axis=(0, 1)).argmax())


def get_difficulty(difficulty: str | Difficulty) -> Difficulty:
    """Resolve a preset name ("easy", "paper", "hard") or pass a :class:`Difficulty` through."""
    if isinstance(difficulty, Difficulty):
        return difficulty
    if difficulty not in DIFFICULTIES:
        raise InputError(f"unknown difficulty {difficulty!r}", tip=f"use one of {', '.join(DIFFICULTIES)}")
    return DIFFICULTIES[difficulty]


def _check_size(size: int) -> None:
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise InputError(f"size {size} is out of range", tip=f"use an in-plane matrix of {MIN_SIZE} to {MAX_SIZE}")


def _mass_effect(coords: np.ndarray, centre: np.ndarray, radius: float, strength: float) -> np.ndarray:
    """Push tissue away from the tumour (volume-preserving radial displacement, fading out by 4 radii)."""
    out = coords.copy()
    reach = 4 * radius
    near = np.ones(coords.shape[1:], dtype=bool)
    for a in range(3):
        near &= np.abs(coords[a] - centre[a]) < reach
    pts = coords[:, near] - centre.astype(np.float32)[:, None]
    d = np.sqrt((pts * pts).sum(axis=0)) + np.float32(1e-3)
    src = np.cbrt(np.maximum(d**3 - strength * radius**3, 0))
    fade = np.clip((reach - d) / radius, 0, 1)
    scale = 1 + (src / d - 1) * fade
    out[:, near] = centre.astype(np.float32)[:, None] + pts * scale
    return out


def generate_case(
    label: str,
    rng: np.random.Generator,
    size: int = 128,
    difficulty: str | Difficulty = "paper",
    n_slices: int | None = None,
) -> SynthCase:
    """Generate one synthetic case of class ``label``.

    Args:
        label: one of :data:`CLASSES`.
        rng: source of every random choice (the same generator state gives the same case).
        size: in-plane matrix (``size x size``); the number of slices scales with it.
        difficulty: preset name or :class:`Difficulty`.
        n_slices: axial slices over the same slab (default: scales with ``size``, see below).

    Returns:
        The case; see :class:`SynthCase`.

    Shape:
        volume, mask, head: (size, size, n_slices) with n_slices = max(8, round(size * 36 / 128)).
    """
    if label not in CLASSES:
        raise InputError(f"unknown class {label!r}", tip=f"use one of {', '.join(CLASSES)}")
    _check_size(size)
    diff = get_difficulty(difficulty)
    model = head_model()
    grid = output_grid(size, n_slices)
    coords = mni_coordinates(grid, rng)
    tumour = sample_tumour(label, rng, diff, model)
    pushed = _mass_effect(coords, tumour.centre, tumour.radius, rng.uniform(0.3, 0.7))
    image = sample(model, pushed)
    head = sample(model, coords, model.head.astype(np.float32)) > 0.5

    lo, hi = tumour.bounds()
    sel = np.ones(coords.shape[1:], dtype=bool)
    for a in range(3):
        sel &= (coords[a] >= lo[a]) & (coords[a] <= hi[a])
    alpha, value, inside, tail = render(tumour, coords[:, sel].T, rng, edge=min(grid.spacing))
    in_head = head[sel]
    alpha, tail = alpha * in_head, tail * in_head
    part = image[sel] * (1 - tail) + tumour.tail_value * tail
    image[sel] = part * (1 - alpha) + value * alpha
    mask = np.zeros(image.shape, dtype=np.uint8)
    mask[sel] = inside & in_head
    if not mask.any():  # the pose pushed a tiny tumour between slices: keep its nearest voxel
        k = int(np.argmax(alpha))
        mask[tuple(np.argwhere(sel)[k])] = 1
    volume = _acquire(image, grid, rng, diff)
    return SynthCase(volume, mask, grid.affine.copy(), label, tumour.site, head)


def _acquire(image: np.ndarray, grid, rng: np.random.Generator, diff: Difficulty) -> np.ndarray:
    """Bias field, contrast (gamma), Rician noise and scanner gain: template scale -> uint16."""
    x, y, z = (np.asarray(a, dtype=np.float32) / 100 for a in grid.axes_ras())
    x, y, z = x[:, None, None], (y[None, :, None] + 0.18), z[None, None, :]
    c = rng.normal(0, 1, 9).astype(np.float32) * np.float32(0.1)
    log_bias = c[0] * x + c[1] * y + c[2] * z + c[3] * x * x + c[4] * y * y + c[5] * z * z
    log_bias = log_bias + c[6] * x * y + c[7] * y * z + c[8] * x * z
    gamma = rng.uniform(0.8, 1.25)
    signal = 255 * np.power(np.clip(image, 0, None) / 255, gamma) * np.exp(log_bias)
    sigma = diff.noise * 215 * rng.uniform(0.7, 1.3)
    real = signal + rng.normal(0, sigma, signal.shape).astype(np.float32)
    imag = rng.normal(0, sigma, signal.shape).astype(np.float32)
    rician = np.sqrt(real * real + imag * imag)
    gain = rng.uniform(10, 15)
    return np.clip(np.rint(rician * gain), 0, MAX_VALUE).astype(np.uint16)


def class_counts(cases: int, balanced: bool = False) -> list[int]:
    """Cases per class: Table 11 proportions (or equal), each class >= 2 when ``cases`` >= 10, else >= 1.

    Raises:
        InputError: fewer cases than classes.
    """
    k = len(CLASSES)
    if cases < k:
        raise InputError(f"--cases {cases} is fewer than the {k} classes", tip=f"ask for at least {k} cases")
    weights = np.ones(k) if balanced else np.asarray(PAPER_COUNTS, dtype=float)
    quota = cases * weights / weights.sum()
    floor_min = 2 if cases >= 2 * k else 1
    counts = np.maximum(np.floor(quota).astype(int), floor_min)
    while counts.sum() < cases:  # largest remainder first
        counts[int(np.argmax(quota - counts))] += 1
    while counts.sum() > cases:  # take back from the most over-served class that can spare one
        spare = np.where(counts > floor_min, counts - quota, -np.inf)
        counts[int(np.argmax(spare))] -= 1
    return [int(c) for c in counts]


def plan_cases(cases: int, seed: int, balanced: bool = False) -> list[tuple[str, str, str]]:
    """``(case_id, label, split)`` per case: stratified 80/20 split, case order shuffled by ``seed``."""
    rng = np.random.default_rng([seed, 0x5EED])
    rows: list[tuple[str, str]] = []
    for label, n in zip(CLASSES, class_counts(cases, balanced), strict=True):
        n_test = 0 if n < 2 else min(max(1, round(TEST_FRACTION * n)), n - 1)
        splits = ["test"] * n_test + ["train"] * (n - n_test)
        rows += [(label, s) for s in rng.permutation(splits)]
    order = rng.permutation(len(rows))
    return [(f"synth{i + 1:05d}", *rows[j]) for i, j in enumerate(order)]


def case_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of case number ``index`` (0-based) of a data set with ``seed``."""
    return np.random.default_rng([seed, index])


def check_args(
    cases: int, seed: int, size: int, fmt: str, difficulty: str | Difficulty, n_slices: int | None = None
) -> None:
    """Raise :class:`InputError` for arguments :func:`write_dataset` would refuse."""
    if n_slices is not None and not MIN_SLICES <= n_slices <= MAX_SIZE:
        raise InputError(f"{n_slices} slices is out of range", tip=f"use {MIN_SLICES} to {MAX_SIZE} axial slices")
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}", tip=f"use one of {', '.join(FORMATS)}")
    if seed < 0:
        raise InputError(f"seed {seed} is negative", tip="use a seed >= 0")
    _check_size(size)
    get_difficulty(difficulty)
    class_counts(cases)


def write_dataset(
    out: str | Path,
    cases: int,
    seed: int = 0,
    size: int = 128,
    fmt: str = "dicom",
    balanced: bool = False,
    difficulty: str = "paper",
    progress: Callable[[int, int], None] | None = None,
    *,
    force: bool = False,
    n_slices: int | None = None,
    uid_root: str | None = None,
) -> Path:
    """Generate ``cases`` cases and write them under ``out`` (built in a temporary folder, then renamed).

    Layout: ``<case_id>/dicom/IM0001.dcm ...`` and/or ``<case_id>/image.nii.gz``, ``<case_id>/mask.nii.gz``,
    ``manifest.csv`` (``case_id,label,split,image,mask``, paths relative to it; with ``both`` the image
    is the DICOM folder), ``dataset.json`` (parameters, classes, counts) and ``README.txt``.

    Args:
        out: the data set folder; an existing non-empty one needs ``force``.
        cases: number of cases (>= number of classes).
        seed: seed of everything (labels, splits, cases, UIDs).
        size: in-plane matrix.
        fmt: "dicom", "nifti" or "both".
        balanced: equal classes instead of the paper's Table 11 proportions.
        difficulty: "easy", "paper" or "hard".
        progress: called with ``(done, total)`` after each case.
        force: replace an existing ``out``.
        n_slices: axial slices per case over the same slab (default: scales with ``size``).
        uid_root: the organisation's UID root of the DICOM UIDs (default: pydicom's).

    Returns:
        Path of ``manifest.csv``.
    """
    from medenc.atomic import atomic_directory
    from medenc.io.dicom_new import write_nifti, write_series

    check_args(cases, seed, size, fmt, difficulty, n_slices)
    plan = plan_cases(cases, seed, balanced)
    dataset_key = f"{seed}|{cases}|{size}|{difficulty}|{int(balanced)}" + (f"|{n_slices}" if n_slices else "")
    out = Path(out)
    rows = []
    with atomic_directory(out, force=force) as tmp:
        for index, (case_id, label, split) in enumerate(plan):
            case = generate_case(label, case_rng(seed, index), size, difficulty, n_slices)
            folder = tmp / case_id
            folder.mkdir()
            image = f"{case_id}/image.nii.gz"
            if fmt in ("nifti", "both"):
                write_nifti(folder / "image.nii.gz", case.volume, case.affine)
            if fmt in ("dicom", "both"):
                write_series(folder / "dicom", case.volume, case.affine, case_id=case_id,
                             number=index + 1, dataset_key=dataset_key, uid_root=uid_root)
                image = f"{case_id}/dicom"
            write_nifti(folder / "mask.nii.gz", case.mask, case.affine)
            rows.append((case_id, label, split, image, f"{case_id}/mask.nii.gz"))
            if progress is not None:
                progress(index + 1, len(plan))
        _write_index(tmp, rows, dict(cases=cases, seed=seed, size=size, format=fmt, balanced=balanced,
                                     difficulty=difficulty), n_slices)
    return out / "manifest.csv"


def _write_index(folder: Path, rows: list[tuple[str, ...]], params: dict, n_slices: int | None = None) -> None:
    from medenc import __version__

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["case_id", "label", "split", "image", "mask"])
    writer.writerows(rows)
    (folder / "manifest.csv").write_text(buf.getvalue(), encoding="utf-8")
    counts = {c: {s: sum(r[1] == c and r[2] == s for r in rows) for s in ("train", "test")} for c in CLASSES}
    info = {"synthetic": True, "generator": f"medenc {__version__} synth", **params, "classes": list(CLASSES),
            "counts": counts, "slices": int(output_grid(params["size"], n_slices).n_slices)}
    (folder / "dataset.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    (folder / "README.txt").write_text(
        "SYNTHETIC DATA - not from any patient.\n"
        "Brain anatomy: MNI ICBM152 2009a template (nilearn); head, skull base and tumours are simulated\n"
        "by medenc synth (see docs/synthetic-data.md). Labels and splits: manifest.csv.\n",
        encoding="utf-8",
    )


def class_examples(
    cases: int, seed: int = 0, size: int = 128, difficulty: str = "paper", balanced: bool = False
) -> list[SynthCase]:
    """The first case of each class of the data set :func:`write_dataset` makes with these arguments."""
    plan = plan_cases(cases, seed, balanced)
    first = {label: i for i, (_, label, _) in reversed(list(enumerate(plan)))}
    return [generate_case(label, case_rng(seed, first[label]), size, difficulty) for label in CLASSES]


def save_montage(cases: list[SynthCase], path: str | Path) -> Path:
    """PNG of each case's largest-tumour axial slice, titled with its class (tumour outlined on a copy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medenc.atomic import atomic_write_bytes

    fig, axes = plt.subplots(2, len(cases), figsize=(2.6 * len(cases), 5.6), squeeze=False)
    for col, case in enumerate(cases):
        k = case.largest_slice()
        img, msk = case.volume[:, :, k].T, case.mask[:, :, k].T  # rows = anterior -> posterior
        for row in range(2):
            ax = axes[row, col]
            ax.imshow(img, cmap="gray", vmin=0, vmax=np.percentile(img, 99.5))
            if row == 1:
                ax.contour(msk, levels=[0.5], colors="red", linewidths=0.8)
            ax.set_axis_off()
        axes[0, col].set_title(case.label.replace("_", " "), fontsize=10)
    fig.suptitle("medenc synth: SYNTHETIC cases (largest-tumour axial slice; bottom: mask outline)", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
