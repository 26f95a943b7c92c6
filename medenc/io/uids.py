"""New DICOM UIDs under an organisation's root.

Every UID medenc makes (derived SOP Instance and Series UIDs, the synthetic data set's UIDs) is
``<root>.<digits>``. The root is the organisation's registered UID root (``--uid-root`` on the
commands that write DICOM, or the ``uid_root`` config key); without one, pydicom's root
``1.2.826.0.1.3680043.8.498`` is used, as for any UID pydicom makes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

#: pydicom's UID root (the default when no organisation root is given), without the final dot
DEFAULT_ROOT = "1.2.826.0.1.3680043.8.498"
#: a root may be at most this long: the rest of the 64 characters carries the random part (>= 23 digits)
MAX_ROOT_LENGTH = 40
_COMPONENT = re.compile(r"^(0|[1-9][0-9]*)$")


def check_uid_root(root: str) -> str:
    """``root`` checked: dot-separated numbers without leading zeros, at most :data:`MAX_ROOT_LENGTH` characters.

    A trailing dot is accepted and removed.

    Raises:
        ValueError: not a UID root (the message says why).
    """
    text = str(root).strip()
    text = text[:-1] if text.endswith(".") else text
    parts = text.split(".")
    if not text or any(not _COMPONENT.match(part) for part in parts):
        raise ValueError(
            f"UID root {root!r} is not a DICOM UID root: numbers separated by dots, no leading zeros "
            "(e.g. 1.2.840.99999)"
        )
    if len(parts) < 2:
        raise ValueError(
            f"UID root {root!r} has a single component; a registered root has several (e.g. 1.2.840.99999)"
        )
    if len(text) > MAX_ROOT_LENGTH:
        raise ValueError(
            f"UID root {root!r} is {len(text)} characters long; at most {MAX_ROOT_LENGTH} leave room for the "
            "unique part"
        )
    return text


def new_uid(root: str | None = None, entropy: Sequence[str] | None = None) -> str:
    """A new UID under ``root`` (default :data:`DEFAULT_ROOT`): random, or derived from ``entropy`` strings.

    Raises:
        ValueError: ``root`` is not a UID root.
    """
    from pydicom.uid import generate_uid

    prefix = check_uid_root(root if root is not None else DEFAULT_ROOT) + "."
    return str(generate_uid(prefix=prefix, entropy_srcs=list(entropy) if entropy is not None else None))
