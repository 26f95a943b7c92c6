"""``medenc synth``: write the synthetic 5-class brain-tumour MRI data set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medenc.cli._common import fail

app = typer.Typer()



@app.command("synth")
def synth(
    out: Annotated[Path, typer.Argument(help="Output folder (refused if it exists and is not empty, see --force).")],
    cases: Annotated[int, typer.Option("--cases", "-n", help="Number of cases (at least 5, one per class).")] = 300,
    seed: Annotated[int, typer.Option(help="Seed of labels, splits, images and UIDs.")] = 0,
    size: Annotated[int, typer.Option(help="In-plane matrix W (W x W); slices scale with it (36 at 128).")] = 128,
    slices: Annotated[
        int | None, typer.Option("--slices", help="Axial slices over the 108 mm slab (default: scale with --size).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="dicom, nifti or both.")] = "dicom",
    balanced: Annotated[bool, typer.Option(help="Equal classes instead of the paper's proportions.")] = False,
    difficulty: Annotated[str, typer.Option(help="easy, paper (calibrated to the paper) or hard.")] = "paper",
    montage: Annotated[
        Path | None, typer.Option(help="Also save a PNG with one case per class (largest-tumour slices).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
    uid_root: Annotated[
        str | None, typer.Option("--uid-root", help="Your organisation's DICOM UID root for the UIDs made.")
    ] = None,
) -> None:
    """Generate a SYNTHETIC brain-tumour MRI data set (MNI152 anatomy, 5 tumour classes).

    Writes per case a DICOM series and/or NIfTI volume, the tumour mask (NIfTI) and OUT/manifest.csv
    (case_id,label,split,image,mask) with a stratified 80/20 train/test split.
    """
    from medenc.cli._common import progress_bars
    from medenc.files import check_output
    from medenc.synth import generate as lib

    # validate everything before any work or output
    lib.check_args(cases, seed, size, fmt, difficulty, slices)
    check_output(out, force=force, what="output folder")
    if uid_root is not None:
        from medenc.io.uids import check_uid_root

        try:
            check_uid_root(uid_root)
        except ValueError as error:
            fail(str(error))
    with progress_bars() as bar:  # on stderr: stdout carries only the result lines
        task = bar.add_task("synth", total=cases)
        manifest = lib.write_dataset(
            out, cases, seed=seed, size=size, fmt=fmt, balanced=balanced, difficulty=difficulty,
            progress=lambda done, total: bar.update(task, completed=done), force=force, n_slices=slices,
            uid_root=uid_root,
        )
    typer.echo(f"wrote {cases} SYNTHETIC cases to {out} (manifest: {manifest})")
    if montage is not None:
        lib.save_montage(lib.class_examples(cases, seed, size, difficulty, balanced), montage)
        typer.echo(f"montage: {montage}")
