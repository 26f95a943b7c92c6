"""medenc: Adversarial Data Encryption for brain MRI (Hu et al.).

The public API is loaded lazily so that ``import medenc`` (and ``medenc --help``) stays quick::

    from medenc import EncryptionKey, Encryptor, targeted_pgd
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "EncryptionKey": "medenc.core.key",
    "PGDSettings": "medenc.core.key",
    "targeted_pgd": "medenc.core.pgd",
    "combine": "medenc.core.combine",
    "Encryptor": "medenc.core.encrypt",
    "MedencError": "medenc.errors",
    "InputError": "medenc.errors",
}

__all__ = [
    "EncryptionKey",
    "Encryptor",
    "InputError",
    "MedencError",
    "PGDSettings",
    "__version__",
    "combine",
    "targeted_pgd",
]

if TYPE_CHECKING:  # pragma: no cover
    from medenc.core.combine import combine
    from medenc.core.encrypt import Encryptor
    from medenc.core.key import EncryptionKey, PGDSettings
    from medenc.core.pgd import targeted_pgd
    from medenc.errors import InputError, MedencError


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medenc' has no attribute {name!r}")
