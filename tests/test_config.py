"""One config loader for every command: unknown keys and wrongly typed values are one-line errors (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from medenc.cli import app
from medenc.config import SCHEMA, check_config, load_config
from medenc.errors import InputError

runner = CliRunner()


def _commands(tmp: Path) -> dict[str, list[str]]:
    """Each command that takes --config, with arguments that would otherwise get it going."""
    missing = str(tmp / "missing.csv")
    return {
        "train": ["train", missing, "--out", str(tmp / "m.pt")],
        "keygen": ["keygen", "--classes", "a,b,c", "--out", str(tmp / "k.json")],
        "evaluate": ["evaluate", "--clean", missing, "--encrypted", missing, "--out", str(tmp / "r")],
        "calibrate": ["calibrate", missing, "--model", missing, "--out", str(tmp / "c")],
        "security-eval": ["security-eval", "--clean", missing, "--encrypted", missing, "--model", missing,
                          "--key", missing, "--out", str(tmp / "s")],
        "demo": ["demo", "--out", str(tmp / "d"), "--cases", "10"],
    }


@pytest.mark.parametrize("command", ["train", "keygen", "evaluate", "calibrate", "security-eval", "demo"])
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("stepz: 7\n", "unknown config key 'stepz' (tip: did you mean 'step'?)"),
        ("epochs: ten\n", "config key 'epochs' must be an integer, got 'ten'"),
        ("augment: 1\n", "config key 'augment' must be true or false, got 1"),
        ("- a\n- b\n", "a config file must hold a mapping of option names to values"),
    ],
)
def test_every_command_rejects_a_bad_config_in_one_line(tmp_path: Path, command: str, text: str, message: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(text)
    args = _commands(tmp_path)[command]
    result = runner.invoke(app, [*args, "--config", str(config)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"medenc: error: {config}: {message}"], result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]  # nothing written


def test_the_shipped_presets_pass_the_schema() -> None:
    for preset in ("quick", "medium", "paper"):
        settings = load_config(preset=preset)
        assert settings and set(settings) <= set(SCHEMA) and settings["seeds"] == 3
    from medenc.synth.generate import plan_cases

    medium = load_config(preset="medium")  # the informative preset: at least 200 test slices at 128 px
    assert medium["size"] == 128 and sum(s == "test" for *_, s in plan_cases(medium["cases"], 0)) >= 200


def test_dashes_and_numbers() -> None:
    assert check_config({"batch-size": 8, "lr": 1, "eps": 2.5}) == {"batch_size": 8, "lr": 1, "eps": 2.5}
    with pytest.raises(InputError, match=r"'steps' must be an integer, got 2\.5"):
        check_config({"steps": 2.5})
    with pytest.raises(InputError, match=r"'lr' must be a number, got True"):
        check_config({"lr": True})
