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
        typer.Option(help="largest (the paper; needs --mask) | tumor (every tumor slice; needs --mask) | all."),
    ] = "largest",
    series: Annotated[
        str | None, typer.Option("--series", help="SeriesInstanceUID to take from a folder of several series.")
    ] = None,
    only_selected: Annotated[
        bool, typer.Option("--only-selected", help="Write only the encrypted slices, not the complete volume.")
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
        typer.Option(help="PGD samples (slices x targets) per call; default: all of a study on CUDA, 64 on CPU."),
    ] = None,
    precision: Annotated[str, typer.Option(help="fp32 | bf16 | auto (bf16 on CUDA).")] = "auto",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output.")] = False,
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

    The input is only read. OUT appears only when complete and holds no key material.

    Share OUT/series (or OUT/image.nii.gz) only: report.json stays in house (its predictions hint at the key).
    """
    import warnings

    from medenc.cli._common import progress_bars

    if batch_size is not None and batch_size < 1:
        fail(f"--batch-size must be >= 1, got {batch_size}")
    if (study is None) == (batch is None):
        fail("give exactly one of STUDY or --batch STUDIES.csv")
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
                    batch, model, key, out, slices, only_selected, device, batch_size, precision, force, bars,
                    uid_root=uid_root, to_pacs=to_pacs, pacs_timeout=pacs_timeout, workers=workers,
                    ray_address=ray_address,
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
                bars.add_task(f"encrypting {study}", total=None)
                report = (encrypt_pacs_study if remote else encrypt_study)(
                    study,  # type: ignore[arg-type]
                    model=model,
                    key=key,
                    label=label,
                    out=out,
                    mask=mask,
                    slices=slices,
                    series=series,
                    only_selected=only_selected,
                    device=device,
                    batch_size=batch_size,
                    precision=precision,
                    force=force,
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


def _run_batch(
    batch: Path,
    model: Path,
    key: Path,
    out: Path,
    slices: str,
    only_selected: bool,
    device: str | None,
    batch_size: int | None,
    precision: str,
    force: bool,
    bars: Any,
    *,
    uid_root: str | None = None,
    to_pacs: str | None = None,
    pacs_timeout: float = 60.0,
    workers: int = 1,
    ray_address: str | None = None,
) -> dict[str, Any]:
    from medenc.study.batch import encrypt_batch, read_batch

    task = bars.add_task("encrypting studies", total=len(read_batch(batch)))

    def on_case(case_id: str, status: str, error: str | None) -> None:
        bars.update(task, advance=1)
        if error is not None:
            bars.console.print(f"medenc: case {case_id} failed: {error}", markup=False, highlight=False)

    return encrypt_batch(
        batch,
        model=model,
        key=key,
        out=out,
        slices=slices,
        only_selected=only_selected,
        device=device,
        batch_size=batch_size,
        precision=precision,
        force=force,
        on_case=on_case,
        uid_root=uid_root,
        to_pacs=to_pacs,
        pacs_timeout=pacs_timeout,
        workers=workers,
        ray_address=ray_address,
    )


def _print_report(report: dict[str, Any], out: Path) -> None:
    timing = report["timing_s"]
    fid = report["fidelity"]
    chosen = report["slices"]
    base = report["base_model"]
    n = len(chosen["encrypted"])
    typer.echo(
        f"encrypted {n} of {chosen['total']} slices ({chosen['mode']}) in {timing['total']:.2f} s on "
        f"{report['device']}: PGD {timing['pgd']:.2f} s in {report['pgd_batches']['calls']} call(s), "
        f"I/O {timing['io']:.2f} s (key {report['key_fingerprint']})"
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
    for result in summary["results"]:
        for message in result["warnings"]:
            warn(f"case {result['case_id']}: {message}")
        if result["status"] == "failed":
            typer.echo(f"  failed: {result['case_id']}: {result['error']}")
    typer.echo(f"summary: {out / 'batch-summary.json'}")
