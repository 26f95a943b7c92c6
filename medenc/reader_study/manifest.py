"""Read the clean and encrypted manifests, pair their test cases and pick the cases a reader study uses.

A manifest is a CSV file ``case_id,label,split,image``; ``image`` is a 2D NIfTI slice (shape ``(H, W)``
or ``(H, W, 1)``) given relative to the manifest's folder. The encrypted manifest lists the same
``case_id`` values with the same labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medenc.errors import InputError


@dataclass(frozen=True)
class StudyCase:
    """One test case: its id, true label and the two slice files (clean and encrypted)."""

    case_id: str
    label: str
    clean: Path
    encrypted: Path


def _one_per_case(manifest, rows) -> dict:
    """Rows by case id; several slices of one case are an error."""
    by_case: dict = {}
    for row in rows:
        if row.case_id in by_case:
            raise InputError(
                f"line {row.line}: case {row.case_id!r} has more than one slice "
                f"(line {by_case[row.case_id].line} too)",
                path=manifest.path,
                tip="a reader study shows one slice per case: use a manifest of one slice per case",
            )
        by_case[row.case_id] = row
    return by_case


def pair_test_cases(
    clean_manifest: str | Path, encrypted_manifest: str | Path
) -> tuple[list[StudyCase], tuple[str, ...]]:
    """Pair the clean manifest's ``split == test`` rows with the encrypted manifest's rows of the same id.

    Returns:
        The test cases sorted by ``case_id``, and the class names (the clean manifest's labels, sorted as
        :func:`medenc.experiment.dataset.sort_class_names` does).

    Raises:
        InputError: a bad manifest, no test rows, several slices for a case, a test case missing from the
            encrypted manifest, or labels that differ.
    """
    from medenc.experiment.dataset import read_manifest

    clean = read_manifest(clean_manifest)
    encrypted = read_manifest(encrypted_manifest, classes=clean.classes)
    tests = _one_per_case(clean, clean.subset("test").rows)
    if not tests:
        raise InputError("no rows with split == test", path=clean.path)
    others = {row.case_id: row for row in encrypted.rows if row.case_id in tests}
    _one_per_case(encrypted, [row for row in encrypted.rows if row.case_id in tests])
    cases = []
    for case_id in sorted(tests):
        row, other = tests[case_id], others.get(case_id)
        if other is None:
            raise InputError(
                f"test case {case_id!r} of the clean manifest is missing",
                path=encrypted.path,
                tip="pass the encrypted manifest made from the same clean manifest",
            )
        if other.label != row.label:
            raise InputError(
                f"line {other.line}: case {case_id!r} has label {other.label!r} here but {row.label!r} "
                "in the clean manifest",
                path=encrypted.path,
            )
        cases.append(StudyCase(case_id, row.label, row.path, other.path))
    return cases, clean.classes


def stratified_choice(labels: list[str], n: int, rng: np.random.Generator) -> list[int]:
    """Pick ``n`` indices so that each label keeps its share (largest remainder, at least one per label).

    Args:
        labels: the label of every candidate.
        n: how many to pick (1 <= n <= len(labels)).
        rng: random generator (seeded by the caller).

    Returns:
        The chosen indices, sorted.
    """
    if not 1 <= n <= len(labels):
        raise InputError(f"--cases must be between 1 and the {len(labels)} test cases; got {n}")
    classes = sorted(set(labels))
    members = {c: [i for i, label in enumerate(labels) if label == c] for c in classes}
    quota = {c: n * len(members[c]) / len(labels) for c in classes}
    take = {c: int(quota[c]) for c in classes}
    if n >= len(classes):  # every class is represented when there is room for it
        for c in classes:
            take[c] = max(take[c], 1)
    # hand out (or take back) the rest by largest remainder, ties broken by class name
    order = sorted(classes, key=lambda c: (-(quota[c] - int(quota[c])), c))
    while sum(take.values()) < n:
        c = next(c for c in order if take[c] < len(members[c]))
        take[c] += 1
        order.remove(c)
        order.append(c)
    while sum(take.values()) > n:
        c = max((c for c in classes if take[c] > 1), key=lambda c: (take[c] - quota[c], c))
        take[c] -= 1
    chosen: list[int] = []
    for c in classes:
        chosen.extend(int(i) for i in rng.choice(members[c], size=take[c], replace=False))
    return sorted(chosen)


def load_affine(path: Path) -> np.ndarray:
    """The slice's voxel -> RAS (mm) affine, read from its NIfTI header (sform, else qform, else pixdim).

    Shape:
        result: ``(4, 4)``.
    """
    import nibabel as nib

    try:
        return np.asarray(nib.load(str(path)).affine, dtype=float)
    except Exception as error:  # nibabel raises many types for broken files
        raise InputError(f"cannot read the NIfTI header ({type(error).__name__}: {error})", path=path) from error


def load_stored_slice(path: Path) -> np.ndarray:
    """One 2-D NIfTI slice as float32 native values, in the axis order the file stores them.

    The packets place it on screen from its own affine (:mod:`medenc.reader_study.orientation`), so the
    stored order is what they need (``medenc.experiment.dataset.load_slice`` gives the canonical view).

    Raises:
        InputError: unreadable file, not a 2-D slice, or non-finite values.

    Shape:
        result: ``(I, J)``, the file's first two axes.
    """
    import nibabel as nib

    try:
        image = nib.load(str(path))
        data = np.asarray(image.get_fdata(dtype=np.float32))
    except FileNotFoundError as error:
        raise InputError("image file not found", path=path) from error
    except Exception as error:  # nibabel raises many types for broken files
        raise InputError(f"cannot read NIfTI image ({type(error).__name__}: {error})", path=path) from error
    while data.ndim > 2 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 2:
        raise InputError(f"expected a 2D slice, got shape {tuple(image.shape)}", path=path)
    if not np.isfinite(data).all():
        raise InputError("image contains NaN or infinite values", path=path)
    return np.ascontiguousarray(data)
