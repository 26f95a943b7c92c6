"""The study secret: every code, order, side and UID of a reader study is derived from it, never from the seed.

A reader sees his own codes, file order and DICOM UIDs. Had they come from a seeded pseudo-random generator,
a reader who knows (or guesses) a small ``--seed`` could regenerate the whole draw and pair his session-2
images with his session-1 images. Here each value is an HMAC-SHA256 of a fresh 256-bit secret and a label
naming what is drawn (``"code", reader, session, position``): values reveal nothing about the secret nor
about each other. The secret is written only to ``key/study.json``; passing it back rebuilds the same study
byte for byte.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

SECRET_BYTES = 32


@dataclass(frozen=True)
class StudySecret:
    """A random secret and the values derived from it (each a pure function of the secret and a label)."""

    value: bytes

    def __post_init__(self) -> None:
        if len(self.value) != SECRET_BYTES:
            raise ValueError(f"a study secret has {SECRET_BYTES} bytes, got {len(self.value)}")

    @classmethod
    def fresh(cls) -> StudySecret:
        """A new secret from the operating system's cryptographic random source."""
        return cls(secrets.token_bytes(SECRET_BYTES))

    @classmethod
    def from_hex(cls, text: str) -> StudySecret:
        """The secret as written in ``key/study.json``."""
        return cls(bytes.fromhex(text))

    def hex(self) -> str:
        """Hex form for ``key/study.json``."""
        return self.value.hex()

    def digest(self, *label: object) -> bytes:
        """32 bytes derived from the secret and ``label`` (its parts joined unambiguously)."""
        message = "\x1f".join(str(part) for part in label).encode("utf-8")
        return hmac.new(self.value, message, hashlib.sha256).digest()

    def unit(self, *label: object) -> float:
        """A number uniform in [0, 1) derived from ``label``."""
        return int.from_bytes(self.digest(*label)[:7], "big") / 2**56

    def coin(self, *label: object) -> bool:
        """A fair coin derived from ``label``."""
        return bool(self.digest(*label)[0] & 1)

    def shuffle(self, items: Sequence[str], *label: object) -> list[str]:
        """``items`` (distinct strings) in a random order: sorted by a digest of each item and ``label``."""
        return sorted(items, key=lambda item: self.digest(*label, item))

    def code(self, alphabet: str, length: int, *label: object) -> str:
        """A code of ``length`` characters of ``alphabet`` (uniform: rejection of the biased tail)."""
        out: list[str] = []
        attempt = 0
        limit = 256 - 256 % len(alphabet)
        while len(out) < length:
            for byte in self.digest(*label, "attempt", attempt):
                if byte < limit and len(out) < length:
                    out.append(alphabet[byte % len(alphabet)])
            attempt += 1
        return "".join(out)

    def uid(self, *label: object) -> str:
        """A DICOM UID under the ``2.25`` (UUID) root, always 39 digits long (so files of equal content have
        equal sizes): a version-4 UUID with its highest bit set, as an integer."""
        raw = bytearray(self.digest("uid", *label)[:16])
        raw[0] |= 0x80
        return f"2.25.{uuid.UUID(bytes=bytes(raw), version=4).int}"
