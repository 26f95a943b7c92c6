"""What a shared study may hold: encrypted slices only, unless original slices are allowed explicitly.

``medenc encrypt-study`` encrypts every axial slice by default (``--slices all``), so the derived series
is a complete volume with no original pixels. With ``--slices largest`` or ``tumor`` only the encrypted
slices are written; the slices that are not encrypted are left out. ``--allow-original-slices`` writes
them too, with their original pixels (the complete volume of medenc 0.1): it is recorded in
``report.json`` under ``sharing`` and given as a warning that counts them, and how many of them hold
tumor per the mask. See ``docs/encrypt-study.md``, "Sharing modes".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medenc.errors import InputError


@dataclass(frozen=True)
class SharingPlan:
    """Which canonical axial slices are written, and how many of them carry original pixels.

    Attributes:
        write: canonical slices to write (``None``: the whole volume).
        unencrypted: canonical slices written with their original pixels.
        unencrypted_with_tumor: those of them that hold tumor per the mask (``None`` without a mask).
        omitted: canonical slices not written at all.
    """

    write: list[int] | None
    unencrypted: list[int]
    unencrypted_with_tumor: list[int] | None
    omitted: list[int]

    def summary(self, allow_original_slices: bool) -> dict[str, Any]:
        """The ``sharing`` entry of ``report.json``."""
        return {
            "allow_original_slices": allow_original_slices,
            "unencrypted_slices_written": len(self.unencrypted),
            "unencrypted_slices": self.unencrypted,
            "unencrypted_slices_with_tumor": (
                None if self.unencrypted_with_tumor is None else len(self.unencrypted_with_tumor)
            ),
            "slices_left_out": len(self.omitted),
        }

    def warning(self) -> str | None:
        """The warning printed when original slices are written (``None`` when there are none)."""
        if not self.unencrypted:
            return None
        tumor = (
            "the mask was not given, so slices holding tumor cannot be counted"
            if self.unencrypted_with_tumor is None
            else f"{len(self.unencrypted_with_tumor)} of them hold tumor per the mask"
        )
        return (
            f"--allow-original-slices: wrote {len(self.unencrypted)} unencrypted slice(s) with their original pixels "
            f"({tumor}); a model trained on them learns the real images, so they are not protected"
        )


def plan_sharing(
    volume: Any, selected: list[int], tumor: np.ndarray | None, *, allow_original_slices: bool, source: Any = None
) -> SharingPlan:
    """Decide what is written for the ``selected`` (encrypted) slices; validate before any PGD.

    Args:
        volume: the source :class:`medenc.io.Volume`.
        selected: canonical axial slices that will be encrypted.
        tumor: the tumor mask on the volume's grid, or ``None``.
        allow_original_slices: write the other slices with their original pixels.
        source: the path named in errors.

    Raises:
        InputError: the output cannot leave the unencrypted slices out: a sagittal or coronal series
            (every stored file holds a row of every axial slice), or a NIfTI file whose selected slices
            are not one block.

    Shape:
        tumor: (Z, Y, X) like ``volume.voxels``.
    """
    total = int(volume.shape[0])
    chosen = sorted(int(i) for i in selected)
    others = [i for i in range(total) if i not in set(chosen)]
    if allow_original_slices or not others:
        with_tumor = [] if not others else None if tumor is None else [i for i in others if np.any(tumor[i])]
        return SharingPlan(write=None, unencrypted=others, unencrypted_with_tumor=with_tumor, omitted=[])
    tip = "use --slices all (the default: every slice encrypted) or, knowingly, --allow-original-slices"
    if volume.layout.slice_axis != 0:
        raise InputError(
            "a sagittal or coronal series: every stored file holds a row of every axial slice, so the slices "
            "that are not encrypted cannot be left out",
            source,
            tip=tip,
        )
    stored = volume.layout.stored_slices_of(np.asarray(chosen))
    if volume.format == "nifti" and stored.size and stored.max() - stored.min() + 1 != stored.size:
        raise InputError(
            "a NIfTI output holds one block of slices; the encrypted slices are not contiguous", source, tip=tip
        )
    return SharingPlan(write=chosen, unencrypted=[], unencrypted_with_tumor=[], omitted=others)
