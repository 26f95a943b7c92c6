"""What every report shares: one header, one percent and table formatter, one reader and writer.

Every command that writes a report folder writes ``report.json`` beginning with :func:`header`
(``format``, ``created``, ``versions``, ``device``, ``seconds``), then its own fields, and ``report.md``
built from :func:`markdown_table`. Folders written by medenc 0.1 named ``evaluate``'s file
``results.json``; :func:`read_report` still reads it.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPORT_NAME = "report.json"
OLD_REPORT_NAMES = ("results.json",)  # medenc 0.1's name for the evaluate report


def versions() -> dict[str, str]:
    """Versions of medenc, Python and the libraries that decide the numbers."""
    from medenc import __version__

    found = {"medenc": __version__, "python": platform.python_version()}
    for name in ("torch", "numpy", "monai", "pydicom"):
        try:
            module = __import__(name)
        except ImportError:  # pragma: no cover - all are dependencies
            continue
        found[name] = str(getattr(module, "__version__", "?"))
    return found


def header(kind: str, *, started: float | None = None, device: Any = None, version: int = 1) -> dict[str, Any]:
    """The fields every report begins with.

    Args:
        kind: the command, e.g. ``"evaluate"``; the format is ``medenc.<kind>/<version>``.
        started: ``time.perf_counter()`` at the start of the work (gives ``seconds``).
        device: where the work ran (``str(torch.device)``), if it used one.
        version: the report format's version.

    Returns:
        ``{"format", "created", "versions", "device", "seconds"}`` (device and seconds ``None`` if not given).
    """
    return {
        "format": f"medenc.{kind}/{version}",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "device": None if device is None else str(device),
        "seconds": None if started is None else round(time.perf_counter() - started, 1),
    }


def pct(value: float | None, digits: int = 1) -> str:
    """``0.4567`` -> ``"45.7%"``; ``None`` or NaN -> ``"-"``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}%}"


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table; cells are written with ``str`` (format them before)."""
    lines = ["| " + " | ".join(str(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON (no NaN: they are not JSON) and return the path."""
    path = Path(path)
    path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def read_report(folder: str | Path) -> dict[str, Any]:
    """The ``report.json`` of a report folder (or the file itself), also under its medenc 0.1 names.

    Raises:
        FileNotFoundError: no report there.
    """
    folder = Path(folder)
    if folder.is_file():
        return json.loads(folder.read_text(encoding="utf-8"))
    for name in (REPORT_NAME, *OLD_REPORT_NAMES):
        if (folder / name).is_file():
            return json.loads((folder / name).read_text(encoding="utf-8"))
    raise FileNotFoundError(folder / REPORT_NAME)
