"""What ``medenc calibrate`` has to do: its inputs, the cache of finished work, the time budget, progress.

The cache is a folder of content-addressed entries (written atomically):

- ``data/<fingerprint>/manifest.csv``: the slices calibrated on (training split or its stratified
  subset, and the test split), pointing into the user's data folder through the ``src`` link;
- ``encrypted/<hash>/``: an ``encrypt-dataset`` output, keyed by the data fingerprint, the base
  model's SHA-256, the key fingerprint (which covers eps, step and steps), precision, device type and
  PGD batch size;
- ``victim/<hash>.json``: a victim's accuracies and learning curve, keyed by its encrypted set, the
  architecture, the training recipe and seed, and the device type; ``clean/<hash>.json``: the clean
  baselines; one entry per training seed;
- ``psnr/<hash>.json``: a fidelity-matched eps search (``--psnr``), keyed by the data, model, key and target.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medenc.errors import InputError
from medenc.files import sha256_file

if TYPE_CHECKING:  # pragma: no cover
    from medenc.calibrate.run import CalibrationSettings
    from medenc.core.key import EncryptionKey
    from medenc.experiment.dataset import Manifest, ManifestRow
    from medenc.learn.checkpoint import BaseModel

#: per-class training counts tried, largest first, when a budget forces a subset (nested subsets)
LADDER = (4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)


def digest(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (a cache key)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


class Cache:
    """Finished calibration work, reusable across runs (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def load(self, kind: str, key: str) -> dict[str, Any] | None:
        """A cached JSON entry, or None when absent or unreadable."""
        path = self.root / kind / f"{key}.json"
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.pop("cache_key", None) != key:
            return None
        return entry

    def save(self, kind: str, key: str, entry: dict[str, Any]) -> None:
        """Write a JSON entry atomically."""
        from medenc.atomic import atomic_write_text

        atomic_write_text(self.root / kind / f"{key}.json", json.dumps({**entry, "cache_key": key}, indent=1) + "\n")

    def encrypted_dir(self, key: str) -> Path:
        """Folder of a cached encrypted set (complete once its summary exists beside it)."""
        return self.root / "encrypted" / key

    @staticmethod
    def has_summary(folder: Path) -> bool:
        """Whether the cached encrypted set in ``folder`` is complete."""
        from medenc.experiment.encrypt_dataset import read_summary

        return read_summary(folder) is not None

    @staticmethod
    def read_summary(folder: Path) -> dict[str, Any]:
        """The in-house summary of an encrypted set."""
        from medenc.experiment.encrypt_dataset import read_summary

        summary = read_summary(folder)
        if summary is None:
            raise FileNotFoundError(folder)
        return summary

    def write_subset(self, fingerprint: str, manifest: Manifest, rows: list[ManifestRow]) -> Path:
        """Write the manifest of the calibrated slices (image paths through a link to the data folder)."""
        from medenc.atomic import atomic_write_text

        folder = self.root / "data" / fingerprint
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / "src"
        source = Path(manifest.path).resolve().parent
        if link.is_symlink() and Path(os.readlink(link)) != source:
            link.unlink()
        if not link.is_symlink():
            with contextlib.suppress(FileExistsError):
                link.symlink_to(source, target_is_directory=True)
        lines = ["case_id,label,split,image"]
        for row in rows:
            inside = not Path(row.image).is_absolute() and ".." not in Path(row.image).parts
            image = f"src/{row.image}" if inside else str(Path(row.path).resolve())
            if any(c in s for s in (row.case_id, row.label, image) for c in ',"\n'):
                raise InputError(f"line {row.line}: commas or quotes in a field are not supported", manifest.path)
            lines.append(",".join((row.case_id, row.label, row.split, image)))
        return atomic_write_text(folder / "manifest.csv", "\n".join(lines) + "\n")


@dataclass
class Inputs:
    """The loaded base model, manifest and calibration key."""

    classes: tuple[str, ...]
    manifest: Manifest
    base: BaseModel
    base_key: EncryptionKey
    key_note: dict[str, Any]
    model_hash: str
    settings: CalibrationSettings

    def key_for(self, eps: float) -> EncryptionKey:
        """The key at one grid point: same correspondence and ratios, PGD eps/step/steps replaced."""
        return replace(self.base_key, pgd=self.settings.pgd_for(eps, self.base_key.pgd))

    def clean_data(self, csv: Path, size: int) -> tuple[Any, Any]:
        """Clean ``(train, test)`` model inputs and labels, read as ``load_eval_data`` reads them."""
        import torch

        from medenc.core.mapping import Preprocess
        from medenc.experiment.dataset import load_images, read_manifest

        m = read_manifest(csv, classes=self.classes)
        prep = Preprocess(size=(size, size))
        parts = [m.subset(s) for s in ("train", "test")]
        return tuple((load_images(p, preprocess=prep), torch.tensor(p.labels())) for p in parts)  # type: ignore[return-value]


def prepare_inputs(manifest: str | Path, model: str | Path, key: str | Path | None, settings: Any) -> Inputs:
    """Load and check the model, manifest and key (validate before any work)."""
    from medenc.core.key import EncryptionKey, load_key_for
    from medenc.experiment.dataset import read_manifest
    from medenc.learn.checkpoint import load_base_model

    base = load_base_model(model)
    classes = tuple(base.info.classes)
    data = read_manifest(manifest, classes=classes)
    for split in ("train", "test"):
        if not data.subset(split).rows:
            raise InputError(f"the manifest has no {split} slices; calibration needs train and test", manifest)
    if key is not None:
        base_key = load_key_for(key, classes)
        note = {"source": "key file", "path": str(key), "combiner": base_key.combiner, "norm": base_key.pgd.norm}
    else:
        from medenc.core.key import PGDSettings

        base_key = EncryptionKey.generate(
            classes,
            settings.combiner,
            seed=settings.key_seed,
            ratio=settings.ratio,
            pgd=PGDSettings(norm=settings.norm),
        )
        note = {
            "source": f"calibration key drawn from seed {settings.key_seed} (for measuring only)",
            "combiner": base_key.combiner,
            "norm": base_key.pgd.norm,
            "ratio": settings.ratio,
        }
    return Inputs(classes, data, base, base_key, note, sha256_file(model), settings)


@dataclass
class Plan:
    """The chosen data subset, the cache keys of every work item and their estimated seconds."""

    subset_csv: Path
    data_fingerprint: str
    n_slices: int
    counts: dict[str, Any]
    subset_note: str | None
    device: str
    clean_keys: dict[tuple[str, int], str] = field(default_factory=dict)
    enc_keys: dict[float, str] = field(default_factory=dict)
    victim_keys: dict[tuple[float, str, int], str] = field(default_factory=dict)
    todo: dict[tuple, float] = field(default_factory=dict)  # uncached items -> estimated seconds
    estimate_note: dict[str, Any] | None = None


def _stratified(train_rows: list[Any], per_class: int | None, seed: int) -> list[Any]:
    if per_class is None:
        return train_rows
    keep: set[int] = set()
    for label in sorted({r.label for r in train_rows}):
        members = [i for i, r in enumerate(train_rows) if r.label == label]
        random.Random(f"{seed}:{label}").shuffle(members)
        keep.update(members[:per_class])
    return [r for i, r in enumerate(train_rows) if i in keep]


def plan_work(inputs: Inputs, settings: Any, cache: Cache, *, estimate: bool, log: Callable[[str], None]) -> Plan:
    """Choose the training subset (largest that fits the budget) and list the work not yet cached."""
    import torch

    from medenc.core.encrypt import resolve_device

    dev = resolve_device(settings.device)
    precision = settings.precision
    if precision == "auto":
        precision = "bf16" if dev.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    recipe = {n: v for n, v in asdict(settings.train).items() if n != "device"}
    rows = inputs.manifest.rows
    train_rows = [r for r in rows if r.split == "train"]
    test_rows = [r for r in rows if r.split == "test"]
    costs = measure_costs(inputs, settings, train_rows) if estimate else None
    largest = max(sum(r.label == c for r in train_rows) for c in inputs.classes)
    candidates: list[int | None] = [None]
    if settings.budget_minutes is not None:
        candidates += [m for m in reversed(LADDER) if m < largest]
    for per_class in candidates:
        chosen = _stratified(train_rows, per_class, settings.key_seed)
        keep = set(chosen)
        subset = [r for r in rows if r in keep or r.split == "test"]
        fp = replace(inputs.manifest, rows=tuple(subset)).fingerprint()
        plan = Plan(Path(), fp, len(subset), {}, None, str(dev))
        n_train = len(chosen)
        seeds = [settings.train.seed + i for i in range(settings.seeds)]
        for victim in settings.victims:
            for seed in seeds:  # one cached entry per training seed (version 2: with the learning curve)
                plan.clean_keys[(victim, seed)] = digest("clean/2", fp, victim, {**recipe, "seed": seed}, dev.type)
                if cache.load("clean", plan.clean_keys[(victim, seed)]) is None:
                    plan.todo[("clean", victim, seed)] = _train_seconds(costs, victim, n_train, settings)
        for eps in settings.eps_grid:
            enc = digest(
                "encrypted",
                fp,
                inputs.model_hash,
                inputs.key_for(eps).fingerprint(),
                precision,
                dev.type,
                settings.batch_size,
            )
            plan.enc_keys[eps] = enc
            if not cache.has_summary(cache.encrypted_dir(enc)):
                plan.todo[("encrypt", eps)] = costs["pgd_per_slice"] * len(subset) if costs else 1.0
            for victim in settings.victims:
                for seed in seeds:
                    vkey = digest("victim/2", enc, victim, {**recipe, "seed": seed}, dev.type)
                    plan.victim_keys[(eps, victim, seed)] = vkey
                    if cache.load("victim", vkey) is None:
                        plan.todo[("victim", eps, victim, seed)] = _train_seconds(costs, victim, n_train, settings)
        planned = sum(plan.todo.values()) if costs else None
        budget = None if settings.budget_minutes is None else settings.budget_minutes * 60 - costs["probe_seconds"]
        if budget is None or planned <= budget or per_class == candidates[-1]:
            break
    if budget is not None and planned > budget:
        raise InputError(
            f"the grid needs about {planned / 60:.1f} min even with {per_class} training slices per class, more "
            f"than the budget of {settings.budget_minutes:g} min",
            tip="raise --budget-minutes, use fewer eps values or victims, or fewer epochs",
        )
    plan.subset_csv = cache.write_subset(fp, inputs.manifest, subset)
    k = len(inputs.classes)
    index = {c: i for i, c in enumerate(inputs.classes)}
    per = [sum(index[r.label] == c for r in chosen) for c in range(k)]
    plan.counts = {
        "train": len(chosen),
        "train_total": len(train_rows),
        "test": len(test_rows),
        "train_per_class": per,
        "test_per_class": [sum(index[r.label] == c for r in test_rows) for c in range(k)],
    }
    if per_class is not None:
        plan.subset_note = (
            f"training split subsampled to at most {per_class} slices per class ({len(chosen)} of "
            f"{len(train_rows)}) to fit the budget of {settings.budget_minutes:g} min"
        )
    if costs is not None:
        plan.estimate_note = {**costs, "planned_seconds": round(planned, 1), "items_to_run": len(plan.todo)}
        log(
            f"plan: {len(plan.todo)} work items to run, about {planned / 60:.1f} min"
            + (f"; {plan.subset_note}" if plan.subset_note else "")
        )
    return plan


def _train_seconds(costs: dict[str, Any] | None, victim: str, n_train: int, settings: Any) -> float:
    if costs is None:
        return 1.0
    return costs["train_per_sample_epoch"][victim] * n_train * (settings.train.epochs + 1)  # + BN pass, testing


def measure_costs(inputs: Inputs, settings: Any, train_rows: list[Any]) -> dict[str, Any]:
    """Time PGD on a few slices and one short training epoch of each victim (seconds per unit)."""
    import torch

    from medenc.core.encrypt import Encryptor
    from medenc.core.mapping import Preprocess
    from medenc.experiment.dataset import load_slice
    from medenc.learn.models import build_model
    from medenc.learn.train import fit

    started = time.perf_counter()
    slices = [(load_slice(r.path), r.label) for r in train_rows[:8]]
    same = [(a, label) for a, label in slices if a.shape == slices[0][0].shape]
    x = torch.stack([torch.from_numpy(a)[None] for a, _ in same])
    labels = torch.tensor([inputs.classes.index(label) for _, label in same])
    encryptor = Encryptor(
        inputs.base.model,
        inputs.key_for(settings.eps_grid[0]),
        device=settings.device,
        batch_size=settings.batch_size,
        precision=settings.precision,
    )
    mapping = inputs.base.preprocess.mapping(x)
    low, high = x.amin(dim=(1, 2, 3)), x.amax(dim=(1, 2, 3))
    tick = time.perf_counter()
    encryptor.encrypt(x, labels, mapping=mapping, bounds=(low, high))
    pgd = (time.perf_counter() - tick) / x.shape[0]
    n = min(64, len(train_rows))
    size = settings.train.size
    inputs_x = torch.cat(
        [
            Preprocess(size=(size, size)).to_model(torch.from_numpy(load_slice(r.path))[None, None])
            for r in train_rows[:n]
        ]
    )
    y = torch.tensor([inputs.classes.index(r.label) for r in train_rows[:n]])
    per_sample = {}
    for victim in settings.victims:
        torch.manual_seed(0)
        net = build_model(victim, in_channels=inputs_x.shape[1], num_classes=len(inputs.classes))
        history = fit(  # two epochs: the second one's time, without warm-up and batch-norm recalibration
            net,
            inputs_x,
            y,
            epochs=2,
            batch_size=min(settings.train.batch_size, n),
            lr=settings.train.lr,
            device=settings.train.device,
            augment=settings.train.augment,
            recalibrate_bn=False,
        )
        per_sample[victim] = history[-1]["seconds"] / n
    return {
        "pgd_per_slice": pgd,
        "train_per_sample_epoch": per_sample,
        "probe_seconds": round(time.perf_counter() - started, 1),
    }
