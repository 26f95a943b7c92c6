"""``medenc keygen``: draw a secret encryption key."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medenc.cli._common import fail

app = typer.Typer()

ConfigOption = Annotated[Path | None, typer.Option("--config", help="YAML file of option values; flags override it.")]
PresetOption = Annotated[
    str | None, typer.Option("--preset", help="Shipped config: 'paper' (paper's MRI setting), 'medium' or 'quick'.")
]


def parse_ratio(text: str) -> float | tuple[float, float]:
    """``"0.5"`` -> 0.5; ``"0.3,0.7"`` -> a range drawn per class."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        fail(f"--ratio must be a number or 'low,high', got {text!r}")
    if len(values) == 1:
        return values[0]
    if len(values) == 2:
        return (values[0], values[1])
    fail(f"--ratio must be a number or 'low,high', got {text!r}")


@app.command()
def keygen(
    out: Annotated[Path, typer.Option("--out", "-o", help="Key file to write (JSON, mode 0600).")],
    classes: Annotated[str | None, typer.Option(help="Class names, comma-separated, in model order.")] = None,
    from_: Annotated[
        Path | None,
        typer.Option("--from", help="Take the classes from a model checkpoint (.pt) or a data set manifest (.csv)."),
    ] = None,
    combiner: Annotated[
        str | None,
        typer.Option(help="basic | hconcat | mixup | mixup_concat | cutmix | hconcat_mirror (flip-consistent)"),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed for a reproducible key (default: cryptographic randomness).")
    ] = None,
    norm: Annotated[str | None, typer.Option(help="PGD norm: l2 | linf.")] = None,
    eps: Annotated[float | None, typer.Option(help="PGD radius on the model-input scale.")] = None,
    step: Annotated[float | None, typer.Option(help="PGD step length.")] = None,
    steps: Annotated[int | None, typer.Option(help="PGD iterations.")] = None,
    ratio: Annotated[str | None, typer.Option(help="Concat/Mixup ratio, or 'low,high' to draw per class.")] = None,
    random_start: Annotated[bool, typer.Option(help="Start PGD at a random point of the ball.")] = False,
    eot: Annotated[
        str | None,
        typer.Option(
            help="Hardening: make the perturbation survive these random transforms (comma-separated: "
            "flip,crop,jpeg,blur; expectation over transformations inside PGD)."
        ),
    ] = None,
    eot_samples: Annotated[
        int | None, typer.Option(help="Hardening: random transform draws averaged per PGD step (default 1).")
    ] = None,
    ratio_jitter: Annotated[
        float | None, typer.Option(help="Hardening: per-image random ratio within +-this of the class ratio.")
    ] = None,
    config: ConfigOption = None,
    preset: PresetOption = None,
    force: Annotated[bool, typer.Option(help="Replace an existing key file.")] = False,
) -> None:
    """Draw a fresh secret key: class correspondence, combiner, ratios and PGD settings.

    The key is written with file mode 0600 and never copied into any output; reports name it by its
    fingerprint only.
    """
    from medenc.config import load_config, pick
    from medenc.core.key import EncryptionKey, PGDSettings
    from medenc.files import check_output

    check_output(out, inputs=[from_, config], force=force, what="key file")  # before any work
    settings = load_config(config, preset)
    if (classes is None) == (from_ is None):
        fail("give exactly one of --classes a,b,c or --from MODEL.pt|MANIFEST.csv")
    names = [c.strip() for c in classes.split(",")] if classes is not None else _classes_from(from_)
    pgd = PGDSettings(
        norm=pick(norm, settings, "norm", "l2"),
        eps=float(pick(eps, settings, "eps", 2.0)),
        step=float(pick(step, settings, "step", 0.1)),
        steps=int(pick(steps, settings, "steps", 100)),
        use_best=True,
        random_start=random_start,
    )
    pgd.validate()
    key = EncryptionKey.generate(
        names,
        pick(combiner, settings, "combiner", "hconcat"),
        seed=seed,
        ratio=parse_ratio(pick(ratio, settings, "ratio", "0.5")),
        pgd=pgd,
        eot=_names(pick(eot, settings, "eot", "")),
        eot_samples=int(pick(eot_samples, settings, "eot_samples", 1)),
        ratio_jitter=float(pick(ratio_jitter, settings, "ratio_jitter", 0.0)),
    )
    path = key.save(out, force=force, inputs=[from_, config])
    typer.echo(
        f"wrote key {path} (fingerprint {key.fingerprint()}, {key.combiner}, {len(key.classes)} classes, "
        f"{pgd.norm} eps {pgd.eps} step {pgd.step} x {pgd.steps}); keep it secret: it is what undoes the protection"
    )
    if key.hardened:
        typer.echo(
            f"hardening: EOT {','.join(key.eot) or 'off'} x {key.eot_samples}, ratio jitter {key.ratio_jitter}, "
            f"flip-consistent layout {'on' if key.combiner == 'hconcat_mirror' else 'off'}"
        )


def _names(value: str | list[str]) -> list[str]:
    """``"flip,crop"`` or ``["flip", "crop"]`` (a YAML list) -> ``["flip", "crop"]``."""
    items = value if isinstance(value, list) else str(value).split(",")
    return [str(t).strip() for t in items if str(t).strip()]


def _classes_from(path: Path) -> list[str]:
    from medenc.errors import InputError

    if not path.exists():
        raise InputError("model checkpoint or manifest not found", path)
    if path.suffix == ".csv":
        from medenc.experiment.dataset import read_manifest

        return list(read_manifest(path).classes)
    from medenc.learn.train import load_checkpoint

    _, info = load_checkpoint(path, map_location="cpu")
    return list(info.classes)
