"""Encrypt channel-first 2D slices inside a MONAI pipeline: single items and collated batches.

Thin over :class:`medenc.core.encrypt.Encryptor`. A MetaTensor keeps its meta and its
``applied_operations`` (the encryption itself is not invertible, so it pushes no record, like MONAI's
intensity transforms); a batch collated by MONAI's ``DataLoader`` stays a batch that
``decollate_batch`` can split.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_dst_type

from medenc.core.encrypt import Encryptor

logger = logging.getLogger(__name__)

__all__ = ["AdversarialEncrypt", "AdversarialEncryptd"]

Bound = float | torch.Tensor


def _as_labels(label: Any, count: int) -> list[Any]:
    """One class (index or name) per image: a single label is repeated, collated labels are listed."""
    if isinstance(label, (torch.Tensor, np.ndarray)):
        values = np.asarray(label.detach().cpu() if isinstance(label, torch.Tensor) else label).reshape(-1).tolist()
    elif isinstance(label, (list, tuple)):
        values = list(label)
    else:
        values = [label]
    if len(values) == 1:
        values = values * count
    if len(values) != count:
        raise ValueError(f"{count} images but {len(values)} labels")
    return [v if isinstance(v, str) else int(v) for v in values]


def _per_image(value: Any, count: int, name: str) -> Bound:
    """A meta value (one number, or one per image after collation) as a float or an (N,) tensor."""
    array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
    array = array.reshape(-1)
    if array.size == 1:
        return float(array[0])
    if array.size != count:
        raise ValueError(f"meta {name!r} holds {array.size} values for {count} images")
    return torch.as_tensor(array)


def _load(model: Any, key: Any, preprocess: Any) -> tuple[torch.nn.Module, Any, Any]:
    """Model, key and preprocess from objects or files (a checkpoint path brings its own preprocess)."""
    classes = None
    if isinstance(model, (str, Path)):
        from medenc.learn.checkpoint import load_base_model

        base = load_base_model(model)
        model, classes = base.model, base.info.classes
        preprocess = base.preprocess if preprocess is None else preprocess
    if isinstance(key, (str, Path)):
        from medenc.core.key import EncryptionKey, load_key_for

        key = EncryptionKey.load(key) if classes is None else load_key_for(key, classes)
    if preprocess is None:
        raise ValueError("AdversarialEncrypt needs the model's preprocess (or a checkpoint path as model)")
    return model, key, preprocess


class AdversarialEncrypt(Transform):
    """Encrypt channel-first 2D images with their true class.

    Args:
        model: the base classifier, or the path of a medenc checkpoint (``medenc train``), which also
            brings the preprocess and checks the key's classes.
        key: the :class:`medenc.core.key.EncryptionKey`, or the path of a key file.
        preprocess: the model's :class:`medenc.core.mapping.Preprocess` (native -> model input); PGD
            runs on the native values through it. Default: the checkpoint's (``model`` a path).
        device: PGD device (``None``: CUDA if available).
        batch_size: PGD samples per call.
        precision: ``"fp32"``, ``"bf16"`` or ``"auto"``.
        bounds: native ``(low, high)``; default: ``medenc_bounds_low``/``_high`` from the image meta
            (set by :class:`~medenc.transforms.MedencReader`; one pair per image in a batch), else
            each image's own min and max.
    """

    backend: ClassVar[list[str]] = ["torch", "numpy"]

    def __init__(
        self,
        model: torch.nn.Module | str | Path,
        key: Any,
        preprocess: Any = None,
        *,
        device: str | torch.device | None = None,
        batch_size: int = 64,
        precision: str = "auto",
        bounds: tuple[float, float] | None = None,
    ) -> None:
        model, key, preprocess = _load(model, key, preprocess)
        self.encryptor = Encryptor(model, key, device=device, batch_size=batch_size, precision=precision)
        self.preprocess, self.bounds = preprocess, bounds

    def _bounds(self, img: Any, batch: torch.Tensor) -> tuple[Bound, Bound]:
        if self.bounds is not None:
            return float(self.bounds[0]), float(self.bounds[1])
        meta = getattr(img, "meta", {})
        count = batch.shape[0]
        if "medenc_bounds_low" in meta and "medenc_bounds_high" in meta:
            return (
                _per_image(meta["medenc_bounds_low"], count, "medenc_bounds_low"),
                _per_image(meta["medenc_bounds_high"], count, "medenc_bounds_high"),
            )
        logger.info("no stored range known: bounding the encryption by each image's own min and max")
        return batch.amin(dim=(1, 2, 3)), batch.amax(dim=(1, 2, 3))

    def __call__(self, img: Any, label: Any) -> Any:
        """The encrypted image, same type, shape and (for a MetaTensor) meta.

        Shape:
            img: (C, H, W) or a batch (N, C, H, W); label: one class (index or name) or one per image.
        """
        x = img if isinstance(img, torch.Tensor) else torch.as_tensor(np.asarray(img))
        x = (x.as_tensor() if hasattr(x, "as_tensor") else x).detach().float().cpu()
        single = x.ndim == 3
        batch = x[None] if single else x
        if batch.ndim != 4:
            raise ValueError(f"expected (C, H, W) or (N, C, H, W) images, got shape {tuple(x.shape)}")
        low, high = self._bounds(img, batch)
        labels = _as_labels(label, batch.shape[0])
        out = self.encryptor.encrypt(batch, labels, mapping=self.preprocess.mapping(batch), bounds=(low, high))
        out = out[0] if single else out
        if isinstance(img, torch.Tensor):  # a MetaTensor keeps meta, applied_operations and is_batch
            return convert_to_dst_type(out, img)[0]
        return out.numpy().astype(np.asarray(img).dtype)


class AdversarialEncryptd(MapTransform):
    """Dictionary wrapper of :class:`AdversarialEncrypt`; the true class is read from ``label_key``.

    Works on one item and on a batch collated by MONAI's ``DataLoader`` (then ``label_key`` holds
    one class per image).
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str,
        model: torch.nn.Module | str | Path,
        key: Any,
        preprocess: Any = None,
        *,
        device: str | torch.device | None = None,
        batch_size: int = 64,
        precision: str = "auto",
        bounds: tuple[float, float] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_key = label_key
        self.encrypt = AdversarialEncrypt(
            model, key, preprocess, device=device, batch_size=batch_size, precision=precision, bounds=bounds
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if self.label_key not in d:
                raise KeyError(f"AdversarialEncryptd: the item has no {self.label_key!r} (the true class)")
            d[key] = self.encrypt(d[key], d[self.label_key])
        return d
