"""``medenc encrypt-study``: one study (or a batch of them) -> shareable encrypted copies."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from medenc.cli._common import fail, warn

app = typer.Typer()


@app.command("encrypt-study")
def encrypt_study_command(
    model: Annotated[Path, typer.Option("--model", help="Base classifier checkpoint from `medenc train`.")],
    key: Annotated[Path, typer.Option("--key", help="Key file from `medenc keygen` (read only; keep it secret).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (batch: one subfolder per case).")],
    study: Annotated[
        str | None,
        typer.Argument(
            metavar="STUDY",
            help="DICOM folder (one or more series), DICOM file, NIfTI volume, or a DICOMweb study URL "
            "http(s)://HOST:PORT/<root>/studies/<StudyInstanceUID> (credentials: see docs/pacs.md).",
        ),
    ] = None,
    label: Annotated[str | None, typer.Option("--label", help="The study's diagnosis: a class of the model.")] = None,
    mask: Annotated[
        Path | None, typer.Option("--mask", help="Tumor mask on the image grid (NIfTI or DICOM SEG).")
    ] = None,
    slices: Annotated[
        str,
        typer.Option(
            help="Slices to encrypt: all (default: the whole volume, no original slice shared) | largest (the "
            "paper's slice; needs --mask) | tumor (every tumor slice; needs --mask). With largest or tumor only "
            "the encrypted slices are written, unless --allow-original-slices."
        ),
    ] = "all",
    series: Annotated[
        str | None, typer.Option("--series", help="SeriesInstanceUID to take from a folder of several series.")
    ] = None,
    allow_original_slices: Annotated[
        bool,
        typer.Option(
            "--allow-original-slices",
            help="Also write the slices that are not encrypted, with their ORIGINAL pixels (a complete volume). "
            "Unsafe: a thief trains on them. Recorded in report.json and given as a warning.",
        ),
    ] = False,
    coherent_slices: Annotated[
        int,
        typer.Option(
            "--coherent-slices",
            help="Hardening against through-plane averaging: the perturbations of adjacent slices form one smooth "
            "field, optimised jointly, knots every N slices (1: each slice on its own).",
        ),
    ] = 1,
    only_selected: Annotated[
        bool, typer.Option("--only-selected", hidden=True, help="Kept for old scripts: now the default.")
    ] = False,
    batch: Annotated[
        Path | None,
        typer.Option(
            "--batch",
            help="CSV of studies: case_id,label,image[,mask][,series] (image: a path or study URL); resumable.",
        ),
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda (default: CUDA if available).")] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(help="PGD samples (slices x targets) per call; default: all of a study (CPU: up to 2^21 pixels)."),
    ] = None,
    precision: Annotated[str, typer.Option(help="fp32 | bf16 | auto (bf16 on CUDA).")] = "auto",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output.")] = False,
    allow_external_paths: Annotated[
        bool,
        typer.Option(
            "--allow-external-paths",
            help="--batch: accept image/mask paths that are absolute, use '..' or links leading outside the "
            "CSV's folder.",
        ),
    ] = False,
    uid_root: Annotated[
        str | None,
        typer.Option("--uid-root", help="Your organisation's DICOM UID root for the new UIDs (default: pydicom's)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML site settings; its uid_root key is used without --uid-root.")
    ] = None,
    to_pacs: Annotated[
        str | None,
        typer.Option("--to-pacs", help="DICOMweb root URL: also store the derived series into its study (STOW-RS)."),
    ] = None,
    pacs_timeout: Annotated[
        float, typer.Option("--pacs-timeout", help="Seconds to wait for the PACS (connection and each answer).")
    ] = 60.0,
    workers: Annotated[
        int, typer.Option("--workers", help="Batch: processes encrypting at once (Ray actors; 1 GPU each on CUDA).")
    ] = 1,
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="Batch: an existing Ray cluster (auto or HOST:PORT).")
    ] = None,
) -> None:
    """Encrypt a study before sharing: a derived series of the same study plus OUT/report.json.

    By default every slice is encrypted and the series holds no original slice. The input is only read.
    OUT appears only when complete and holds no key material.

    Share OUT/series (or OUT/image.nii.gz) only: report.json stays in house (its predictions hint at the key).
    """
    import warnings

    from medenc.cli._common import progress_bars

    if batch_size is not None and batch_size < 1:
        fail(f"--batch-size must be >= 1, got {batch_size}")
    if (study is None) == (batch is None):
        fail("give exactly one of STUDY or --batch STUDIES.csv")
    if only_selected and allow_original_slices:
        fail("--only-selected and --allow-original-slices contradict each other (only encrypted slices is the default)")
    if batch is None and (workers != 1 or ray_address is not None):
        fail("--workers and --ray-address are for --batch")
    if workers < 1:
        fail(f"--workers must be >= 1, got {workers}")
    from medenc.config import load_config, pick

    uid_root = pick(uid_root, load_config(config), "uid_root", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if batch is not None:
            given = [name for name, value in (("--label", label), ("--mask", mask), ("--series", series)) if value]
            if given:
                fail(f"{', '.join(given)} cannot be used with --batch: give them per case in the CSV")
            with progress_bars() as bars:
                summary = _run_batch(
                    batch, bars, model=model, key=key, out=out, slices=slices,
                    allow_original_slices=allow_original_slices, coherent_slices=coherent_slices, device=device,
                    batch_size=batch_size, precision=precision, force=force,
                    allow_external_paths=allow_external_paths, uid_root=uid_root, to_pacs=to_pacs,
                    pacs_timeout=pacs_timeout, workers=workers, ray_address=ray_address,
                )
        else:
            if label is None:
                fail("--label is required: the study's diagnosis, a class of the model")
            from medenc.io.dicomweb import is_dicomweb_url
            from medenc.study.encrypt import encrypt_study
            from medenc.study.pacs import encrypt_pacs_study

            remote = is_dicomweb_url(study) or to_pacs is not None  # type: ignore[arg-type]
            pacs = {"to_pacs": to_pacs, "pacs_timeout": pacs_timeout} if remote else {}
            with progress_bars() as bars:
                task = bars.add_task(f"{study}: reading", total=1)
                report = (encrypt_pacs_study if remote else encrypt_study)(
                    study,  # type: ignore[arg-type]
                    model=model,
                    key=key,
                    label=label,
                    out=out,
                    mask=mask,
                    slices=slices,
                    series=series,
                    allow_original_slices=allow_original_slices,
                    coherent_slices=coherent_slices,
                    device=device,
                    batch_size=batch_size,
                    precision=precision,
                    force=force,
                    progress=_drawer(bars, task, f"{study}: "),
                    uid_root=uid_root,
                    **pacs,
                )
    for w in caught:
        warn(str(w.message))
    if batch is not None:
        _print_batch_summary(summary, out)
        if summary["failed"]:
            raise typer.Exit(1)
    else:
        _print_report(report, out)


def _run_batch(batch: Path, bars: Any, **options: Any) -> dict[str, Any]:
    """:func:`medenc.study.batch.encrypt_batch` with a bar over the studies and one for the current case."""
    from medenc.study.batch import encrypt_batch, read_batch

    total = len(read_batch(batch, allow_external_paths=options["allow_external_paths"]))
    task = bars.add_task("studies", total=total)
    case_task = bars.add_task("", total=1)
    draw = _drawer(bars, case_task)

    def on_case(case_id: str, status: str, error: str | None) -> None:
        bars.update(task, advance=1)
        if error is not None:
            bars.console.print(f"medenc: case {case_id} failed: {error}", markup=False, highlight=False)

    return encrypt_batch(
        batch,
        on_case=on_case,
        on_progress=lambda case_id, phase, done, total: draw(phase, done, total, f"{case_id}: "),
        **options,
    )


PHASES = {"read": "reading", "pgd": "PGD (slices)", "measure": "measuring (slices)", "write": "writing"}


def _drawer(bars: Any, task: Any, prefix: str = "") -> Any:
    """A ``progress(phase, done, total)`` callback that draws one bar whose total is the phase's."""

    def draw(phase: str, done: float, total: float, case: str = prefix) -> None:
        bars.update(task, description=f"{case}{PHASES.get(phase, phase)}", completed=done, total=total)

    return draw


def _print_report(report: dict[str, Any], out: Path) -> None:
    timing = report["timing_s"]
    fid = report["fidelity"]
    chosen = report["slices"]
    base = report["base_model"]
    n = len(chosen["encrypted"])
    typer.echo(
        f"encrypted {n} of {chosen['total']} slices ({chosen['mode']}) in {timing['total']:.2f} s on "
        f"{report['device']}: PGD {timing['pgd']:.2f} s in {report['pgd_batches']['calls']} call(s), "
        f"I/O {timing['io']:.2f} s (read {timing['read']:.2f}, write {timing['write']:.2f}, verify "
        f"{timing['verify']:.2f}), measuring {timing['evaluate']:.2f} s (key {report['key_fingerprint']})"
    )
    if fid["psnr_db"]["min"] is not None:
        typer.echo(
            f"fidelity: PSNR min {fid['psnr_db']['min']:.1f} dB, SSIM min {fid['ssim']['min']:.4f}, "
            f"Linf max {fid['linf_stored']['max']:.0f} stored units"
        )
    typer.echo(
        f"base model predicted {report['label']!r} on {base['slices_predicted_as_label_before']}/{n} slices before, "
        f"{base['slices_predicted_as_label_after']}/{n} after"
    )
    sharing = report["sharing"]
    written = chosen["total"] - sharing["slices_left_out"]
    if sharing["unencrypted_slices_written"]:
        tumor = sharing["unencrypted_slices_with_tumor"]
        typer.echo(
            f"shared series: {written} slices, {sharing['unencrypted_slices_written']} of them UNENCRYPTED "
            f"(original pixels; {'?' if tumor is None else tumor} with tumor)"
        )
    else:
        left_out = f", {sharing['slices_left_out']} not encrypted and left out" if sharing["slices_left_out"] else ""
        typer.echo(f"shared series: {written} slices, all encrypted{left_out}")
    uid = report["output"].get("series_uid")
    series = f" (series {uid})" if uid else ""
    typer.echo(f"wrote {report['output']['path']}{series} and {out / 'report.json'}")
    stored = (report.get("pacs") or {}).get("stored")
    if stored:
        typer.echo(
            f"stored series {stored['series_uid']} ({stored['instances']} instance(s)) into study "
            f"{stored['study_uid']} on {stored['url']}"
        )


def _print_batch_summary(summary: dict[str, Any], out: Path) -> None:
    typer.echo(
        f"batch: {summary['cases']} cases: {summary['encrypted']} encrypted, {summary['skipped']} skipped "
        f"(already done), {summary['failed']} failed, in {summary['seconds']:.1f} s"
        + (f" on {summary['engine']['workers']} Ray workers" if summary["engine"]["engine"] == "ray" else "")
    )
    if summary["encrypted"]:
        split = summary["timing_s"]
        typer.echo(f"  time in encrypted cases: PGD {split['pgd']:.1f} s, I/O {split['io']:.1f} s, "
                   f"measuring {split['evaluate']:.1f} s")
    for result in summary["results"]:
        for message in result["warnings"]:
            warn(f"case {result['case_id']}: {message}")
        if result["status"] == "failed":
            typer.echo(f"  failed: {result['case_id']}: {result['error']}")
    typer.echo(f"summary: {out / 'batch-summary.json'}")
