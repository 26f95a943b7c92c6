"""No command that writes may destroy an input (issue #22, item 1): every input's bytes survive every try.

Each command is run with ``--out`` equal to an input, holding inputs, or inside an input folder, with
``--force``: each must refuse in one line (exit 2) and leave every file of the work folder unchanged.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medenc.cli import app

pytestmark = pytest.mark.slow  # end to end: trains models (kept in the default run)

runner = CliRunner()


def _run(*args: object) -> object:
    return runner.invoke(app, [str(a) for a in args])


def _checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/studies (synthetic), root/ds (slices + manifest.csv + base.pt + key.json), as the audit had it."""
    from medenc.synth.generate import write_dataset

    root = tmp_path_factory.mktemp("safety")
    studies = write_dataset(root / "studies", 10, seed=5, size=32, fmt="nifti", balanced=True)
    assert _run("prepare", studies, "--out", root / "ds").exit_code == 0
    result = _run("train", root / "ds" / "manifest.csv", "--arch", "smallcnn", "--out", root / "ds" / "base.pt",
                  "--epochs", "1", "--batch-size", "8", "--size", "32", "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    result = _run("keygen", "--from", root / "ds" / "base.pt", "--out", root / "ds" / "key.json", "--steps", "2")
    assert result.exit_code == 0, result.output
    return root


def _cases(root: Path) -> dict[str, tuple[list[object], str]]:
    ds, studies = root / "ds", root / "studies"
    manifest, model, key = ds / "manifest.csv", ds / "base.pt", ds / "key.json"
    first = (studies / "manifest.csv").read_text().splitlines()[1].split(",")  # case_id,label,split,image,mask
    study, label, mask = studies / first[3], first[1], studies / first[4]
    one_study = ["encrypt-study", study, "--mask", mask, "--label", label, "--model", model, "--key", key,
                 "--device", "cpu", "--force", "--out"]  # fmt: skip
    enc = ["encrypt-dataset", manifest, "--model", model, "--key", key, "--device", "cpu", "--force", "--out"]
    thief = ["security-eval", "--clean", manifest, "--encrypted", manifest, "--model", model, "--key", key,
             "--force", "--out"]  # fmt: skip
    return {
        "prepare into its studies": (["prepare", studies / "manifest.csv", "--force", "--out", studies],
                                     "is the input"),
        "prepare inside its studies": (["prepare", studies / "manifest.csv", "--force", "--out", studies / "x"],
                                       "lies inside the input folder"),
        "prepare over the work folder": (["prepare", studies / "manifest.csv", "--force", "--out", root],
                                         "holds the input"),
        "encrypt-dataset --out ds (the audit's case)": ([*enc, ds], "is the input"),
        "encrypt-dataset inside ds": ([*enc, ds / "encrypted"], "lies inside the input folder"),
        "encrypt-dataset over the work folder": ([*enc, root], "holds the input"),
        "encrypt-dataset --out the key": ([*enc, key], "is the input"),
        "encrypt-dataset --out the model": ([*enc, model], "is the input"),
        "evaluate --out ds": (["evaluate", "--clean", manifest, "--encrypted", manifest, "--arch", "smallcnn",
                               "--force", "--out", ds], "is the input"),
        "train --out the manifest": (["train", manifest, "--arch", "smallcnn", "--force", "--out", manifest],
                                     "is the input"),
        "keygen --out the model": (["keygen", "--from", model, "--force", "--out", model], "is the input"),
        "keygen --out a folder": (["keygen", "--classes", "a,b,c", "--force", "--out", ds], "is a folder"),
        "calibrate --out ds": (["calibrate", manifest, "--model", model, "--force", "--out", ds], "is the input"),
        "calibrate --write-key the key": (["calibrate", manifest, "--model", model, "--key", key, "--out",
                                           root / "c", "--write-key", key, "--force"], "is the input"),
        "security-eval --out ds": ([*thief, ds], "is the input"),
        "reader-study build --out ds": (["reader-study", "build", "--clean", manifest, "--encrypted", manifest,
                                         "--force", "--out", ds], "is the input"),
        "reader-study build over the work folder": (["reader-study", "build", "--clean", manifest, "--encrypted",
                                                     manifest, "--force", "--out", root], "holds the input"),
        "encrypt-study --out its study": ([*one_study, study], "is the input"),
        "encrypt-study --out the key": ([*one_study, key], "is the input"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "prepare into its studies", "prepare inside its studies", "prepare over the work folder",
        "encrypt-dataset --out ds (the audit's case)", "encrypt-dataset inside ds",
        "encrypt-dataset over the work folder", "encrypt-dataset --out the key", "encrypt-dataset --out the model",
        "evaluate --out ds", "train --out the manifest", "keygen --out the model", "keygen --out a folder",
        "calibrate --out ds", "calibrate --write-key the key", "security-eval --out ds",
        "reader-study build --out ds", "reader-study build over the work folder",
        "encrypt-study --out its study", "encrypt-study --out the key",
    ],
)
def test_writing_commands_never_touch_an_input(work: Path, case: str) -> None:
    before = _checksums(work)
    args, message = _cases(work)[case]
    result = _run(*args)
    assert result.exit_code == 2, (case, result.output)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("medenc: error: ") and message in lines[0], result.output
    assert "Traceback" not in result.output
    assert _checksums(work) == before  # every input byte-identical, nothing added or removed
