"""MONAI adapters: a reader, array transforms and their dictionary wrappers, following MONAI's contracts.

A pipeline (see ``docs/monai-pipeline.md``)::

    Compose([
        LoadImaged(["image", "label"], reader=MedencReader()),
        EnsureChannelFirstd(["image", "label"]),
        LargestTumorSliced(["image", "label"], source_key="label"),
        AdversarialEncryptd("image", label_key="class", model="model.pt", key="key.json"),
        SaveDerivedd("image", output_dir="shared/"),
    ])

MONAI arrays are channel-first with spatial axes in (x, y, z) order; :class:`LargestTumorSlice`
returns the axial slice as ``(C, rows, columns)`` = ``(C, y, x)``, the layout of
``Volume.voxels[k]`` that medenc's models are trained on. It is invertible (``Compose.inverse`` and
``Invertd`` put the slice back into its volume) and keeps the transform records and the slice's true
position in the MetaTensor meta. :class:`AdversarialEncrypt` takes single items and collated batches.
:class:`SaveDerived` writes a derived DICOM series (or NIfTI file) of the source the image was loaded
from, matching the grids by their affines.
"""

from __future__ import annotations

from medenc.transforms.encrypt import AdversarialEncrypt, AdversarialEncryptd
from medenc.transforms.reader import MedencReader
from medenc.transforms.save import SaveDerived, SaveDerivedd
from medenc.transforms.slicing import SLICE_META, LargestTumorSlice, LargestTumorSliced, slice_to_volume

__all__ = [
    "SLICE_META",
    "AdversarialEncrypt",
    "AdversarialEncryptd",
    "LargestTumorSlice",
    "LargestTumorSliced",
    "MedencReader",
    "SaveDerived",
    "SaveDerivedd",
    "slice_to_volume",
]
