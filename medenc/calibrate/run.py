"""``medenc calibrate``: measure protection against image fidelity over a grid of eps, on the user's data.

For every eps of the grid the training split (or a stratified subset of it when a time budget is set)
and the test split are encrypted with :func:`medenc.experiment.encrypt_dataset.encrypt_dataset`, each victim
architecture is trained on the encrypted training slices with :func:`medenc.learn.victims.train_and_score`
(the thief's flip + crop augmentation by default), and tested on encrypted and on original test
slices. The same functions as ``medenc encrypt-dataset`` and ``medenc evaluate`` do the work, so the
same seeds and settings give the same numbers. Fidelity (PSNR, SSIM, Linf) is measured on the stored
(native) pixel values of what was written.

The recommendation (:func:`recommend`) is a pure function of the results table: the smallest eps whose
worst victim's original-test accuracy is at most the target while the mean PSNR and SSIM stay at or
above their floors. Encrypted sets and trained victims are cached (:mod:`medenc.calibrate.plan`), so
refining the grid re-uses what was measured.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from medenc.errors import InputError
from medenc.files import check_output, manifest_inputs
from medenc.learn.recipe import TrainRecipe
from medenc.reporting import header

DEFAULT_GRID = (0.5, 1.0, 2.0, 4.0, 6.0, 8.0)
MAX_GRID = 24


@dataclass(frozen=True)
class CalibrationSettings:
    """What to measure and what counts as good enough.

    Attributes:
        eps_grid: PGD radii to try, on the model-input scale (as in the key).
        victims: architectures the thief might train (:data:`medenc.learn.models.ARCHITECTURES`).
        train: the thief's training recipe (``augment=True``: random flip + crop).
        combiner: combiner of the calibration key.
        ratio: Horizontal Concat / Mixup ratio of the calibration key.
        norm: PGD norm.
        step_ratio: PGD step = ``eps * step_ratio`` (the step scales with the radius).
        steps: PGD iterations.
        key_seed: seed of the calibration key (a measuring key, never for sharing).
        target_orig_acc: the worst victim's original-test accuracy must be at most this.
        min_psnr: floor of the mean PSNR (dB, stored units).
        min_ssim: floor of the mean SSIM.
        budget_minutes: time budget; the training split is subsampled (stratified) to fit it.
        reference_eps: the fixed setting to compare the recommendation with (the paper's eps 2).
        device: where PGD and training run (None: CUDA if available).
        precision: PGD precision (``fp32``, ``bf16``, ``auto``).
        batch_size: PGD samples per batch.
    """

    eps_grid: tuple[float, ...] = DEFAULT_GRID
    victims: tuple[str, ...] = ("resnet18", "densenet121", "vgg11")
    train: TrainRecipe = field(default_factory=lambda: TrainRecipe(augment=True))
    combiner: str = "hconcat"
    ratio: float = 0.5
    norm: str = "l2"
    step_ratio: float = 0.05
    steps: int = 100
    key_seed: int = 0
    target_orig_acc: float = 0.35
    min_psnr: float = 40.0
    min_ssim: float = 0.98
    budget_minutes: float | None = None
    reference_eps: float = 2.0
    device: str | None = None
    precision: str = "auto"
    batch_size: int = 64

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first setting out of range."""
        from medenc.core.key import COMBINER_TARGETS, NORMS
        from medenc.learn.models import ARCHITECTURES

        check_grid(self.eps_grid)
        if not self.victims:
            raise InputError("give at least one victim architecture")
        unknown = [v for v in self.victims if v not in ARCHITECTURES]
        if unknown:
            raise InputError(f"unknown victim architecture(s) {', '.join(unknown)}; known: {', '.join(ARCHITECTURES)}")
        small = [v for v in self.victims if ARCHITECTURES[v].min_size > self.train.size]
        if small:
            raise InputError(
                f"{small[0]} needs inputs of at least {ARCHITECTURES[small[0]].min_size} px, "
                f"the victims' input size is {self.train.size}",
                tip="raise --size",
            )
        if len(set(self.victims)) != len(self.victims):
            raise InputError(f"victims listed twice: {', '.join(self.victims)}")
        if self.combiner not in COMBINER_TARGETS:
            raise InputError(f"unknown combiner {self.combiner!r}; expected one of {', '.join(COMBINER_TARGETS)}")
        if self.norm not in NORMS:
            raise InputError(f"unknown norm {self.norm!r}; expected one of {', '.join(NORMS)}")
        if not (_finite(self.target_orig_acc) and 0.0 < self.target_orig_acc <= 1.0):
            raise InputError(
                f"--target-orig-acc must be an accuracy in (0, 1], got {self.target_orig_acc}", tip="e.g. 0.35 for 35%"
            )
        if not (_finite(self.min_psnr) and self.min_psnr >= 0):
            raise InputError(f"--min-psnr must be a number of dB >= 0, got {self.min_psnr}")
        if not (_finite(self.min_ssim) and 0.0 <= self.min_ssim <= 1.0):
            raise InputError(f"--min-ssim must lie in [0, 1], got {self.min_ssim}")
        if self.budget_minutes is not None and not (_finite(self.budget_minutes) and self.budget_minutes > 0):
            raise InputError(f"--budget-minutes must be > 0, got {self.budget_minutes}")
        if not (_finite(self.step_ratio) and 0 < self.step_ratio <= 1):
            raise InputError(f"the step ratio (step / eps) must lie in (0, 1], got {self.step_ratio}")
        if self.steps < 1:
            raise InputError(f"PGD steps must be >= 1, got {self.steps}")
        if not 0 < self.ratio < 1:
            raise InputError(f"ratio must lie in (0, 1), got {self.ratio}")
        if self.train.epochs < 1 or self.train.batch_size < 1 or not self.train.lr > 0:
            raise InputError("victim training needs epochs >= 1, batch size >= 1 and lr > 0")

    def pgd_for(self, eps: float, base: Any = None) -> Any:
        """PGD settings at ``eps`` (step = eps x step_ratio), other fields from ``base`` if given."""
        from medenc.core.key import PGDSettings

        pgd = base if base is not None else PGDSettings(norm=self.norm)
        return replace(pgd, eps=float(eps), step=round(float(eps) * self.step_ratio, 10), steps=int(self.steps))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_grid(grid: Sequence[float]) -> tuple[float, ...]:
    """Validate an eps grid: 1..24 distinct finite values > 0; returned sorted ascending."""
    values = tuple(grid)
    if not values:
        raise InputError("the eps grid is empty", tip="e.g. --eps 0.5,1,2,4,6,8")
    bad = [v for v in values if not _finite(v) or v <= 0]
    if bad:
        raise InputError(f"eps values must be finite numbers > 0, got {bad[0]}", tip="e.g. --eps 0.5,1,2,4,6,8")
    if len(set(values)) != len(values):
        dupes = sorted({v for v in values if values.count(v) > 1})
        raise InputError(f"eps {dupes[0]:g} appears more than once in the grid")
    if len(values) > MAX_GRID:
        raise InputError(f"the eps grid has {len(values)} values; at most {MAX_GRID} are allowed")
    return tuple(sorted(values))


def parse_grid(text: str) -> tuple[float, ...]:
    """``"0.5,1,2"`` -> ``(0.5, 1.0, 2.0)``, validated by :func:`check_grid`."""
    parts = [p.strip() for p in str(text).split(",")]
    if not any(parts):
        return check_grid(())
    values = []
    for part in parts:
        try:
            values.append(float(part))
        except ValueError:
            raise InputError(f"eps grid entry {part!r} is not a number", tip="e.g. --eps 0.5,1,2,4,6,8") from None
    return check_grid(values)


# ----------------------------------------------------------------------------------- recommendation
def recommend(
    rows: Sequence[Mapping[str, Any]], *, target_orig_acc: float, min_psnr: float, min_ssim: float
) -> dict[str, Any]:
    """Pick the smallest eps that protects enough while keeping the fidelity floors.

    Args:
        rows: one per eps with ``eps``, ``worst_original_test`` (the worst victim's accuracy on
            original test slices: the highest one), ``psnr_db`` and ``ssim`` (means over slices).
        target_orig_acc: protection holds when ``worst_original_test <= target_orig_acc``.
        min_psnr: fidelity holds when ``psnr_db >= min_psnr`` ...
        min_ssim: ... and ``ssim >= min_ssim``.

    Returns:
        ``status`` (``"recommended"`` or ``"none"``), ``eps`` (or None), ``outcome`` (``meets_both``,
        ``only_protection``, ``only_fidelity``, ``protection_or_fidelity`` (some rows meet one floor,
        others the other, none both) or ``neither``), ``checks`` per eps, ``closest`` (when none
        qualifies: the best-protecting eps with fidelity and the best-fidelity eps with protection, as
        available) and a plain-language ``message``.
    """
    if not rows:
        raise InputError("no results to recommend from")
    checks = []
    for row in sorted(rows, key=lambda r: float(r["eps"])):
        protects = float(row["worst_original_test"]) <= target_orig_acc
        fidelity = float(row["psnr_db"]) >= min_psnr and float(row["ssim"]) >= min_ssim
        checks.append(
            {
                "eps": float(row["eps"]),
                "worst_original_test": float(row["worst_original_test"]),
                "psnr_db": float(row["psnr_db"]),
                "ssim": float(row["ssim"]),
                "protects": protects,
                "fidelity_ok": fidelity,
                "meets_both": protects and fidelity,
            }
        )
    floors = f"worst victim <= {target_orig_acc:.0%} on original images, PSNR >= {min_psnr:g} dB, SSIM >= {min_ssim:g}"
    both = [c for c in checks if c["meets_both"]]
    if both:
        best = both[0]
        return {
            "status": "recommended",
            "eps": best["eps"],
            "outcome": "meets_both",
            "checks": checks,
            "closest": [],
            "message": (
                f"recommended eps {best['eps']:g}: the smallest on the grid that meets {floors} "
                f"(worst victim {best['worst_original_test']:.1%}, PSNR {best['psnr_db']:.1f} dB, "
                f"SSIM {best['ssim']:.4f})"
            ),
        }
    protecting = [c for c in checks if c["protects"]]
    faithful = [c for c in checks if c["fidelity_ok"]]
    closest = []
    if protecting:
        c = protecting[0]
        closest.append(
            {
                **c,
                "why": f"protects, but fidelity is below the floor (PSNR {c['psnr_db']:.1f} dB, SSIM {c['ssim']:.4f})",
            }
        )
    if faithful:
        c = faithful[-1]
        closest.append(
            {
                **c,
                "why": f"keeps the fidelity floors, but the worst victim still reaches "
                f"{c['worst_original_test']:.1%} on original images",
            }
        )
    if not closest:
        lowest = min(checks, key=lambda c: c["worst_original_test"])
        sharpest = max(checks, key=lambda c: (c["psnr_db"], c["ssim"]))
        closest.append({**lowest, "why": "best protection on the grid (neither floor met)"})
        if sharpest["eps"] != lowest["eps"]:
            closest.append({**sharpest, "why": "best fidelity on the grid (neither floor met)"})
    outcome = {
        (True, True): "protection_or_fidelity",
        (True, False): "only_protection",
        (False, True): "only_fidelity",
        (False, False): "neither",
    }[(bool(protecting), bool(faithful))]
    return {
        "status": "none",
        "eps": None,
        "outcome": outcome,
        "checks": checks,
        "closest": closest,
        "message": f"no setting on the grid meets both {floors}; closest: "
        + "; ".join(f"eps {c['eps']:g} {c['why']}" for c in closest),
    }


# ------------------------------------------------------------------------------------------ runner
def calibrate(
    manifest: str | Path,
    model: str | Path,
    out: str | Path,
    settings: CalibrationSettings,
    *,
    key: str | Path | None = None,
    cache_dir: str | Path | None = None,
    force: bool = False,
    estimate: bool = False,
    progress: Any = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the grid and write the report folder ``out`` (atomically).

    Args:
        manifest: clean slice manifest with ``train`` and ``test`` splits.
        model: base classifier checkpoint (with its model-input mapping).
        out: report folder (``report.json``, ``report.md``, ``tradeoff.png``).
        settings: the grid, victims, recipe and floors.
        key: a key file whose correspondence, ratios and combiner to use (its eps and step are
            replaced per grid point); default: a calibration key drawn from ``settings.key_seed``.
        cache_dir: cache folder; default ``<out's parent>/medenc-calibrate-cache``.
        force: replace an existing ``out``.
        estimate: measure costs first (always done when a budget is set) for the ETA and the plan.
        progress: a ``rich.progress.Progress`` (or anything with ``add_task``/``update``/``remove_task``).
        log: called with one line per finished step.

    Returns:
        The ``report.json`` content.
    """

    from medenc.atomic import atomic_directory
    from medenc.calibrate.plan import Cache, Ticker, plan_work, prepare_inputs
    from medenc.calibrate.report import reference_comparison, result_row, write_report
    from medenc.experiment.encrypt_dataset import encrypt_dataset
    from medenc.experiment.evaluate import load_eval_data
    from medenc.learn.victims import confusion, train_and_score

    started = time.perf_counter()
    settings.validate()
    out = Path(out)
    input_paths = [*manifest_inputs(manifest), model, key]
    check_output(out, inputs=input_paths, force=force, what="report folder")
    say = log or (lambda _: None)
    cache = Cache(Path(cache_dir) if cache_dir is not None else out.parent / "medenc-calibrate-cache")
    inputs = prepare_inputs(manifest, model, key, settings)
    plan = plan_work(inputs, settings, cache, estimate=estimate or settings.budget_minutes is not None, log=say)
    ticker = Ticker(progress, plan)
    k = len(inputs.classes)
    train = settings.train

    baselines: dict[str, float] = {}
    for victim in settings.victims:
        entry = cache.load("clean", plan.clean_keys[victim])
        if entry is None:
            with ticker.item(("clean", victim), f"{victim} on clean data"):
                data = inputs.clean_data(plan.subset_csv, train.size)
                acc, _ = train_and_score(victim, data[0], {"clean_test": data[1]}, k, train, ticker.inner)
            entry = {"clean_test": acc["clean_test"], "victim": victim}
            cache.save("clean", plan.clean_keys[victim], entry)
        baselines[victim] = entry["clean_test"]
        say(f"clean baseline {victim}: {entry['clean_test']:.1%}")

    rows = []
    for eps in settings.eps_grid:
        eps_key = inputs.key_for(eps)
        folder = cache.encrypted_dir(plan.enc_keys[eps])
        if not cache.has_summary(folder):
            with ticker.item(("encrypt", eps), f"eps {eps:g}: encrypting", slices=plan.n_slices) as slices:
                encrypt_dataset(
                    plan.subset_csv,
                    model,
                    eps_key,
                    folder,
                    device=settings.device,
                    batch_size=settings.batch_size,
                    precision=settings.precision,
                    force=True,
                    on_progress=slices,
                )
        summary = cache.read_summary(folder)
        data = None
        victims: dict[str, dict[str, Any]] = {}
        for victim in settings.victims:
            vkey = plan.victim_keys[(eps, victim)]
            entry = cache.load("victim", vkey)
            if entry is None:
                with ticker.item(("victim", eps, victim), f"eps {eps:g}: {victim}"):
                    if data is None:
                        data = load_eval_data(plan.subset_csv, folder / "manifest.csv", train.size, inputs.classes)
                    acc, pred = train_and_score(
                        victim,
                        data.enc_train,
                        {"encrypted_test": data.enc_test, "original_test": data.clean_test},
                        k,
                        train,
                        ticker.inner,
                    )
                entry = {**acc, "confusion_original_test": confusion(pred["original_test"], data.clean_test[1], k)}
                cache.save("victim", vkey, entry)
            victims[victim] = {**entry, "clean_test": baselines[victim]}
        row = result_row(eps, summary, victims)
        rows.append(row)
        say(
            f"eps {eps:g}: PSNR {row['psnr_db']:.1f} dB, SSIM {row['ssim']:.4f}, worst victim "
            f"{row['worst_victim']} {row['worst_original_test']:.1%} on original test slices"
        )

    decision = recommend(
        rows, target_orig_acc=settings.target_orig_acc, min_psnr=settings.min_psnr, min_ssim=settings.min_ssim
    )
    warnings = []
    worst_clean = min(baselines.values())
    if worst_clean <= settings.target_orig_acc:
        warnings.append(
            f"a victim trained on clean data reaches only {worst_clean:.1%}, at or below the target "
            f"{settings.target_orig_acc:.0%}: the target says nothing about protection on this data"
        )
    report = {
        "manifest": str(manifest),
        "model": str(model),
        "classes": list(inputs.classes),
        "chance": 1.0 / k,
        "counts": plan.counts,
        "subset": plan.subset_note,
        "settings": {**{n: v for n, v in asdict(settings).items() if n != "train"}, "train": asdict(train)},
        "key": inputs.key_note,
        "step_rule": f"step = eps x {settings.step_ratio:g}, {settings.steps} steps",
        "fidelity_units": "stored (native) pixel values of the written slices; PSNR and SSIM with each original "
        "slice's own range (max - min) as the peak, Linf = largest change of one pixel in stored units",
        "clean_baseline": baselines,
        "rows": rows,
        "recommendation": decision,
        "reference": reference_comparison(rows, decision, settings.reference_eps),
        "warnings": warnings,
        "estimate": plan.estimate_note,
        "cache": str(cache.root),
        "fingerprints": {"data": plan.data_fingerprint, "model_sha256": inputs.model_hash},
        **header("calibrate", started=started, device=plan.device),
    }
    with atomic_directory(out, force=force, inputs=input_paths) as tmp:
        write_report(report, tmp)
    return report
