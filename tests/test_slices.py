"""largest_tumor_slice and friends: counts, ties, axes, torch input, empty masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medenc.core.slices import largest_tumor_slice, select_slices, tumor_area_per_slice, tumor_slices
from medenc.errors import InputError


def test_largest_slice_along_each_axis() -> None:
    mask = np.zeros((5, 6, 7), dtype=bool)
    mask[3, 1:4, 1:4] = True  # 9 voxels in z=3
    mask[1, 2, 2] = True
    assert largest_tumor_slice(mask) == 3
    assert tumor_area_per_slice(mask).tolist() == [0, 1, 0, 9, 0]
    assert largest_tumor_slice(mask, axis=1) == 2  # y=2: 3 + 1 voxels
    assert largest_tumor_slice(mask, axis=-1) == 2
    assert tumor_slices(mask) == [1, 3]


def test_ties_go_to_the_central_tied_slice() -> None:
    mask = np.zeros((9, 4, 4), dtype=np.uint8)
    mask[2:7, 1, 1] = 1  # five tied slices 2..6
    assert largest_tumor_slice(mask) == 4
    mask[6, 1, 1] = 0  # four tied: 2..5 -> lower middle 3
    assert largest_tumor_slice(mask) == 3


def test_labels_and_torch_tensors() -> None:
    labels = torch.zeros(4, 3, 3, dtype=torch.int64)
    labels[2] = 2
    labels[1, 0, 0] = 1
    assert largest_tumor_slice(labels) == 2


def test_empty_mask_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="empty mask"):
        largest_tumor_slice(np.zeros((3, 3, 3)))
    with pytest.raises(InputError, match="empty mask"):
        select_slices(np.zeros((3, 3, 3)), "tumor")


def test_select_slices_modes() -> None:
    mask = np.zeros((4, 2, 2), bool)
    mask[1, 0, 0] = mask[2] = True
    assert select_slices(mask) == [2]
    assert select_slices(mask, "tumor") == [1, 2]
    assert select_slices(mask, "all") == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="mode"):
        select_slices(mask, "some")
