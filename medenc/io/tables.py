"""The one CSV reader: every manifest and batch file goes through :func:`read_table`.

It maps every way a CSV can be wrong (missing, unreadable, not UTF-8, no header, missing columns, a row
with too many fields, empty required fields, no rows) to one :class:`InputError` naming the file and
the line, so each command only checks what its own columns mean.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medenc.errors import InputError


@dataclass(frozen=True)
class TableRow:
    """One data row: its 1-based line number in the file and its values (stripped; missing optional: "")."""

    line: int
    values: dict[str, str]

    def __getitem__(self, column: str) -> str:
        return self.values[column]

    def get(self, column: str, default: str = "") -> str:
        return self.values.get(column, default) or default


def read_table(
    path: str | Path,
    *,
    required: Sequence[str],
    optional: Sequence[str] = (),
    what: str = "manifest",
    tip: str | None = None,
) -> list[TableRow]:
    """Read a CSV file whose header names its columns; other columns are ignored.

    Args:
        path: the CSV file (UTF-8, a BOM allowed).
        required: columns that must be present and non-empty in every row.
        optional: columns that may be absent or empty (read as ``""``).
        what: how messages name the file (``"manifest"``, ``"batch file"``, ...).
        tip: a hint added to the missing-column error (e.g. the expected header).

    Returns:
        The rows, in file order.

    Raises:
        InputError: any of the problems above; the message names the file and the line.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{what} not found", path) from None
    except IsADirectoryError:
        raise InputError(f"{what} is a folder, not a CSV file", path) from None
    except UnicodeDecodeError as error:
        raise InputError(f"{what} is not UTF-8 text (byte {error.start})", path) from None
    except OSError as error:
        raise InputError(f"cannot read {what} ({error.strerror or type(error).__name__})", path) from None
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = [h.strip() for h in next(reader, [])]
        if not any(header):
            raise InputError(f"{what} is empty (no header line)", path)
        missing = [c for c in required if c not in header]
        if missing:
            raise InputError(
                f"{what} is missing column(s) {', '.join(missing)}; "
                f"found {', '.join(h for h in header if h) or 'none'}",
                path,
                tip=tip or f"the header must name {','.join(required)}",
            )
        duplicated = sorted({h for h in header if h and header.count(h) > 1})
        if duplicated:
            raise InputError(f"{what} names column(s) {', '.join(duplicated)} more than once", path)
        wanted = [*required, *(c for c in optional if c not in required)]
        where = {c: header.index(c) for c in wanted if c in header}
        rows: list[TableRow] = []
        for fields in reader:
            line = reader.line_num
            if not any(f.strip() for f in fields):
                continue  # blank line
            if len(fields) > len(header):
                raise InputError(f"line {line}: {len(fields)} fields, the header has {len(header)}", path,
                                 tip="quote values that contain commas")
            values = {c: (fields[i].strip() if i < len(fields) else "") for c, i in where.items()}
            values.update({c: "" for c in wanted if c not in values})
            empty = [c for c in required if not values[c]]
            if empty:
                raise InputError(f"line {line}: empty {', '.join(empty)}", path)
            rows.append(TableRow(line, values))
    except csv.Error as error:
        raise InputError(f"not a valid CSV file ({error})", path) from None
    if not rows:
        raise InputError(f"{what} has no rows", path)
    return rows
