"""Labelled slice data sets described by a manifest CSV.

A manifest has the columns ``case_id,label,split,image`` (more columns are allowed and ignored):
``label`` is a class name, ``split`` is ``train``, ``val`` or ``test``, and ``image`` is the path of a 2D
NIfTI slice (``(H, W)`` or ``(H, W, 1)``), relative to the manifest's folder. Class names come from the
manifest (sorted; numerically when every name is an integer) unless given explicitly, e.g. from a
model checkpoint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medenc.errors import InputError
from medenc.files import check_name
from medenc.io.tables import read_table

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from medenc.core.mapping import Preprocess

__all__ = [
    "REQUIRED_COLUMNS",
    "SPLITS",
    "Manifest",
    "ManifestRow",
    "load_images",
    "load_slice",
    "read_manifest",
    "sort_class_names",
]

REQUIRED_COLUMNS = ("case_id", "label", "split", "image")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ManifestRow:
    """One slice of a manifest.

    Attributes:
        case_id: the case (patient/study) the slice belongs to.
        label: class name.
        split: ``train``, ``val`` or ``test``.
        image: the path as written in the manifest (relative to its folder, or absolute).
        path: the resolved file path.
        line: line number in the CSV (the header is line 1), for error messages.
    """

    case_id: str
    label: str
    split: str
    image: str
    path: Path
    line: int


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: its rows and the class names in index order.

    Attributes:
        path: the CSV file.
        rows: the slices, in file order (possibly a subset, see :meth:`subset`).
        classes: class names; a label's class index is its position here.
    """

    path: Path
    rows: tuple[ManifestRow, ...]
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, split: str) -> Manifest:
        """The rows of one split (class names unchanged)."""
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        return replace(self, rows=tuple(r for r in self.rows if r.split == split))

    def labels(self) -> list[int]:
        """Class index of every row."""
        index = {name: i for i, name in enumerate(self.classes)}
        return [index[r.label] for r in self.rows]

    def fingerprint(self) -> str:
        """Short hex digest of the rows (as written) and the bytes of every image file.

        It identifies the data a model was trained on without revealing it: moving the folder keeps
        it, changing any label, split or pixel changes it.
        """
        digest = hashlib.sha256(b"medenc-data-v1\n")
        for row in self.rows:
            digest.update("\t".join((row.case_id, row.label, row.split, row.image)).encode("utf-8") + b"\n")
            file_hash = hashlib.sha256()
            try:
                with row.path.open("rb") as handle:
                    for block in iter(lambda h=handle: h.read(1 << 20), b""):
                        file_hash.update(block)
            except OSError as error:
                raise InputError(
                    f"line {row.line}: cannot read image {row.image!r} ({error.strerror})", path=self.path
                ) from error
            digest.update(file_hash.digest())
        return digest.hexdigest()[:16]


def sort_class_names(names: Iterable[str]) -> tuple[str, ...]:
    """Unique names in sorted order; numerically when all are integers (``"2"`` before ``"10"``)."""
    unique = set(names)
    if unique and all(n.lstrip("-").isdigit() for n in unique):
        return tuple(sorted(unique, key=int))
    return tuple(sorted(unique))


def read_manifest(path: str | Path, *, classes: Sequence[str] | None = None, check_files: bool = True) -> Manifest:
    """Read and validate a manifest CSV.

    Args:
        path: the CSV file.
        classes: class names in index order (e.g. from a checkpoint); every label must be one of them.
            If None, the manifest's labels, sorted.
        check_files: require every image file to exist.

    Returns:
        The validated manifest.

    Raises:
        InputError: unreadable file, missing columns, an empty field, an unknown split or label, a
            missing image file, or a case in more than one split; the message names the file and line.
    """
    path = Path(path)
    table = read_table(path, required=REQUIRED_COLUMNS, tip="the header must be case_id,label,split,image")
    rows: list[ManifestRow] = []
    for record in table:
        line, values = record.line, record.values
        check_name(values["case_id"], path, what=f"line {line}: case id")
        if values["split"] not in SPLITS:
            raise InputError(
                f"line {line}: unknown split {values['split']!r}; expected one of {', '.join(SPLITS)}",
                path=path,
            )
        image_path = Path(values["image"])
        if not image_path.is_absolute():
            image_path = path.parent / image_path
        if check_files and not image_path.is_file():
            raise InputError(f"line {line}: image file {values['image']!r} not found", path=path)
        rows.append(ManifestRow(values["case_id"], values["label"], values["split"], values["image"], image_path, line))

    if classes is None:
        names = sort_class_names(r.label for r in rows)
    else:
        names = tuple(str(c) for c in classes)
        if len(set(names)) != len(names):
            raise InputError(f"duplicate class names in {list(names)}")
        known = set(names)
        for row in rows:
            if row.label not in known:
                raise InputError(
                    f"line {row.line}: unknown label {row.label!r}; expected one of {', '.join(names)}",
                    path=path,
                )
    _check_case_splits(path, rows)
    return Manifest(path=path, rows=tuple(rows), classes=names)


def _check_case_splits(path: Path, rows: Sequence[ManifestRow]) -> None:
    first: dict[str, ManifestRow] = {}
    for row in rows:
        seen = first.setdefault(row.case_id, row)
        if seen.split != row.split:
            raise InputError(
                f"line {row.line}: case {row.case_id!r} is in split {row.split!r} but line {seen.line} "
                f"puts it in {seen.split!r}",
                path=path,
                tip="all slices of a case must be in one split (no leakage)",
            )


def load_slice(path: str | Path) -> np.ndarray:
    """Read one 2-D slice as float32 in native units, in medenc's canonical orientation.

    The slice is read with :func:`medenc.io.read_image`, so it comes out exactly as ``encrypt-study``,
    ``encrypt-dataset`` and the MONAI transforms hand slices to the model: an axial slice as rows from
    anterior to posterior and columns from the patient's right to left (LPS, the radiological display),
    whatever order the file stores its axes in. Training, encryption and evaluation therefore all see
    the same image (a model trained on transposed slices would be attacked on images it never saw).

    Raises:
        InputError: unreadable file, or not a single 2-D slice.

    Shape:
        result: (H, W).
    """
    import numpy as np

    from medenc.io import read_image

    volume = read_image(path)
    data = np.asarray(volume.voxels, dtype=np.float32)
    if data.ndim != 3 or data.shape[0] != 1:
        raise InputError(
            f"expected a 2D slice, got a volume of {data.shape[0]} slices of {data.shape[1]}x{data.shape[2]}",
            path=path,
            tip="a training manifest lists 2D slices; extract them from volumes first (medenc prepare)",
        )
    if not np.isfinite(data).all():
        raise InputError("image contains NaN or infinite values", path=path)
    return np.ascontiguousarray(data[0])


def load_images(
    rows: Sequence[ManifestRow] | Manifest, *, preprocess: Preprocess | None = None, progress: Any = None
) -> torch.Tensor:
    """Load slices as one float32 tensor, raw or mapped to model input.

    Args:
        rows: manifest rows (or a whole manifest).
        preprocess: if given, every slice is mapped to model input (resize + intensity window) as it is
            read, so slices of different sizes are fine; without it all slices must share one size.
        progress: a ``rich.progress.Progress`` (or anything with ``add_task``/``update``) to report to.

    Raises:
        InputError: an unreadable slice, or (without ``preprocess``) slices of different sizes.

    Shape:
        result: (N, 1, H, W) native, or (N, 1, *preprocess.size) model input.
    """
    import torch

    if isinstance(rows, Manifest):
        rows = rows.rows
    if not rows:
        raise InputError("no slices to load")
    images = []
    first_shape: tuple[int, ...] | None = None
    task = progress.add_task("loading slices", total=len(rows)) if progress is not None else None
    for row in rows:
        data = torch.from_numpy(load_slice(row.path))[None, None]
        if preprocess is not None:
            data = preprocess.to_model(data)
        elif first_shape is None:
            first_shape = tuple(data.shape)
        elif tuple(data.shape) != first_shape:
            raise InputError(
                f"slice is {tuple(data.shape[-2:])} but {rows[0].image!r} is {first_shape[-2:]}",
                path=row.path,
                tip="give a model input size to resize all slices",
            )
        images.append(data)
        if task is not None:
            progress.update(task, advance=1)
    return torch.cat(images, dim=0)
