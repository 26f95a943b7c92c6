"""Fidelity-matched encryption: the eps that gives a target PSNR on a data set, found by measurement.

Protection compared at a fixed eps is not comparable across image sizes (an L2 budget is spread over all
pixels: eps 2 is PSNR 31 dB at 64 x 64 and about 44 dB at 320 x 320). :func:`match_psnr` encrypts a fixed,
class-stratified subset of the slices at trial radii and measures the mean PSNR of what is written
(stored units, as ``encrypt-dataset`` reports it), until it is within a tolerance of the target:

- the next trial eps comes from the measured PSNR through the L2 relation ``PSNR = a - 20 log10(eps)``
  (a secant step in log eps), kept inside the bracket of radii already known to lie above and below the
  target (geometric bisection when the step would leave it);
- the step length scales with eps (the key's step / eps ratio); correspondence, ratios, steps and
  hardening stay the key's.

The result records every trial (eps, PSNR), so a report shows the search, not just its answer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medenc.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from medenc.core.key import EncryptionKey

__all__ = ["key_at", "match_psnr", "stratified_rows"]


def key_at(key: EncryptionKey, eps: float) -> EncryptionKey:
    """``key`` with PGD radius ``eps`` and the step scaled alike (step / eps kept)."""
    ratio = key.pgd.step / key.pgd.eps
    return replace(key, pgd=replace(key.pgd, eps=float(eps), step=float(eps) * ratio))


def stratified_rows(rows: tuple, count: int) -> list:
    """Up to ``count`` rows taken round-robin over the labels, in file order within a label (no randomness)."""
    by_label: dict[str, list] = {}
    for row in rows:
        by_label.setdefault(row.label, []).append(row)
    queues = [list(members) for _, members in sorted(by_label.items())]
    chosen: list = []
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    return chosen


def _write_subset(rows: list, path: Path) -> Path:
    from medenc.atomic import atomic_write_text

    lines = ["case_id,label,split,image"]
    for row in rows:
        image = str(Path(row.path).resolve())
        if any(c in s for s in (row.case_id, row.label, image) for c in ',"\n'):
            raise InputError(f"line {row.line}: commas or quotes in a field are not supported")
        lines.append(",".join((row.case_id, row.label, row.split, image)))
    return atomic_write_text(path, "\n".join(lines) + "\n")


def match_psnr(
    manifest: str | Path,
    model: str | Path,
    key: EncryptionKey,
    target_db: float,
    work_dir: str | Path,
    *,
    subset: int = 32,
    tolerance_db: float = 0.2,
    max_trials: int = 8,
    device: str | None = None,
    batch_size: int = 64,
    precision: str = "auto",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Find the eps whose encrypted slices have a mean PSNR of ``target_db`` (stored units).

    Args:
        manifest: the clean slice manifest (all splits are eligible for the subset).
        model: the base model checkpoint.
        key: the key; its eps is the first trial.
        target_db: the mean PSNR to reach.
        work_dir: folder for the subset manifest and the trial encryptions (created; the caller removes it).
        subset: slices encrypted per trial (class-stratified, fixed across trials).
        tolerance_db: stop when the measured mean is this close to the target.
        max_trials: encryptions at most; the closest trial is chosen.
        device: where PGD runs.
        batch_size: PGD samples per batch.
        precision: PGD precision.
        log: called with one line per trial.

    Returns:
        ``target_psnr_db``, ``eps`` and ``step`` (the chosen trial's), ``psnr_db`` (its subset mean),
        ``trials`` (every ``eps``, ``psnr_db``), ``subset_slices``, ``tolerance_db``, ``converged``,
        ``seconds`` and the ``basis`` of the PSNR.

    Raises:
        InputError: a target that is not a positive finite number, or a subset smaller than one slice.
    """
    from medenc.experiment.dataset import read_manifest
    from medenc.experiment.encrypt_dataset import encrypt_dataset
    from medenc.learn.checkpoint import load_checkpoint

    if not (isinstance(target_db, (int, float)) and math.isfinite(target_db) and target_db > 0):
        raise InputError(f"the PSNR target must be a number of dB > 0, got {target_db}")
    if subset < 1 or max_trials < 1:
        raise InputError("the PSNR search needs at least one slice and one trial")
    started = time.perf_counter()
    _, info = load_checkpoint(model)
    data = read_manifest(manifest, classes=info.classes)
    rows = stratified_rows(data.rows, subset)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    subset_csv = _write_subset(rows, work / "subset" / "manifest.csv")  # trials go beside it, not inside
    trials: list[dict[str, float]] = []
    above = below = None  # largest eps measured above the target, smallest measured below it
    eps = float(key.pgd.eps)
    for number in range(max_trials):
        summary = encrypt_dataset(
            subset_csv, model, key_at(key, eps), work / f"trial-{number}", device=device, batch_size=batch_size,
            precision=precision, force=True,
        )  # fmt: skip
        measured = float(summary["fidelity_native_units"]["psnr_db"]["mean"])
        trials.append({"eps": eps, "psnr_db": measured})
        if log is not None:
            log(f"PSNR search {number + 1}: eps {eps:.4g} -> {measured:.2f} dB (target {target_db:g})")
        if abs(measured - target_db) <= tolerance_db:
            break
        if measured > target_db:
            above = eps if above is None else max(above, eps)
        else:
            below = eps if below is None else min(below, eps)
        step = eps * 10 ** ((measured - target_db) / 20)  # PSNR = a - 20 log10(eps)
        if above is not None and below is not None and not above < step < below:
            step = math.sqrt(above * below)
        eps = step
    best = min(trials, key=lambda t: abs(t["psnr_db"] - target_db))
    return {
        "target_psnr_db": float(target_db),
        "eps": best["eps"],
        "step": key_at(key, best["eps"]).pgd.step,
        "psnr_db": best["psnr_db"],
        "trials": trials,
        "subset_slices": len(rows),
        "tolerance_db": tolerance_db,
        "converged": abs(best["psnr_db"] - target_db) <= tolerance_db,
        "seconds": round(time.perf_counter() - started, 1),
        "basis": "mean PSNR over the subset's written slices, stored units, each slice's own range as the peak",
    }
