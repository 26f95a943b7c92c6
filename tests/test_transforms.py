"""MONAI adapters: the Compose pipeline of docs/monai-pipeline.md, array == dict transforms."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd

from medenc.io import read_image
from medenc.study.encrypt import encrypt_volume
from medenc.transforms import (
    AdversarialEncrypt,
    AdversarialEncryptd,
    LargestTumorSlice,
    LargestTumorSliced,
    MedencReader,
    SaveDerivedd,
)
from tests.helpers import SMALL_INPUT, TUMOR_Z, make_series, phantom, ras_affine, save, tiny_encryptor


@pytest.fixture
def study(tmp_path: Path) -> tuple[Path, Path]:
    """A sagittal DICOM series and a NIfTI tumor mask on its (canonical) grid."""
    stored, mask = phantom()
    make_series(tmp_path / "T1", stored, "sagittal", spacing=(2.0, 1.0, 1.5))
    volume = read_image(tmp_path / "T1")
    nib.save(nib.Nifti1Image(mask.transpose(2, 1, 0).astype(np.uint8), volume.affine), tmp_path / "tumor.nii.gz")
    return tmp_path / "T1", tmp_path / "tumor.nii.gz"


def pipeline(encryptor, output_dir: Path) -> Compose:
    return Compose(
        [
            LoadImaged(["image", "label"], reader=MedencReader()),
            EnsureChannelFirstd(["image", "label"]),
            LargestTumorSliced(["image", "label"], source_key="label"),
            AdversarialEncryptd(
                "image",
                label_key="class",
                model=encryptor.model,
                key=encryptor.key,
                preprocess=SMALL_INPUT,
                device="cpu",
                precision="fp32",
            ),
            SaveDerivedd("image", output_dir=output_dir, series_description="T1 encrypted"),
        ]
    )


def test_compose_pipeline_writes_the_encrypted_slice_as_a_derived_series(study, tmp_path: Path) -> None:
    series, mask_path = study
    encryptor = tiny_encryptor(steps=3)
    out = pipeline(encryptor, tmp_path / "shared")({"image": str(series), "label": str(mask_path), "class": "b"})

    assert out["slice_index"] == TUMOR_Z
    image = out["image"]
    assert isinstance(image, MetaTensor) and image.shape == (1, 12, 10)  # (C, Y, X) of the axial slice
    written = [Path(p) for p in image.meta["medenc_written"]]
    assert len(written) == 10  # a sagittal series: every file holds one row of the axial slice
    assert all(pydicom.dcmread(p).SeriesDescription == "T1 encrypted" for p in written)

    source = read_image(series)
    again = read_image(written[0].parent)
    expected = source.voxels.copy()
    expected[TUMOR_Z] = image[0].numpy()
    assert np.array_equal(again.voxels, source.quantize(expected))
    assert not np.array_equal(again.voxels[TUMOR_Z], source.voxels[TUMOR_Z])
    others = np.arange(source.shape[0]) != TUMOR_Z
    assert np.array_equal(again.voxels[others], source.voxels[others])

    # the same slice through the Volume API
    direct = encrypt_volume(source, encryptor, "b", slices=[TUMOR_Z], preprocess=SMALL_INPUT)
    np.testing.assert_allclose(direct[TUMOR_Z], image[0].numpy(), rtol=0, atol=1e-3)


def test_array_and_dict_transforms_agree(study) -> None:
    series, mask_path = study
    load = Compose([LoadImaged(["image", "label"], reader=MedencReader()), EnsureChannelFirstd(["image", "label"])])
    data = load({"image": str(series), "label": str(mask_path), "class": 1})
    encryptor = tiny_encryptor(steps=2)

    slicer = LargestTumorSlice()
    by_array = slicer(data["image"], data["label"])
    by_dict = LargestTumorSliced(["image", "label"], source_key="label")(data)
    assert slicer.index(data["label"]) == by_dict["slice_index"] == TUMOR_Z
    assert torch.equal(by_array.as_tensor(), by_dict["image"].as_tensor())
    numpy_slice = slicer(data["image"].numpy(), data["label"].numpy())
    assert np.array_equal(numpy_slice, by_array.numpy())

    kwargs = {
        "model": encryptor.model,
        "key": encryptor.key,
        "preprocess": SMALL_INPUT,
        "device": "cpu",
        "precision": "fp32",
    }
    array_out = AdversarialEncrypt(**kwargs)(by_array, 1)
    dict_out = AdversarialEncryptd("image", label_key="class", **kwargs)(by_dict)["image"]
    assert torch.equal(array_out.as_tensor(), dict_out.as_tensor())
    assert array_out.meta["medenc_slice_index"] == TUMOR_Z
    # batches: (N, C, H, W) with one label per image; plain tensors carry no meta, so bounds are given
    # (the same valid range the reader put in the slice's meta: the source's stored min and max)
    batch = torch.stack([by_array.as_tensor(), by_array.as_tensor()])
    bounds = (by_array.meta["medenc_bounds_low"], by_array.meta["medenc_bounds_high"])
    bounded = AdversarialEncrypt(**kwargs, bounds=bounds)
    assert torch.allclose(bounded(batch, [1, 1])[1], array_out.as_tensor())


def test_monai_nibabel_reader_with_orientation_and_nifti_output(tmp_path: Path) -> None:
    stored, mask = phantom()
    image_path = save(tmp_path / "t1.nii.gz", stored.transpose(2, 1, 0).astype(np.int16), ras_affine())
    nib.save(nib.Nifti1Image(mask.transpose(2, 1, 0).astype(np.uint8), ras_affine()), tmp_path / "m.nii.gz")
    encryptor = tiny_encryptor(steps=2)
    flow = Compose(
        [
            LoadImaged(["image", "label"]),  # MONAI's own NIfTI reader
            EnsureChannelFirstd(["image", "label"]),
            Orientationd(["image", "label"], axcodes="LPS"),
            LargestTumorSliced(["image", "label"], source_key="label"),
            AdversarialEncryptd(
                "image", "class", encryptor.model, encryptor.key, SMALL_INPUT, device="cpu", bounds=(-32768, 32767)
            ),
            SaveDerivedd("image", output_dir=tmp_path / "out"),
        ]
    )
    out = flow({"image": str(image_path), "label": str(tmp_path / "m.nii.gz"), "class": 2})
    (written,) = out["image"].meta["medenc_written"]
    assert written.endswith("t1_medenc.nii.gz")
    k = out["slice_index"]
    source, again = read_image(image_path), read_image(written)
    assert k == TUMOR_Z
    expected = source.voxels.copy()
    expected[k] = out["image"][0].numpy()
    # a NIfTI output of one slice holds just that slice, placed where it was
    assert again.shape == (1, *source.shape[1:])
    assert np.array_equal(again.voxels[0], source.quantize(expected)[k])
    np.testing.assert_allclose(again.affine @ [0, 0, 0, 1], source.affine @ [0, 0, k, 1], atol=1e-5)


def test_the_docs_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    doc = (Path(__file__).parents[1] / "docs" / "monai-pipeline.md").read_text()
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/monai-pipeline.md", "exec"), {"__name__": "docs_example"})
    printed = capsys.readouterr().out
    assert "largest tumor slice: 1" in printed
    assert "shared/CT5N_medenc/IM00001.dcm" in printed
    derived = pydicom.dcmread(tmp_path / "shared/CT5N_medenc/IM00001.dcm")
    assert derived.SeriesDescription == "CT encrypted" and derived.ImageType[:2] == ["DERIVED", "SECONDARY"]
