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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from medenc.calibrate.recommend import recommend
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
        seeds: victim training seeds (``train.seed``, ``+1``, ...): mean and 95% interval per cell.
        psnr_target: fidelity-matched calibration: the eps measured to give this mean PSNR (stored units;
            :func:`medenc.experiment.match_psnr.match_psnr`) is added to ``eps_grid`` (which may then be
            empty).
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
    seeds: int = 1
    psnr_target: float | None = None

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first setting out of range."""
        from medenc.core.key import COMBINER_TARGETS, NORMS
        from medenc.learn.models import ARCHITECTURES

        if self.psnr_target is None or self.eps_grid:
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
        if not 1 <= self.seeds <= 50:
            raise InputError(f"--seeds must lie in 1..50, got {self.seeds}")
        if self.psnr_target is not None and not (_finite(self.psnr_target) and self.psnr_target > 0):
            raise InputError(f"--psnr must be a number of dB > 0, got {self.psnr_target}")
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
    from medenc.calibrate.plan import Cache, plan_work, prepare_inputs
    from medenc.calibrate.progress import Ticker
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
    matched = None
    if settings.psnr_target is not None:
        matched = _match_cached(inputs, manifest, model, settings, cache, say)
        settings = replace(settings, eps_grid=tuple(sorted({*settings.eps_grid, matched["eps"]})))
    eps_grid = settings.eps_grid
    plan = plan_work(inputs, settings, cache, estimate=estimate or settings.budget_minutes is not None, log=say)
    ticker = Ticker(progress, plan)
    k = len(inputs.classes)
    train = settings.train

    from medenc.learn.victims import VictimResult, seed_recipes, summarize_runs

    recipes = seed_recipes(train, settings.seeds)
    baselines: dict[str, dict[str, Any]] = {}
    clean_data = None
    for victim in settings.victims:
        runs = []
        for recipe in recipes:
            ckey = plan.clean_keys[(victim, recipe.seed)]
            entry = cache.load("clean", ckey)
            if entry is None:
                with ticker.item(("clean", victim, recipe.seed), f"{victim} on clean data (seed {recipe.seed})"):
                    clean_data = clean_data or inputs.clean_data(plan.subset_csv, train.size)
                    run = train_and_score(victim, clean_data[0], {"clean_test": clean_data[1]}, k, recipe, ticker.inner)
                entry = {**run.record(), "victim": victim}
                cache.save("clean", ckey, entry)
            runs.append(VictimResult(entry["seed"], entry["final"], entry["curves"]))
        baselines[victim] = summarize_runs(runs, {"clean_test": plan.counts["test"]})
        say(f"clean baseline {victim}: {baselines[victim]['clean_test']:.1%}")

    rows = []
    sizes = {"original_test": plan.counts["test"], "encrypted_test": plan.counts["test"]}
    for eps in eps_grid:
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
            runs, matrices = [], []
            for recipe in recipes:
                vkey = plan.victim_keys[(eps, victim, recipe.seed)]
                entry = cache.load("victim", vkey)
                if entry is None:
                    with ticker.item(
                        ("victim", eps, victim, recipe.seed), f"eps {eps:g}: {victim} (seed {recipe.seed})"
                    ):
                        if data is None:
                            data = load_eval_data(plan.subset_csv, folder / "manifest.csv", train.size, inputs.classes)
                        tests = {"encrypted_test": data.enc_test, "original_test": data.clean_test}
                        run = train_and_score(
                            victim, data.enc_train, tests, k, recipe, ticker.inner, watch=("original_test",)
                        )
                    entry = {
                        **run.record(),
                        "confusion_original_test": confusion(run.predictions["original_test"], data.clean_test[1], k),
                    }
                    cache.save("victim", vkey, entry)
                runs.append(VictimResult(entry["seed"], entry["final"], entry["curves"]))
                matrices.append(entry["confusion_original_test"])
            summed = [[sum(m[i][j] for m in matrices) for j in range(k)] for i in range(k)]
            victims[victim] = {
                **summarize_runs(runs, sizes),
                "confusion_original_test": summed,
                "clean_test": baselines[victim]["clean_test"],
                "clean_peak": baselines[victim]["stats"]["clean_test"]["peak"],
            }
        row = result_row(eps, summary, victims)
        rows.append(row)
        say(
            f"eps {eps:g}: PSNR {row['psnr_db']:.1f} dB, SSIM {row['ssim']:.4f}, worst victim "
            f"{row['worst_victim']} {row['worst_original_test']:.1%} (peak) on original test slices"
        )

    decision = recommend(
        rows, target_orig_acc=settings.target_orig_acc, min_psnr=settings.min_psnr, min_ssim=settings.min_ssim
    )
    warnings = []
    worst_clean = min(b["clean_test"] for b in baselines.values())
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
        "clean_baseline": {v: b["clean_test"] for v, b in baselines.items()},
        "clean_stats": {v: b["stats"]["clean_test"] for v, b in baselines.items()},
        "seeds": [r.seed for r in recipes],
        "interval": baselines[settings.victims[0]]["stats"]["clean_test"]["peak"]["method"],
        "fidelity_match": matched,
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


def _match_cached(
    inputs: Any, manifest: str | Path, model: str | Path, settings: CalibrationSettings, cache: Any, say: Callable
) -> dict[str, Any]:
    """The fidelity-matched eps search on the manifest, cached by data, model, key, target and PGD setup."""
    import shutil

    from medenc.calibrate.plan import digest
    from medenc.experiment.match_psnr import match_psnr

    probe = inputs.key_for(settings.reference_eps)  # the search starts at the reference eps
    ckey = digest("psnr", inputs.manifest.fingerprint(), inputs.model_hash, probe.fingerprint(), settings.psnr_target,
                  settings.precision, settings.device)  # fmt: skip
    found = cache.load("psnr", ckey)
    if found is None:
        work = cache.root / "psnr-work" / ckey
        found = match_psnr(
            manifest, model, probe, settings.psnr_target, work, device=settings.device,
            batch_size=settings.batch_size, precision=settings.precision, log=say,
        )  # fmt: skip
        shutil.rmtree(work, ignore_errors=True)
        cache.save("psnr", ckey, found)
    say(f"PSNR {settings.psnr_target:g} dB: eps {found['eps']:.4g} (subset mean {found['psnr_db']:.2f} dB)")
    return found
