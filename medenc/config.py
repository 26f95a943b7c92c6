"""Run configurations: YAML files whose keys are command option names; flags override them.

Presets ship with the package (``medenc/configs/*.yaml``, linked as ``configs/`` at the repository top):
``paper`` (the paper's MRI setting) and ``quick`` (a CPU-sized run).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from medenc.errors import InputError

PRESETS = {"paper": "paper-mri.yaml", "quick": "quick-cpu.yaml"}

#: keys the shipped configs use across commands; a command ignores those it does not take
SHARED_KEYS = frozenset(
    {
        "size",
        "cases",
        "difficulty",
        "arch",
        "epochs",
        "batch_size",
        "lr",
        "combiner",
        "ratio",
        "norm",
        "eps",
        "step",
        "steps",
        "eot",
        "eot_samples",
        "ratio_jitter",
        "victims",
        "victim_epochs",
        "victim_lr",
    }
)


def preset_path(name: str) -> Path:
    """Path of a shipped preset by name (``paper``, ``quick``)."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    return Path(str(resources.files("medenc") / "configs" / PRESETS[name]))


def load_config(path: str | Path | None = None, preset: str | None = None) -> dict[str, Any]:
    """Read a config file (or a preset) into a flat dict with underscore keys.

    Args:
        path: a YAML file; wins over ``preset``.
        preset: a preset name, used when ``path`` is None.

    Returns:
        The settings; empty if neither is given.
    """
    import yaml

    if path is None and preset is None:
        return {}
    source = Path(path) if path is not None else preset_path(preset)  # type: ignore[arg-type]
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("config file not found", source) from None
    except yaml.YAMLError as error:
        raise InputError(f"not valid YAML ({error.__class__.__name__})", source) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError("a config file must hold a mapping of option names to values", source)
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def pick(cli_value: Any, config: dict[str, Any], name: str, default: Any) -> Any:
    """The command-line value if given (not None), else the config's, else ``default``."""
    if cli_value is not None:
        return cli_value
    return config.get(name, default)
