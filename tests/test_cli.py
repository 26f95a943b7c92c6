"""The CLI behaves like its peers: --version, results on stdout, progress and logs on stderr, and one style of
error for a bad path in every command (missing or unreadable input, existing output, output inside an input)."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from medenc import __version__
from medenc.cli import app

MEDENC = [sys.executable, "-c", "from medenc.cli import main; main()"]


def test_version_prints_and_exits_0() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == __version__


def test_no_command_shows_help_and_exits_2() -> None:
    result = CliRunner().invoke(app, [])
    assert result.exit_code == 2 and "encrypt-study" in result.output


def test_progress_goes_to_stderr_and_results_to_stdout(tmp_path: Path) -> None:
    """With a terminal on stderr (FORCE_COLOR), the bar is drawn there; stdout holds only the result line."""
    env = {**os.environ, "FORCE_COLOR": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = subprocess.run(
        [*MEDENC, "synth", str(tmp_path / "s"), "--cases", "5", "--size", "32"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    out = tmp_path / "s"
    assert run.stdout.splitlines() == [f"wrote 5 SYNTHETIC cases to {out} (manifest: {out / 'manifest.csv'})"]
    assert "synth" in run.stderr and "5/5" in run.stderr  # the progress bar, with its real total


def test_synth_redirected_to_a_file_draws_progress_on_the_terminal_only(tmp_path: Path) -> None:
    """`medenc synth ... > out.txt` typed in a terminal: the bar (real total, elapsed, time left) goes to the
    terminal on stderr, and out.txt gets the result line and nothing else."""
    import pty

    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR", "TERM")}
    env |= {"TERM": "xterm-256color", "COLUMNS": "120", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    terminal, child_side = pty.openpty()
    with (tmp_path / "out.txt").open("w") as stdout:
        process = subprocess.Popen(
            [*MEDENC, "synth", str(tmp_path / "s"), "--cases", "5", "--size", "32"],
            stdout=stdout, stderr=child_side, env=env,
        )  # fmt: skip
    os.close(child_side)
    shown = b""
    while True:
        try:
            chunk = os.read(terminal, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(terminal)
    assert process.wait(timeout=300) == 0, shown
    out = tmp_path / "s"
    result = f"wrote 5 SYNTHETIC cases to {out} (manifest: {out / 'manifest.csv'})\n"
    assert (tmp_path / "out.txt").read_text() == result
    drawn = shown.decode("utf-8", "replace")
    assert "synth" in drawn and "5/5" in drawn and "0:00:0" in drawn  # the bar: total, elapsed and time left


def test_model_lines_carry_the_time_left(capsys: pytest.CaptureFixture) -> None:
    import time

    from medenc.cli._common import eta_text, model_done

    say = model_done(time.perf_counter() - 30.0)  # 30 s ago
    say(2, 6, "resnet18 trained on clean", {"clean_test": 0.5})
    line = capsys.readouterr().err.strip()
    assert line == "[30 s] model 2/6: resnet18 trained on clean: clean test 50.0%; about 1 min 00 s left"
    say(6, 6, "vgg11 trained on clean", {"clean_test": 0.25})
    assert capsys.readouterr().err.strip().endswith("clean test 25.0%")  # done: no time left to give
    assert [eta_text(s) for s in (0, 59.4, 75, 7300)] == ["0 s", "59 s", "1 min 15 s", "2 h 01 min"]


def test_shell_completion_is_offered() -> None:
    result = CliRunner().invoke(app, ["--show-completion", "bash"])
    assert result.exit_code == 0 and "_medenc_completion" in result.output


# --------------------------------------------------------------------- path errors: one style for every command
runner = CliRunner()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Valid inputs for every command (no training: a random checkpoint), plus a folder and a binary file."""
    from medenc.core.key import EncryptionKey, PGDSettings
    from medenc.core.mapping import Preprocess
    from medenc.experiment.dataset import read_manifest
    from medenc.experiment.prepare import prepare_dataset
    from medenc.learn.checkpoint import ModelInfo, save_checkpoint
    from medenc.learn.models import build_model
    from medenc.reader_study import build_study, simulate_answers
    from medenc.synth.generate import write_dataset

    root = tmp_path_factory.mktemp("paths")
    studies = write_dataset(root / "studies", 10, seed=5, size=32, fmt="both", balanced=True)
    manifest = prepare_dataset(studies, root / "ds").manifest
    classes = tuple(read_manifest(manifest).classes)
    torch.manual_seed(0)
    model = save_checkpoint(
        root / "base.pt", build_model("smallcnn", 1, len(classes)),
        ModelInfo("smallcnn", classes, preprocess=Preprocess((32, 32)).to_dict()),
    )  # fmt: skip
    key = EncryptionKey.generate(classes, "hconcat", seed=0, pgd=PGDSettings(steps=1)).save(root / "key.json")
    build_study(manifest, manifest, root / "rs", seed=1)
    answers = simulate_answers(root / "rs", root / "answers")
    case = next(csv.DictReader((studies).open()))
    (root / "a-folder").mkdir()
    (root / "binary.bin").write_bytes(b"\x00\x01\x02garbage\n\x1b[31m" * 20)
    return {
        "root": root, "studies": studies, "manifest": manifest, "model": model, "key": key, "rs": root / "rs",
        "answers": answers, "series": studies.parent / case["case_id"] / "dicom", "label": case["label"],
        "mask": studies.parent / case["mask"],
    }  # fmt: skip


def command(name: str, w: dict[str, Any], out: Path, role: str | None = None, bad: Path | None = None) -> list[str]:
    """The arguments of a valid run of ``name`` writing ``out``, with the input ``role`` replaced by ``bad``."""

    def given(this: str, value: Path) -> Path:
        return bad if role == this and bad is not None else value

    man, model, key, cpu = w["manifest"], given("model", w["model"]), given("key", w["key"]), ["--device", "cpu"]
    runs: dict[str, list[Any]] = {
        "keygen": ["keygen", "--from", given("model", w["model"]), "--steps", "1", "--out", out],
        "train": ["train", given("manifest", man), "--arch", "smallcnn", "--epochs", "1", "--size", "32", *cpu,
                  "--out", out],
        "prepare": ["prepare", given("manifest", w["studies"]), "--out", out],
        "encrypt-dataset": ["encrypt-dataset", given("manifest", man), "--model", model, "--key", key, *cpu,
                            "--out", out],
        "evaluate": ["evaluate", "--clean", given("manifest", man), "--encrypted", man, "--arch", "smallcnn",
                     "--epochs", "1", *cpu, "--out", out],
        "encrypt-study": ["encrypt-study", given("study", w["series"]), "--model", model, "--key", key, "--label",
                          w["label"], "--mask", w["mask"], "--slices", "largest", *cpu, "--out", out],
        "calibrate": ["calibrate", given("manifest", man), "--model", model, "--eps", "1", "--epochs", "1", *cpu,
                      "--out", out],
        "security-eval": ["security-eval", "--clean", given("manifest", man), "--encrypted", man, "--model", model,
                          "--key", key, "--arch", "smallcnn", "--epochs", "1", "--defenses", "none", *cpu,
                          "--out", out],
        "reader-study build": ["reader-study", "build", "--clean", given("manifest", man), "--encrypted", man,
                               "--seed", "1", "--out", out],
        "reader-study simulate": ["reader-study", "simulate", given("study", w["rs"]), "--out", out],
        "reader-study score": ["reader-study", "score", given("study", w["rs"]), "--answers", *w["answers"],
                               "--out", out],
        "synth": ["synth", out, "--cases", "5", "--size", "32"],
        "demo": ["demo", "--cases", "5", *cpu, "--out", out],
    }  # fmt: skip
    return [str(a) for a in runs[name]]


#: command -> the inputs it reads, by role ("study": a folder)
INPUTS = {
    "keygen": ("model",),
    "train": ("manifest",),
    "prepare": ("manifest",),
    "encrypt-dataset": ("manifest", "model", "key"),
    "evaluate": ("manifest",),
    "encrypt-study": ("study", "model", "key"),
    "calibrate": ("manifest", "model"),
    "security-eval": ("manifest", "model", "key"),
    "reader-study build": ("manifest",),
    "reader-study simulate": ("study",),
    "reader-study score": ("study",),
}
FILE_OUTPUTS = {"keygen", "train"}  # the others write a folder


def one_error_line(result: Any) -> str:
    """The single line a refused command printed (it must print exactly one, exit 2, no traceback)."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, (result.exit_code, result.output)
    assert lines[0].isprintable() and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return lines[0]


CASES = [(name, role) for name, roles in INPUTS.items() for role in roles]


@pytest.mark.parametrize(("name", "role"), CASES, ids=[f"{n}-{r}" for n, r in CASES])
def test_a_missing_input_is_one_line_naming_it(work: dict[str, Any], tmp_path: Path, name: str, role: str) -> None:
    missing = work["root"] / "no-such-input"
    line = one_error_line(runner.invoke(app, command(name, work, tmp_path / "out", role, missing)))
    assert re.fullmatch(rf"medenc: error: {re.escape(str(missing))}: [\w -]+ not found( \(tip: .*\))?", line), line


@pytest.mark.parametrize(("name", "role"), CASES, ids=[f"{n}-{r}" for n, r in CASES])
def test_an_input_of_the_wrong_kind_is_one_line_naming_it(
    work: dict[str, Any], tmp_path: Path, name: str, role: str
) -> None:
    """A folder where a file belongs, a file where a folder belongs, or a binary file where a text or model belongs."""
    if role == "study" and name == "encrypt-study":  # a study may be a file or a folder: give it binary data
        wrong, pattern = work["root"] / "binary.bin", r"not a DICOM file.*"
    elif role == "study":
        wrong, pattern = work["root"] / "binary.bin", r"STUDY_DIR is a file, not a folder"
    else:
        wrong, pattern = work["root"] / "a-folder", r"[\w -]+ is a folder, not a [\w ]+"
    line = one_error_line(runner.invoke(app, command(name, work, tmp_path / "out", role, wrong)))
    assert re.fullmatch(rf"medenc: error: {re.escape(str(wrong))}: {pattern}", line), line
    if role != "study":  # unreadable contents: still one printable line naming the file
        garbage = work["root"] / "binary.bin"
        line = one_error_line(runner.invoke(app, command(name, work, tmp_path / "out", role, garbage)))
        assert line.startswith(f"medenc: error: {garbage}: ") and "\x1b" not in line, line


@pytest.mark.parametrize("name", [*INPUTS, "synth", "demo"])
def test_an_existing_output_without_force_is_one_line(work: dict[str, Any], tmp_path: Path, name: str) -> None:
    out = tmp_path / ("exists.out" if name in FILE_OUTPUTS else "exists")
    if name in FILE_OUTPUTS:
        out.write_text("mine")
    else:
        out.mkdir()
        (out / "mine.txt").write_text("mine")
    line = one_error_line(runner.invoke(app, command(name, work, out)))
    assert line == f"medenc: error: {out}: output already exists (tip: pass --force / force=True to replace it)"
    assert sorted(p.name for p in tmp_path.rglob("*")) == (["exists.out"] if name in FILE_OUTPUTS else
                                                           ["exists", "mine.txt"])  # fmt: skip


INSIDE = {  # command -> (input folder, what the message calls the output); keygen and train write one file
    # (key, checkpoint) and read files, so writing beside the manifest replaces nothing and is allowed
    "prepare": ("studies", "output folder"),
    "encrypt-dataset": ("ds", "output"),
    "evaluate": ("ds", "report folder"),
    "encrypt-study": ("series", "output folder"),
    "calibrate": ("ds", "report folder"),
    "security-eval": ("ds", "report folder"),
    "reader-study build": ("ds", "study folder"),
    "reader-study simulate": ("rs", "answers folder"),
    "reader-study score": ("rs", "report folder"),
}


@pytest.mark.parametrize("name", list(INSIDE))
def test_an_output_inside_an_input_folder_is_one_line(work: dict[str, Any], name: str) -> None:
    folder = {"ds": work["manifest"].parent, "studies": work["studies"].parent, "series": work["series"],
              "rs": work["rs"]}[INSIDE[name][0]]  # fmt: skip
    out = folder / f"new-{name.replace(' ', '-')}"  # one per command: a wrongful write stays its own failure
    line = one_error_line(runner.invoke(app, command(name, work, out)))
    assert line == (
        f"medenc: error: {out}: the {INSIDE[name][1]} lies inside the input folder {folder} "
        "(tip: write outside the input folders)"
    )
    assert not out.exists()


def test_encrypt_dataset_reports_its_total_before_the_first_batch(work: dict[str, Any], tmp_path: Path) -> None:
    """The bar shows done/total from the start (it showed 0/? until the first PGD batch was done)."""
    from medenc.experiment.encrypt_dataset import encrypt_dataset

    calls: list[tuple[int, int]] = []
    encrypt_dataset(work["manifest"], work["model"], work["key"], tmp_path / "enc", device="cpu",
                    on_progress=lambda done, total: calls.append((done, total)))  # fmt: skip
    assert calls[0] == (0, 10) and calls[-1] == (10, 10)
