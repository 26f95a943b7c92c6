"""Modality LUTs: stored pixel values -> native values through a table instead of a rescale.

A DICOM image may map its stored values to output units (Hounsfield units, or any modality's units)
with a Modality LUT Sequence (0028,3000) instead of Rescale Slope/Intercept. medenc reads the table
(:func:`modality_lut`), works on the native values it gives, and writes back the stored value whose
table entry is nearest to each new native value; the table itself is copied into the derived file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medenc.errors import InputError
from medenc.io.limits import shown


@dataclass(frozen=True, eq=False)
class ModalityLUT:
    """A DICOM Modality LUT: native value = ``table[stored - first]`` (ends held beyond the table).

    Any table is handled, monotonic or not: the inverse takes, for each native value, the stored value
    whose table entry is nearest (the smaller entry on a tie,
    the lowest stored value among equal entries), so a written value re-reads as the
    table entry nearest to what was asked.

    Attributes:
        first: the first stored value the table maps (LUT Descriptor value 2).
        table: the native value of each stored value ``first, first + 1, ...``.

    Shape:
        table: (N,).
    """

    first: int
    table: np.ndarray

    def to_native(self, stored: np.ndarray) -> np.ndarray:
        """Native values (float64) of stored values; below ``first`` the first entry, past the end the last."""
        index = np.clip(stored.astype(np.int64) - self.first, 0, len(self.table) - 1)
        return self.table[index]

    def _allowed(self, lo: float, hi: float, floor: float) -> tuple[np.ndarray, np.ndarray]:
        """Stored values in ``[lo, hi]`` the table maps to a native value >= ``floor``, and those values."""
        start, stop = max(int(np.ceil(lo)), self.first), min(int(np.floor(hi)), self.first + len(self.table) - 1)
        stored = np.arange(start, stop + 1, dtype=np.int64)
        native = self.table[stored - self.first]
        keep = native >= floor - 1e-9 * max(1.0, abs(floor)) if np.isfinite(floor) else np.ones(len(native), bool)
        if not keep.any():  # cannot happen for a floor taken from the source, which the table produced
            keep[:] = True
        return stored[keep], native[keep]

    def to_stored(self, native: np.ndarray, lo: float, hi: float, floor: float) -> np.ndarray:
        """The stored value (int64) in ``[lo, hi]`` whose native value is nearest, never below ``floor``."""
        stored, values = self._allowed(lo, hi, floor)
        order = np.argsort(values, kind="stable")
        stored, values = stored[order], values[order]
        x = native.astype(np.float64)
        right = np.clip(np.searchsorted(values, x), 0, len(values) - 1)
        left = np.clip(right - 1, 0, len(values) - 1)
        nearer_left = np.abs(x - values[left]) <= np.abs(values[right] - x)
        return np.where(nearer_left, stored[left], stored[right])

    def native_range(self, lo: float, hi: float, floor: float) -> tuple[float, float]:
        """Smallest and largest native value a stored value in ``[lo, hi]`` maps to (low not below floor)."""
        _, values = self._allowed(lo, hi, floor)
        return float(values.min()), float(values.max())

    def step(self, lo: float, hi: float) -> float:
        """Mean native change per stored unit over ``[lo, hi]`` (exact for a linear table)."""
        _, values = self._allowed(lo, hi, -np.inf)
        return 0.0 if len(values) < 2 else float((values.max() - values.min()) / (len(values) - 1))

    def same_as(self, other: ModalityLUT | None) -> bool:
        """Whether ``other`` is the same table."""
        return other is not None and other.first == self.first and np.array_equal(other.table, self.table)


def modality_lut(path: Path, ds: Any) -> ModalityLUT | None:
    """The Modality LUT of a dataset (first item of ModalityLUTSequence), or ``None`` if it has none.

    Raises:
        InputError: a sequence with no item, or a table pydicom cannot apply (damaged descriptor or data).
    """
    sequence = ds.get("ModalityLUTSequence")
    if sequence is None:
        return None
    if len(sequence) == 0 or "LUTDescriptor" not in sequence[0] or "LUTData" not in sequence[0]:
        raise InputError("the Modality LUT Sequence has no LUT Descriptor and LUT Data", shown(path))
    from pydicom.pixels import apply_modality_lut

    descriptor = [int(v) for v in sequence[0].LUTDescriptor]
    entries = descriptor[0] or 65536
    first = descriptor[1]
    if int(ds.get("PixelRepresentation", 0)) == 1 and first > 32767:  # SS in a US descriptor
        first -= 65536
    try:
        table = apply_modality_lut(np.arange(first, first + entries), ds).astype(np.float64)
    except Exception as exc:  # pydicom raises several types for a damaged LUT
        raise InputError(f"cannot apply the Modality LUT ({type(exc).__name__}: {exc})", shown(path)) from exc
    if table.shape != (entries,) or not np.all(np.isfinite(table)):
        raise InputError(f"the Modality LUT does not hold {entries} finite entries", shown(path))
    return ModalityLUT(first=first, table=table)
