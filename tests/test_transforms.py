"""MONAI adapters: the Compose pipeline of docs/monai-pipeline.md, array == dict transforms, and MONAI's contracts
(transform records and inverses, the slice's geometry for SaveImaged, DataLoader batches, allow_missing_keys)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor, decollate_batch
from monai.transforms import Compose, EnsureChannelFirstd, Invertd, LoadImaged, Orientationd, SaveImaged

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
    """Both Python examples of docs/monai-pipeline.md, the second building the pipeline from its Bundle config."""
    doc = (Path(__file__).parents[1] / "docs" / "monai-pipeline.md").read_text()
    blocks = [part.split("```", 1)[0] for part in doc.split("```python\n")[1:]]
    (config,) = [part.split("```", 1)[0] for part in doc.split("```yaml\n")[1:]]
    assert len(blocks) == 2 and "ConfigParser" in blocks[1]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "encrypt.yaml").write_text(config)
    namespace = {"__name__": "docs_example"}
    exec(compile(blocks[0], "docs/monai-pipeline.md", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "largest tumor slice: 1" in printed
    assert "shared/CT5N_medenc/IM00001.dcm" in printed
    derived = pydicom.dcmread(tmp_path / "shared/CT5N_medenc/IM00001.dcm")
    assert derived.SeriesDescription == "CT encrypted" and derived.ImageType[:2] == ["DERIVED", "SECONDARY"]

    exec(compile(blocks[1], "docs/monai-pipeline.md", "exec"), namespace)
    assert "written: ['shared-bundle/CT5N_medenc/IM00001.dcm']" in capsys.readouterr().out
    pipeline = namespace["pipeline"]
    assert [type(t).__name__ for t in pipeline.transforms][2:] == [
        "LargestTumorSliced",
        "AdversarialEncryptd",
        "SaveDerivedd",
    ]
    from_config = pydicom.dcmread(tmp_path / "shared-bundle/CT5N_medenc/IM00001.dcm")
    assert from_config.SeriesDescription == "CT encrypted" and from_config.ImageType[:2] == ["DERIVED", "SECONDARY"]
    again = read_image(tmp_path / "shared-bundle/CT5N_medenc")
    assert not np.array_equal(again.voxels[0], read_image(namespace["series"]).voxels[1])  # the slice was encrypted


# ------------------------------------------------------------------ MONAI's contracts: traces, geometry, batches
def _world_mismatches(written: Path, source: Path) -> int:
    """Voxels of the written (one-slice) NIfTI whose value differs from the source's voxel at the same world point."""
    out, src = nib.load(written), nib.load(source)
    values, source_values, to_source = out.get_fdata(), src.get_fdata(), np.linalg.inv(src.affine)
    values = values.reshape(values.shape[0], values.shape[1])
    bad = 0
    for i, j in np.ndindex(values.shape):
        voxel = np.round(to_source @ out.affine @ [i, j, 0, 1]).astype(int)[:3]
        bad += int(source_values[tuple(voxel)] != values[i, j])
    return bad


@pytest.fixture
def nifti_pair(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Path, Path]:
    """The issue's case (z from -63 mm in 5 mm steps: the tumor slice 6 lies at z = -33), stored in RAS
    (x, y, z) order, or (``request.param == "permuted"``) as (y flipped, z, x) on the same grid."""
    stored, mask = phantom()  # (Z, Y, X)
    affine = np.diag([1.0, 1.2, 5.0, 1.0])
    affine[:3, 3] = [-10.0, -20.0, -63.0]
    image, labels = stored.transpose(2, 1, 0), mask.transpose(2, 1, 0)  # (X, Y, Z)
    if getattr(request, "param", "ras") == "permuted":
        image, labels = image.transpose(1, 2, 0)[::-1], labels.transpose(1, 2, 0)[::-1]  # (Y reversed, Z, X)
        flip = np.eye(4)
        flip[0, 0], flip[0, 3] = -1.0, stored.shape[1] - 1
        affine = affine @ np.eye(4)[:, [1, 2, 0, 3]] @ flip
    image_path = save(tmp_path / "t1.nii.gz", np.ascontiguousarray(image).astype(np.int16), affine)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(labels).astype(np.uint8), affine), tmp_path / "m.nii.gz")
    return image_path, tmp_path / "m.nii.gz"


def monai_slicing() -> Compose:
    keys = ["image", "label"]
    return Compose(
        [
            LoadImaged(keys),  # MONAI's own NIfTI reader
            EnsureChannelFirstd(keys),
            Orientationd(keys, axcodes="LPS"),
            LargestTumorSliced(keys, source_key="label"),
        ]
    )


def test_slice_keeps_earlier_records_and_pushes_its_own(nifti_pair) -> None:
    image, mask = nifti_pair
    out = monai_slicing()({"image": str(image), "label": str(mask)})
    for key in ("image", "label"):
        assert [op["class"] for op in out[key].applied_operations] == ["Orientation", "LargestTumorSlice"]
    assert out["image"].applied_operations[-1]["extra_info"]["index"] == TUMOR_Z == out["slice_index"]


@pytest.mark.parametrize("nifti_pair", ["ras", "permuted"], indirect=True)
@pytest.mark.parametrize("resample", [False, True])
def test_save_imaged_writes_the_slice_at_its_true_position(nifti_pair, resample: bool, tmp_path: Path) -> None:
    image, mask = nifti_pair
    data = monai_slicing()({"image": str(image), "label": str(mask)})
    np.testing.assert_allclose(data["image"].affine[:3, 3].numpy(), [-1.0, -6.8, -33.0], atol=1e-4)  # LPS corner
    # the plane on the source file's grid, in the file's axis order: (x, y), or (y, x) for the permuted file
    assert data["image"].meta["spatial_shape"].tolist() == [s for s in nib.load(image).shape if s != 9]  # z: 9
    SaveImaged("image", output_dir=tmp_path / "saved", separate_folder=False, resample=resample)(data)
    (written,) = (tmp_path / "saved").iterdir()
    saved = nib.load(written)
    assert saved.shape in ((12, 10), (10, 12))
    assert saved.affine[2, 3] == pytest.approx(-33.0)  # the issue: -63, the volume's first slice
    assert _world_mismatches(written, image) == 0  # every pixel where it was in the volume


def test_compose_inverse_restores_the_source_geometry(tmp_path: Path) -> None:
    """LoadImaged -> EnsureChannelFirstd -> Orientationd -> slice -> encrypt, then Compose.inverse and Invertd."""
    stored, mask = phantom()
    affine = np.diag([1.0, 1.2, 5.0, 1.0])
    affine[:3, 3] = [-10.0, -20.0, -63.0]
    image = save(tmp_path / "t1.nii.gz", stored.transpose(2, 1, 0).astype(np.int16), affine)
    nib.save(nib.Nifti1Image(mask.transpose(2, 1, 0).astype(np.uint8), affine), tmp_path / "m.nii.gz")
    encryptor = tiny_encryptor(steps=2)
    encrypt = AdversarialEncryptd("image", "class", encryptor.model, encryptor.key, SMALL_INPUT, device="cpu")
    flow = Compose([*monai_slicing().transforms, encrypt])
    out = flow({"image": str(image), "label": str(tmp_path / "m.nii.gz"), "class": 1})
    assert out["image"].shape == (1, 12, 10)

    back = flow.inverse(out)
    for key in ("image", "label"):
        assert back[key].shape == (1, *stored.transpose(2, 1, 0).shape)
        np.testing.assert_allclose(back[key].affine.numpy(), affine, atol=1e-5)
        assert back[key].applied_operations == []
        assert back[key].meta["spatial_shape"].tolist() == [10, 12, 9]
        assert back[key].meta["pixdim"][1:4].tolist() == pytest.approx([1.0, 1.2, 5.0])
    volume = back["image"][0].numpy()  # (x, y, z) as stored
    np.testing.assert_array_equal(volume[:, :, TUMOR_Z], out["image"][0].numpy()[::-1, ::-1].T)  # LPS -> RAS
    assert not volume[:, :, np.arange(9) != TUMOR_Z].any()  # the other slices: the fill value
    np.testing.assert_array_equal(back["label"][0].numpy()[:, :, TUMOR_Z], mask[TUMOR_Z].T)

    # Invertd: a prediction on the slice goes back onto the source grid
    slicing = monai_slicing()
    data = slicing({"image": str(image), "label": str(tmp_path / "m.nii.gz")})
    data["pred"] = (data["label"] > 0).float()
    inverted = Invertd("pred", transform=slicing, orig_keys="label", nearest_interp=True)(data)
    assert inverted["pred"].shape == (1, 10, 12, 9)
    np.testing.assert_allclose(inverted["pred"].affine.numpy(), affine, atol=1e-5)
    np.testing.assert_array_equal(inverted["pred"][0].numpy() > 0, mask.transpose(2, 1, 0) * (np.arange(9) == TUMOR_Z))


def test_compose_inverse_with_the_medenc_reader(study) -> None:
    """A sagittal DICOM series read by MedencReader: the inverse gives back the loaded volume's grid."""
    series, mask_path = study
    load = Compose([LoadImaged(["image", "label"], reader=MedencReader()), EnsureChannelFirstd(["image", "label"])])
    flow = Compose([*load.transforms, LargestTumorSliced(["image", "label"], source_key="label", fill_value=-1)])
    volume = load({"image": str(series), "label": str(mask_path)})["image"]
    back = flow.inverse(flow({"image": str(series), "label": str(mask_path)}))["image"]
    assert back.shape == volume.shape and torch.equal(back.affine, volume.affine)
    assert torch.equal(back[..., TUMOR_Z], volume[..., TUMOR_Z]) and (back[..., :TUMOR_Z] == -1).all()


def test_dataloader_batch_through_encryptd(nifti_pair) -> None:
    """A batch collated by MONAI's DataLoader: one class per image, the same pixels as one by one, decollatable."""
    image, mask = nifti_pair
    items = [{"image": str(image), "label": str(mask), "class": c} for c in (0, 2)]
    encryptor = tiny_encryptor(steps=2)
    encrypt = AdversarialEncryptd(
        "image", "class", encryptor.model, encryptor.key, SMALL_INPUT, device="cpu", precision="fp32"
    )
    slicing = monai_slicing()  # the inverse needs the very transforms that ran (MONAI checks their ids)
    batch = next(iter(DataLoader(Dataset(items, transform=slicing), batch_size=2)))
    assert batch["image"].is_batch and batch["class"].tolist() == [0, 2]
    out = encrypt(batch)
    assert isinstance(out["image"], MetaTensor) and out["image"].is_batch and out["image"].shape == (2, 1, 12, 10)
    one_by_one = [encrypt(slicing(item))["image"] for item in items]
    for n, single in enumerate(one_by_one):
        torch.testing.assert_close(out["image"][n].as_tensor(), single.as_tensor(), rtol=0, atol=1e-3)
    assert not torch.equal(one_by_one[0].as_tensor(), one_by_one[1].as_tensor())  # each got its own class
    for n, item in enumerate(decollate_batch(out)):
        assert [op["class"] for op in item["image"].applied_operations] == ["Orientation", "LargestTumorSlice"]
        back = slicing.inverse(item)["image"]
        assert back.shape == (1, 10, 12, 9) and back.applied_operations == []
        torch.testing.assert_close(back[0, :, :, TUMOR_Z].T, one_by_one[n][0].as_tensor().flip(0, 1), rtol=0, atol=1e-3)


def test_allow_missing_keys(nifti_pair) -> None:
    image, mask = nifti_pair
    data = monai_slicing()({"image": str(image), "label": str(mask), "class": 1})
    encryptor = tiny_encryptor(steps=1)
    kwargs = {"model": encryptor.model, "key": encryptor.key, "preprocess": SMALL_INPUT, "device": "cpu"}
    with pytest.raises(KeyError):
        AdversarialEncryptd(["image", "pred"], "class", **kwargs)(data)
    out = AdversarialEncryptd(["image", "pred"], "class", allow_missing_keys=True, **kwargs)(data)
    assert "pred" not in out and not torch.equal(out["image"], data["image"])
    volume = Compose(monai_slicing().transforms[:3])({"image": str(image), "label": str(mask)})
    with pytest.raises(KeyError):
        LargestTumorSliced(["image", "pred"], source_key="label")(volume)
    sliced = LargestTumorSliced(["image", "pred"], source_key="label", allow_missing_keys=True)(volume)
    assert sliced["image"].shape == (1, 12, 10) and "pred" not in sliced
    assert LargestTumorSliced("pred", allow_missing_keys=True)({"x": 1}) == {"x": 1}
    with pytest.raises(KeyError, match="'label'"):  # a sliced key is there, the mask that picks the slice is not
        LargestTumorSliced("image", source_key="label")({"image": volume["image"]})


def test_slicing_leaves_the_input_untouched(nifti_pair) -> None:
    image, mask = nifti_pair
    volume = Compose(monai_slicing().transforms[:3])({"image": str(image), "label": str(mask)})
    pixdim, records = volume["image"].meta["pixdim"].copy(), len(volume["image"].applied_operations)
    sliced = LargestTumorSliced(["image", "label"], source_key="label")(volume)
    assert np.array_equal(volume["image"].meta["pixdim"], pixdim) and len(volume["image"].applied_operations) == records
    assert volume["image"].shape == (1, 10, 12, 9)
    assert sliced["image"].meta["pixdim"][1:4].tolist() == pytest.approx([1.2, 1.0, 5.0])  # rows, columns, normal


def test_a_resampled_volume_gives_the_slice_its_own_grid_as_original(nifti_pair, tmp_path: Path) -> None:
    """After Spacingd the plane is no slice of the file's grid: original_affine/spatial_shape are the slice's own,
    and SaveImaged(resample=True) still writes it where it lies."""
    from monai.transforms import Spacingd

    image, mask = nifti_pair
    keys = ["image", "label"]
    flow = Compose([*monai_slicing().transforms[:3], Spacingd(keys, pixdim=(0.5, 0.6, 5.0), mode="nearest"),
                    LargestTumorSliced(keys, source_key="label")])  # fmt: skip
    data = flow({"image": str(image), "label": str(mask)})
    sliced = data["image"]
    rows, columns = sliced.shape[1:]  # about twice the 12 x 10 grid (MONAI rounds the resampled size)
    assert rows > 20 and columns > 16 and sliced.affine[2, 3].item() == pytest.approx(-33.0)
    np.testing.assert_allclose(sliced.meta["original_affine"], sliced.affine.numpy())
    assert sliced.meta["spatial_shape"].tolist() == [rows, columns]
    SaveImaged("image", output_dir=tmp_path / "saved", separate_folder=False, resample=True)(data)
    (written,) = (tmp_path / "saved").iterdir()
    assert nib.load(written).shape == (rows, columns) and nib.load(written).affine[2, 3] == pytest.approx(-33.0)
    back = flow.inverse(data)["image"]
    assert back.shape == (1, 10, 12, 9) and np.allclose(back.affine.numpy(), nib.load(image).affine, atol=1e-5)
