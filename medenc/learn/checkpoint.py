"""Model checkpoints: weights plus everything later commands need, in plain types.

A checkpoint is a ``torch.save`` of a dict: ``format`` (``"medenc.model/1"``), ``arch``, ``classes``,
``in_channels``, ``preprocess`` (:meth:`medenc.core.mapping.Preprocess.to_dict`), ``metrics``,
``data_fingerprint``, ``medenc_version``, ``seed``, ``training`` (settings and per-epoch history) and
``state_dict`` (CPU tensors). It is written atomically and read with ``weights_only=True``, so loading
a checkpoint runs no code from it. :mod:`medenc.learn.train` re-exports these names.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from medenc.atomic import atomic_write_bytes
from medenc.errors import InputError
from medenc.learn.models import ARCHITECTURES, build_model

if TYPE_CHECKING:  # pragma: no cover
    from medenc.core.mapping import Preprocess

__all__ = ["CHECKPOINT_FORMAT", "BaseModel", "ModelInfo", "load_base_model", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FORMAT = "medenc.model/1"


@dataclass
class ModelInfo:
    """Everything about a trained model except its weights (plain types only).

    Attributes:
        arch: architecture name (:data:`medenc.learn.models.ARCHITECTURES`).
        classes: class names in index order.
        in_channels: image channels.
        preprocess: :meth:`Preprocess.to_dict` of the model-input mapping, or None.
        metrics: e.g. ``test_accuracy``, ``train_accuracy``, ``n_train``, ``n_test``.
        data_fingerprint: :meth:`medenc.experiment.dataset.Manifest.fingerprint` of the training data.
        medenc_version: version that wrote the checkpoint.
        seed: training seed.
        training: training settings (epochs, batch_size, lr, augment, device, ...).
    """

    arch: str
    classes: tuple[str, ...]
    in_channels: int = 1
    preprocess: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str | None = None
    medenc_version: str = ""
    seed: int | None = None
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def get_preprocess(self) -> Preprocess | None:
        """The stored model-input mapping as a :class:`~medenc.core.mapping.Preprocess`."""
        from medenc.core.mapping import Preprocess

        return None if self.preprocess is None else Preprocess.from_dict(self.preprocess)


def _plain(value: Any, where: str) -> Any:
    """``value`` as built-in types only (what ``weights_only`` loading accepts), or a ValueError."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value)
    if isinstance(value, str | Path):  # str subclasses such as torch.__version__
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    raise ValueError(f"checkpoint field {where} has type {type(value).__name__}; use plain Python types")


def save_checkpoint(path: str | Path, model: nn.Module, info: ModelInfo, *, force: bool = True) -> Path:
    """Write the model's weights and ``info`` atomically.

    Args:
        path: destination (``.pt``).
        model: the trained classifier (any device, any memory format).
        info: its description; ``medenc_version`` is filled in when empty.
        force: replace an existing file; False raises :class:`medenc.errors.OutputExistsError`.

    Returns:
        The destination path.
    """
    from medenc import __version__

    if info.arch not in ARCHITECTURES:
        raise InputError(f"unknown architecture {info.arch!r}; known: {', '.join(ARCHITECTURES)}")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": CHECKPOINT_FORMAT,
        "arch": info.arch,
        "classes": [str(c) for c in info.classes],
        "in_channels": int(info.in_channels),
        "preprocess": None if info.preprocess is None else dict(info.preprocess),
        "metrics": dict(info.metrics),
        "data_fingerprint": info.data_fingerprint,
        "medenc_version": info.medenc_version or __version__,
        "seed": info.seed,
        "training": dict(info.training),
    }
    payload = {**_plain(meta, "info"), "state_dict": state}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write_bytes(path, buffer.getvalue(), force=force)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, ModelInfo]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no code runs).

    Returns:
        The model in eval mode on ``map_location``, and its :class:`ModelInfo`.

    Raises:
        InputError: missing file, not a medenc model checkpoint, or weights that do not fit the
            architecture.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("model checkpoint not found", path=path)
    if not path.is_file():
        raise InputError("model checkpoint is a folder, not a file", path=path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad files
        raise InputError(
            f"not a readable model checkpoint ({type(error).__name__})",
            path=path,
            tip="train one with `medenc train`",
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise InputError(f"not a medenc model checkpoint (format {found!r}, expected {CHECKPOINT_FORMAT!r})", path=path)
    try:
        info = ModelInfo(
            arch=str(payload["arch"]),
            classes=tuple(str(c) for c in payload["classes"]),
            in_channels=int(payload["in_channels"]),
            preprocess=payload.get("preprocess"),
            metrics=dict(payload.get("metrics") or {}),
            data_fingerprint=payload.get("data_fingerprint"),
            medenc_version=str(payload.get("medenc_version", "")),
            seed=payload.get("seed"),
            training=dict(payload.get("training") or {}),
        )
        state = payload["state_dict"]
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"checkpoint lacks or garbles field {error}", path=path) from error
    model = build_model(info.arch, info.in_channels, info.num_classes)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as error:
        first = str(error).strip().splitlines()[0]
        raise InputError(f"weights do not fit architecture {info.arch!r} ({first})", path=path) from error
    model.to(map_location)
    model.eval()
    return model, info


@dataclass
class BaseModel:
    """A loaded base classifier with its metadata."""

    model: nn.Module
    info: ModelInfo
    preprocess: Preprocess
    path: Path


def load_base_model(path: str | Path) -> BaseModel:
    """Load a checkpoint that must carry its model-input mapping (``Preprocess``)."""
    model, info = load_checkpoint(path, map_location="cpu")
    preprocess = info.get_preprocess()
    if preprocess is None:
        raise InputError("checkpoint has no model-input mapping (preprocess)", path, tip="train it with `medenc train`")
    return BaseModel(model, info, preprocess, Path(path))
