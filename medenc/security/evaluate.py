"""``medenc security-eval``: what a determined data thief recovers, defence by defence, architecture by
architecture.

For every thief's counter-measure (:mod:`medenc.security.defenses`; each a row of
:mod:`medenc.security.rows`) and every architecture, fresh models (one per training seed) are trained the
thief's way on the encrypted training split and tested on the original test split (the images the thief
really wants to classify: after every epoch, for the peak) and on the encrypted test split. Two reference rows frame
the table: the clean baseline (trained and tested on originals) and the undefended thief. The thief
also holds a few labelled originals (``ThiefSettings.clean_fraction`` of the clean training split,
stratified): his validation set for early stopping, his fine-tuning set, and his surrogate's training
set for key recovery. The fidelity of the encrypted images (PSNR, SSIM) goes beside every figure.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from medenc.core.encrypt import resolve_device
from medenc.errors import InputError
from medenc.files import check_output, manifest_inputs
from medenc.reporting import REPORT_NAME, header, write_json
from medenc.security.defenses import Defence
from medenc.security.rows import ENCRYPTED, ORIGINAL, Row, RowContext, ThiefSettings, build_rows
from medenc.security.volume import volume_entry

if TYPE_CHECKING:  # pragma: no cover
    from medenc.core.key import EncryptionKey

__all__ = ["Row", "ThiefSettings", "security_evaluate", "thief_subset"]


def thief_subset(labels: Tensor, fraction: float, seed: int) -> Tensor:
    """Indices of a stratified random share of the samples (at least one per class).

    Shape:
        labels: (N,); result: (M,) long, sorted.
    """
    if not 0.0 < fraction <= 1.0:
        raise InputError(f"the thief's clean fraction must lie in (0, 1], got {fraction}")
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in torch.unique(labels):
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(members.numel(), generator=generator)]
        chosen.append(members[: max(1, round(fraction * members.numel()))])
    return torch.sort(torch.cat(chosen)).values


def security_evaluate(
    clean: str | Path,
    encrypted: str | Path | None,
    model: str | Path,
    key: str | Path,
    out: str | Path,
    *,
    archs: Sequence[str] = (),
    defences: Sequence[Defence] = (),
    settings: ThiefSettings | None = None,
    key_recovery: bool = False,
    force: bool = False,
    progress_factory: Callable[[str], Any] | None = None,
    compare_with: str | Path | None = None,
    on_result: Callable[[str, str, dict[str, Any]], None] | None = None,
    extra_rows: Sequence[Row] = (),
    psnr: float | None = None,
    scorecard: bool = False,
    log: Callable[[str], None] | None = None,
    base_only: Sequence[str] = (),
    studies: str | Path | None = None,
    on_plan: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run the defence x architecture table (and optionally key recovery); write the report folder.

    Every cell is trained with ``settings.seeds`` seeds and scored on the original test images after every
    epoch: it holds the mean final and peak (oracle early stop) accuracy with 95% intervals
    (:func:`medenc.learn.victims.summarize_runs`) and a verdict, "not protected" when its peak interval
    reaches the clean baseline's.

    Args:
        clean: original slice manifest.
        encrypted: encrypted slice manifest of the same cases (None with ``psnr``).
        model: the base model checkpoint (its architecture is always a column; its input size is used).
        key: the key the data was encrypted with (for the adversarial-training budget and to score key
            recovery; the report names it by fingerprint only).
        out: report folder (``report.json``, ``report.md``, PNG charts), written atomically.
        archs: thief architectures besides the base's.
        defences: the thief's counter-measures.
        settings: the thief's training recipe and seeds.
        key_recovery: also run the paper's key-recovery attack.
        force: replace an existing ``out``.
        progress_factory: given a description, returns a progress display for :func:`medenc.learn.train.fit`.
        compare_with: an earlier ``report.json`` (e.g. before hardening): the report gets a before/after
            table, and the rows that do not depend on the encrypted set (clean baseline, few clean only)
            are taken from it when it used the same clean manifest and training recipe.
        on_result: called with ``(row, architecture, cell)`` after every cell (a log line).
        extra_rows: more rows (:class:`medenc.security.rows.Row`), after the defences' rows.
        psnr: fidelity-matched comparison: encrypt ``clean`` with ``key`` at the eps whose mean PSNR (stored
            units) is this many dB (:func:`medenc.experiment.match_psnr.match_psnr`), into ``out/encrypted``.
        scorecard: also write ``scorecard.md`` and ``scorecard.png`` (:mod:`medenc.security.scorecard`).
        log: called with one line per step of the PSNR search.
        base_only: rows (labels or defence names) trained for the base architecture only, to save time; their
            other cells are absent ("not run").
        studies: instead of ``encrypted``: the output folder of ``encrypt-study --batch`` on the studies of
            ``clean``, then a studies manifest (``case_id,label,split,image,mask``); every row runs on the
            largest-tumor slices, and :func:`medenc.security.volume.volume_rows` in ``extra_rows`` add the rows
            of the thief who holds volumes.
        on_plan: called once, before any training, with the number of thief models to train (for an
            overall progress bar).

    Returns:
        The ``report.json`` content.
    """
    from medenc.atomic import atomic_directory
    from medenc.core.key import load_key_for
    from medenc.experiment.evaluate import load_eval_data
    from medenc.learn.checkpoint import load_base_model
    from medenc.learn.intervals import not_protected
    from medenc.learn.models import ARCHITECTURES
    from medenc.learn.victims import seed_recipes
    from medenc.security.report import write_security_report

    settings = settings or ThiefSettings()
    if sum(x is not None for x in (encrypted, psnr, studies)) != 1:
        raise InputError("give one of: an encrypted manifest, a PSNR target (--psnr) or the shared studies (--studies)")
    out = Path(out)
    encrypted_inputs = manifest_inputs(encrypted) if encrypted else [Path(studies)] if studies else []
    inputs = [*manifest_inputs(clean), *encrypted_inputs, model, key]
    check_output(out, inputs=inputs, force=force, what="report folder")
    base = load_base_model(model)
    the_key = load_key_for(key, tuple(base.info.classes))
    columns = list(dict.fromkeys([base.info.arch, *archs]))
    unknown = [a for a in columns if a not in ARCHITECTURES]
    if unknown:
        raise InputError(f"unknown architecture(s) {', '.join(unknown)}; known: {', '.join(ARCHITECTURES)}")
    recipes = seed_recipes(settings, settings.seeds)
    started = time.perf_counter()
    previous = _read_previous(compare_with, clean, settings)
    rows = build_rows(defences, extra_rows)
    if base_only:
        unknown = sorted(set(base_only) - {r.label for r in rows} - {d.name for d in defences})
        if unknown:
            raise InputError(f"--base-only names rows that are not in the table: {', '.join(unknown)}")
        rows = [
            replace(r, archs=(base.info.arch,)) if r.label in base_only or (r.defence and r.defence.name in base_only)
            else r
            for r in rows
        ]  # fmt: skip
    # the cells each row fills (a row run for some architectures only leaves the others absent), and those
    # taken over from the earlier report (same clean data, same recipe)
    archs_of = {row.label: [a for a in columns if row.archs is None or a in row.archs] for row in rows}
    reused = {
        (row.label, arch): previous["table"][row.label][arch]
        for row in rows
        for arch in archs_of[row.label]
        if previous.get("reusable") and row.clean_only and arch in previous["table"].get(row.label, {})
    }
    if on_plan is not None:
        on_plan((sum(map(len, archs_of.values())) - len(reused)) * len(recipes))
    with atomic_directory(out, force=force, inputs=inputs) as tmp:
        matched = None
        if psnr is not None:
            matched, encrypted = _encrypt_at_psnr(clean, model, the_key, psnr, tmp, settings, log)
        if studies is not None:
            from medenc.security.volume import load_study_data

            data = load_study_data(clean, studies, base.preprocess.size[0], tuple(base.info.classes))
        else:
            data = load_eval_data(clean, encrypted, base.preprocess.size[0], base.info.classes)
        index = thief_subset(data.clean_train[1], settings.clean_fraction, settings.seed)
        context = RowContext(
            data, (data.clean_train[0][index], data.clean_train[1][index]), settings, the_key,
            early_stop=any(d.name == "early-stop" for d in defences),
        )  # fmt: skip
        sizes = {ORIGINAL: int(data.clean_test[1].numel()), ENCRYPTED: int(data.enc_test[1].numel())}
        table: dict[str, dict[str, dict[str, Any]]] = {}
        seconds: dict[str, float] = {}
        for row in rows:
            table[row.label] = {}
            t0 = time.perf_counter()
            for arch in archs_of[row.label]:
                if (row.label, arch) in reused:
                    table[row.label][arch] = reused[(row.label, arch)]
                    continue
                results = []
                for recipe in recipes:
                    progress = progress_factory(f"{row.label} / {arch}") if progress_factory else None
                    results.append(row.run(context, arch, recipe, progress))
                table[row.label][arch] = _cell(row, results, sizes, context)
                if on_result is not None:
                    on_result(row.label, arch, table[row.label][arch])
            seconds[row.label] = round(time.perf_counter() - t0, 1)
            context.transformed.pop(row.label, None)  # a row's transformed images are not needed again
        clean_row = table["clean baseline"]
        for row in rows:
            for arch, cell in table[row.label].items():
                if cell.get("note") and not row.clean_only:  # nothing for this thief to train on
                    cell["verdict"] = "protected"
                elif row.clean_only or "stats" not in cell:
                    cell["verdict"] = "reference"
                else:
                    exposed = not_protected(cell["stats"][ORIGINAL]["peak"], clean_row[arch]["stats"][ORIGINAL]["peak"])
                    cell["verdict"] = "not protected" if exposed else "protected"

        recovery = None
        if key_recovery:
            recovery = _key_recovery(context, base.info.arch, recipes[0])

        report = {
            "rows": [row.label for row in rows],
            "archs": columns,
            "base_arch": base.info.arch,
            "table": table,
            "defences": {
                d.label: {"name": d.name, "param": d.param, "kind": d.kind, **context.notes.get(d.label, {})}
                for d in defences
            },
            "reference_rows": [row.label for row in rows if row.clean_only],
            "classes": list(data.classes),
            "chance": 1.0 / len(data.classes),
            "seeds": [r.seed for r in recipes],
            "interval": clean_row[columns[0]]["stats"][ORIGINAL]["peak"]["method"]
            if "stats" in clean_row[columns[0]]
            else None,
            "counts": {
                "train": int(data.clean_train[1].numel()),
                "test": int(data.clean_test[1].numel()),
                "thief_clean": int(index.numel()),
            },
            "fidelity": _fidelity(data, encrypted),
            "fidelity_match": matched,
            "key": {
                "fingerprint": the_key.fingerprint(),
                "combiner": the_key.combiner,
                "pgd": asdict(the_key.pgd if matched is None else replace(the_key.pgd, **matched["pgd"])),
                "hardening": {
                    "eot": list(the_key.eot),
                    "eot_samples": the_key.eot_samples,
                    "ratio_jitter": the_key.ratio_jitter,
                },
            },
            "key_recovery": recovery,
            "compared_with": previous.get("summary"),
            "clean_manifest": str(clean),
            "encrypted_manifest": str(out / "encrypted" / "manifest.csv") if matched else encrypted and str(encrypted),
            "model": str(model),
            "settings": asdict(settings),
            "row_seconds": seconds,
            **({"volume": volume_entry(studies, data)} if studies is not None else {}),
            **header("security-eval", started=started, device=resolve_device(settings.device)),
        }
        write_json(tmp / REPORT_NAME, report)
        write_security_report(report, tmp)
        if scorecard:
            from medenc.security.scorecard import write_scorecard

            write_scorecard(report, tmp)
    return report


def _cell(row: Row, results: list[Any], sizes: dict[str, int], context: RowContext) -> dict[str, Any]:
    """A table cell from one row's runs over the seeds: :func:`medenc.learn.victims.summarize_runs`, with what
    a row that is not a defence measured besides accuracy (``context.notes``); a run without a final accuracy
    is a thief with nothing to train on (its note says why)."""
    from medenc.learn.victims import summarize_runs

    notes = context.notes.get(row.label, {}) if row.defence is None else {}
    if not results[0].final:
        return {ORIGINAL: None, ENCRYPTED: None, **notes}
    return {**summarize_runs(results, sizes), **notes}


def _fidelity(data: Any, encrypted: str | Path | None) -> dict[str, Any]:
    """The report's fidelity: of the encrypted slices (:func:`medenc.experiment.evaluate.data_fidelity`), or of
    the shared studies' slices in stored units from their reports."""
    from medenc.experiment.evaluate import data_fidelity, image_fidelity

    if encrypted is not None:
        return data_fidelity(data, encrypted)
    from medenc.security.volume import stored_fidelity

    return {"model_input_window": image_fidelity(data), **stored_fidelity(data)}


def _encrypt_at_psnr(
    clean: str | Path,
    model: str | Path,
    key: EncryptionKey,
    target: float,
    folder: Path,
    settings: ThiefSettings,
    log: Callable[[str], None] | None,
) -> tuple[dict[str, Any], Path]:
    """Search the eps that gives ``target`` dB on a subset, encrypt the whole manifest at it into
    ``folder/encrypted``; the search's record (with the whole set's PSNR) and the encrypted manifest."""
    import shutil

    from medenc.experiment.encrypt_dataset import encrypt_dataset
    from medenc.experiment.match_psnr import key_at, match_psnr

    search = match_psnr(clean, model, key, target, folder / "psnr-search", device=settings.device, log=log)
    shutil.rmtree(folder / "psnr-search", ignore_errors=True)
    t0 = time.perf_counter()
    summary = encrypt_dataset(clean, model, key_at(key, search["eps"]), folder / "encrypted", device=settings.device)
    fid = summary["fidelity_native_units"]["psnr_db"]
    search["whole_set"] = {"psnr_db_mean": fid["mean"], "psnr_db_min": fid["min"], "slices": summary["slices"]}
    search["encrypt_seconds"] = round(time.perf_counter() - t0, 1)
    search["pgd"] = {"eps": search["eps"], "step": search["step"]}
    if log is not None:
        log(
            f"encrypted {summary['slices']} slices at eps {search['eps']:.4g}: PSNR {fid['mean']:.2f} dB "
            f"(target {target:g})"
        )
    return search, folder / "encrypted" / "manifest.csv"


def _key_recovery(context: RowContext, arch: str, recipe: Any) -> dict[str, Any]:
    """The paper's key-recovery attack with the undefended thief's model and a few-clean surrogate."""
    from medenc.security.key_recovery import recover_key
    from medenc.security.rows import run_few_clean, run_undefended

    t0 = time.perf_counter()
    if ("undefended", arch, recipe.seed) not in context.models:
        run_undefended(context, arch, recipe)
    if ("few clean only", arch, recipe.seed) not in context.models:
        run_few_clean(context, arch, recipe)
    enc_model = context.models[("undefended", arch, recipe.seed)]
    surrogate = context.models[("few clean only", arch, recipe.seed)]
    recovery = recover_key(enc_model, surrogate, *context.thief, context.key, device=context.settings.device)
    recovery["surrogate_arch"] = recovery["thief_model_arch"] = arch
    recovery["seconds"] = round(time.perf_counter() - t0, 1)
    return recovery


def _read_previous(path: str | Path | None, clean: str | Path, settings: ThiefSettings) -> dict[str, Any]:
    """An earlier report to compare with; ``reusable`` when its clean-data rows can be taken over."""
    if path is None:
        return {}
    try:
        old = json.loads(Path(path).read_text(encoding="utf-8"))
        table, rows = old["table"], old["rows"]
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError("not a security-eval report.json", path) from None
    same_data = Path(old.get("clean_manifest", "")).resolve() == Path(clean).resolve()
    summary = {
        "path": str(path),
        "rows": rows,
        "table": table,
        "fidelity": old.get("fidelity"),
        "key": old.get("key"),
        "key_recovery": old.get("key_recovery"),
    }
    return {"table": table, "summary": summary, "reusable": same_data and old.get("settings") == asdict(settings)}
