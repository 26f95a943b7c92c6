"""Run configurations: YAML files whose keys are command option names; flags override them.

Presets ship with the package (``medenc/configs/*.yaml``, linked as ``configs/`` at the repository top):
``paper`` (the paper's MRI setting) and ``quick`` (a CPU-sized run).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from medenc.errors import InputError

PRESETS = {"paper": "paper-mri.yaml", "quick": "quick-cpu.yaml", "medium": "medium-cpu.yaml"}

Number = (int, float)
Names = (str, list)  # "a,b,c" or a YAML list

#: every key a config may hold (any command's), with the types its value may have; a config is read
#: whole, so a key for another command is allowed, an unknown key or a wrongly typed value is an error
SCHEMA: dict[str, tuple[type, ...]] = {
    # data and the base classifier
    "size": (int, str, list),
    "cases": (int,),
    "difficulty": (str,),
    "arch": (str,),
    "epochs": (int,),
    "batch_size": (int,),
    "lr": Number,
    "window": (str,),
    "window_low": Number,
    "window_high": Number,
    "classes": Names,
    "manifest": (str,),
    "out": (str,),
    "device": (str,),
    "seed": (int,),
    "augment": (bool,),
    "force": (bool,),
    "uid_root": (str,),  # the organisation's DICOM UID root of every new UID (encrypt-study, synth)
    # the key
    "combiner": (str,),
    "ratio": Number,
    "norm": (str,),
    "eps": Number,
    "step": Number,
    "steps": (int,),
    "eot": Names,
    "eot_samples": (int,),
    "ratio_jitter": Number,
    # the thieves' models
    "victims": Names,
    "victim_epochs": (int,),
    "victim_lr": Number,
    "seeds": (int,),
}
SHARED_KEYS = frozenset(SCHEMA)


def check_config(data: dict[str, Any], source: str | Path | None = None) -> dict[str, Any]:
    """Normalise keys (``batch-size`` -> ``batch_size``) and check every key and value against :data:`SCHEMA`.

    Raises:
        InputError: an unknown key (with the closest known one) or a value of the wrong type.
    """
    import difflib

    checked: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key not in SCHEMA:
            close = difflib.get_close_matches(key, SCHEMA, n=1)
            tip = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(SCHEMA)}"
            raise InputError(f"unknown config key {raw_key!r}", source, tip=tip)
        kinds = SCHEMA[key]
        wrong_bool = isinstance(value, bool) and bool not in kinds
        if value is not None and (wrong_bool or not isinstance(value, kinds)):
            words = {int: "an integer", float: "a number", str: "text", list: "a list", bool: "true or false"}
            names = " or ".join(words[k] for k in kinds if not (k is int and float in kinds))
            raise InputError(f"config key {raw_key!r} must be {names}, got {value!r}", source)
        checked[key] = value
    return checked


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
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read config file ({error.__class__.__name__})", source) from None
    except yaml.YAMLError as error:
        raise InputError(f"not valid YAML ({error.__class__.__name__})", source) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError("a config file must hold a mapping of option names to values", source)
    return check_config(data, source)


def pick(cli_value: Any, config: dict[str, Any], name: str, default: Any) -> Any:
    """The command-line value if given (not None), else the config's, else ``default``."""
    if cli_value is not None:
        return cli_value
    return config.get(name, default)
