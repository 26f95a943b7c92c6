"""medenc: Adversarial Data Encryption for brain MRI (Hu et al.).

The public API is loaded lazily so that ``import medenc`` (and ``medenc --help``) stays quick::

    from medenc import EncryptionKey, Encryptor, targeted_pgd
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "EncryptionKey": "medenc.key",
    "PGDSettings": "medenc.key",
    "targeted_pgd": "medenc.pgd",
    "combine": "medenc.combine",
    "Encryptor": "medenc.encrypt",
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
    from medenc.combine import combine
    from medenc.encrypt import Encryptor
    from medenc.errors import InputError, MedencError
    from medenc.key import EncryptionKey, PGDSettings
    from medenc.pgd import targeted_pgd


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medenc' has no attribute {name!r}")
