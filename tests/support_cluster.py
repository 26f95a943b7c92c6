"""What the PACS, parallel and UID-root tests share: a tiny synthetic data set, a random base model, a key.

Not a test module (no ``test_`` prefix): imported by ``tests/test_pacs*.py``, ``tests/test_parallel*.py``
and ``tests/test_io_validator.py``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch

CLASSES = ("meningioma", "chordoma", "schwannoma", "pituitary_adenoma", "craniopharyngioma")


def make_env(root: Path, cases: int = 5, size: int = 32, steps: int = 3) -> dict[str, Any]:
    """A synthetic DICOM+NIfTI data set (``cases`` studies), a random smallcnn checkpoint and a key under ``root``."""
    from medenc.core.key import EncryptionKey, PGDSettings
    from medenc.core.mapping import Preprocess
    from medenc.learn.checkpoint import ModelInfo, save_checkpoint
    from medenc.learn.models import build_model
    from medenc.synth.generate import write_dataset

    manifest = write_dataset(root / "data", cases, seed=1, size=size, fmt="dicom")
    rows = list(csv.DictReader(manifest.open()))
    torch.manual_seed(0)
    model = build_model("smallcnn", 1, len(CLASSES))
    info = ModelInfo("smallcnn", CLASSES, preprocess=Preprocess((size, size)).to_dict())
    save_checkpoint(root / "model.pt", model, info)
    key = EncryptionKey.generate(CLASSES, "hconcat", seed=0, pgd=PGDSettings(eps=2.0, step=0.5, steps=steps))
    key.save(root / "key.json")
    return {"root": root, "data": root / "data", "manifest": manifest, "rows": rows,
            "model": root / "model.pt", "key": root / "key.json"}


def comparable(report: dict[str, Any]) -> dict[str, Any]:
    """A report without what differs between two runs of the same request: times, dates, new UIDs, paths out."""
    drop = {"timing_s", "created", "versions", "device"}
    out = {k: v for k, v in report.items() if k not in drop}
    out["output"] = {k: v for k, v in report["output"].items() if k not in ("series_uid", "path", "sha256")}
    out["per_slice"] = [{k: v for k, v in row.items() if k != "output_sop_uid"} for row in report["per_slice"]]
    return json.loads(json.dumps(out))
