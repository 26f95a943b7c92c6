"""The secret encryption key: class correspondence, combiner, ratios and PGD settings.

The key is what an attacker would need to recover (paper sections 3.4 and 4.3), so it is drawn with
cryptographic randomness unless a seed is given, written with file mode 0600, and identified in
reports only by :meth:`EncryptionKey.fingerprint`: an HMAC of the key's content under a random 128-bit
salt that is stored in the key file only, so the identifier cannot be matched against the few thousand
possible correspondences (an unsalted hash of the content could: schema 1 did that).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import secrets
import stat
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medenc.atomic import atomic_write_text
from medenc.core.draw import check_class_count, draw_box, draw_correspondence
from medenc.core.settings import COMBINER_TARGETS, EOT_TRANSFORMS, HARDENING_DEFAULTS, NORMS, PGDSettings
from medenc.errors import InputError, KeyFileError

__all__ = [
    "COMBINER_TARGETS",
    "EOT_TRANSFORMS",
    "HARDENING_DEFAULTS",
    "NORMS",
    "EncryptionKey",
    "PGDSettings",
    "check_key_classes",
    "load_key_for",
]

SCHEMA_VERSION = 2
MAX_KEY_BYTES = 1 << 20  # a key file is a few KiB; refuse to read more (e.g. --key /dev/zero)
READABLE_SCHEMAS = (1, 2)  # schema 1: no salt (a fresh random one is drawn at every load)

@dataclass(frozen=True)
class EncryptionKey:
    """A secret class correspondence with its combiner and attack settings.

    Attributes:
        classes: class names, in the order of the classifier's outputs.
        combiner: one of :data:`COMBINER_TARGETS`.
        targets: ``targets[c]`` holds the k target class indices of source class ``c``; never ``c``
            itself, all distinct.
        ratios: per source class: the Horizontal Concat split (share of columns from the first
            perturbed copy) or the Mixup weight of the first copy; in (0, 1).
        pgd: the attack settings.
        seed: the seed the key was drawn from, or ``None`` for cryptographic randomness.
        mixup_lambda: weight of the first copy inside each Mixup pair of ``mixup_concat``.
        boxes: for ``cutmix``, per source class the pasted box as fractions ``(top, left, height, width)``.
        eot: hardening: random transformations (:data:`EOT_TRANSFORMS`) every PGD step sees the images
            through, so the perturbation survives a thief's flips, crops, JPEG and blur. With EOT the
            loss of an iterate is random, so PGD returns its last iterate (``pgd.use_best`` is ignored).
        eot_samples: random draws averaged per PGD step when ``eot`` is set.
        ratio_jitter: hardening: each image's ratio is its class ratio plus a uniform draw from
            ``-ratio_jitter..ratio_jitter``.
        salt: 32 hex digits of secret randomness keying :meth:`fingerprint`; drawn when empty. Not part
            of the key's value (two keys with the same content compare equal).
    """

    classes: tuple[str, ...]
    combiner: str
    targets: tuple[tuple[int, ...], ...]
    ratios: tuple[float, ...]
    pgd: PGDSettings = field(default_factory=PGDSettings)
    seed: int | None = None
    mixup_lambda: float = 0.5
    boxes: tuple[tuple[float, float, float, float], ...] | None = None
    eot: tuple[str, ...] = ()
    eot_samples: int = 1
    ratio_jitter: float = 0.0
    salt: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        self.validate()
        if not self.salt:
            object.__setattr__(self, "salt", secrets.token_hex(16))
        elif len(self.salt) != 32 or any(c not in "0123456789abcdef" for c in self.salt):
            raise KeyFileError("salt must be 32 lower-case hex digits")

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def num_targets(self) -> int:
        """Number of target classes per source class (k)."""
        return COMBINER_TARGETS[self.combiner]

    def class_index(self, name: str) -> int:
        """Index of class ``name``; a clear error if the key does not know it."""
        try:
            return self.classes.index(name)
        except ValueError:
            raise KeyFileError(f"class {name!r} is not in the key's classes ({', '.join(self.classes)})") from None

    # ----------------------------------------------------------------------------------------- draw
    @classmethod
    def generate(
        cls,
        classes: Sequence[str],
        combiner: str = "hconcat",
        *,
        seed: int | None = None,
        ratio: float | tuple[float, float] = 0.5,
        pgd: PGDSettings | None = None,
        mixup_lambda: float = 0.5,
        eot: Sequence[str] = (),
        eot_samples: int = 1,
        ratio_jitter: float = 0.0,
    ) -> EncryptionKey:
        """Draw a fresh secret key.

        Each column of the correspondence is a derangement of the classes (no class maps to itself,
        every class is used once per column), and the columns of one class are distinct.

        Args:
            classes: class names in model output order.
            combiner: combiner name (decides the number of targets k).
            seed: seed for a reproducible key; ``None`` draws from the operating system's
                cryptographic source.
            ratio: a fixed Horizontal Concat / Mixup ratio, or a ``(low, high)`` range drawn per class.
            pgd: attack settings (defaults: the paper's MRI settings).
            mixup_lambda: Mixup weight inside ``mixup_concat``.
            eot: hardening transforms (:data:`EOT_TRANSFORMS`) for expectation over transformations.
            eot_samples: random draws per PGD step with ``eot``.
            ratio_jitter: per-image random deviation of the ratio (hardening).

        Returns:
            The new key.
        """
        classes = tuple(str(c) for c in classes)
        if combiner not in COMBINER_TARGETS:
            raise KeyFileError(f"unknown combiner {combiner!r}; expected one of {', '.join(COMBINER_TARGETS)}")
        k = COMBINER_TARGETS[combiner]
        check_class_count(classes, k, combiner, None)
        rng: random.Random = random.SystemRandom() if seed is None else random.Random(seed)
        targets = draw_correspondence(len(classes), k, rng)
        if isinstance(ratio, (tuple, list)):
            low, high = (float(v) for v in ratio)
            if not 0.0 < low <= high < 1.0:
                raise KeyFileError(f"ratio range must satisfy 0 < low <= high < 1, got ({low}, {high})")
            ratios = tuple(round(rng.uniform(low, high), 4) for _ in classes)
        else:
            ratios = (float(ratio),) * len(classes)
        boxes = None
        if combiner == "cutmix":
            boxes = tuple(draw_box(rng, r) for r in ratios)
        # a seeded key is reproducible, so is its salt (its identifier is as guessable as its seed)
        salt = secrets.token_hex(16) if seed is None else hashlib.sha256(f"medenc-salt\0{seed}".encode()).hexdigest()
        salt = salt[:32]
        return cls(
            classes=classes,
            combiner=combiner,
            targets=targets,
            ratios=ratios,
            salt=salt,
            pgd=pgd or PGDSettings(),
            seed=seed,
            mixup_lambda=mixup_lambda,
            boxes=boxes,
            eot=tuple(str(t) for t in eot),
            eot_samples=eot_samples,
            ratio_jitter=float(ratio_jitter),
        )

    # ------------------------------------------------------------------------------------- validate
    def validate(self, source: str | Path | None = None) -> None:
        """Raise :class:`KeyFileError` naming the first problem found, if any."""
        classes = self.classes
        if self.combiner not in COMBINER_TARGETS:
            raise KeyFileError(
                f"unknown combiner {self.combiner!r}; expected one of {', '.join(COMBINER_TARGETS)}", source
            )
        k = COMBINER_TARGETS[self.combiner]
        check_class_count(classes, k, self.combiner, source)
        if len(self.targets) != len(classes):
            raise KeyFileError(
                f"targets list {len(self.targets)} source classes, but the key has {len(classes)} classes", source
            )
        for c, row in enumerate(self.targets):
            if len(row) != k:
                raise KeyFileError(
                    f"class {classes[c]!r} has {len(row)} targets; combiner {self.combiner!r} needs {k}", source
                )
            for t in row:
                if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < len(classes):
                    raise KeyFileError(f"class {classes[c]!r} has an unknown target class {t!r}", source)
            if c in row:
                raise KeyFileError(f"class {classes[c]!r} maps to itself (a self-map protects nothing)", source)
            if len(set(row)) != len(row):
                raise KeyFileError(f"class {classes[c]!r} has repeated targets {list(row)}", source)
        if len(self.ratios) != len(classes):
            raise KeyFileError(f"{len(self.ratios)} ratios for {len(classes)} classes", source)
        for c, r in enumerate(self.ratios):
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 < r < 1.0:
                raise KeyFileError(f"ratio of class {classes[c]!r} must lie in (0, 1), got {r!r}", source)
        if not 0.0 < self.mixup_lambda < 1.0:
            raise KeyFileError(f"mixup_lambda must lie in (0, 1), got {self.mixup_lambda!r}", source)
        if self.combiner == "cutmix":
            if self.boxes is None or len(self.boxes) != len(classes):
                raise KeyFileError("combiner 'cutmix' needs one box (top, left, height, width) per class", source)
            for c, box in enumerate(self.boxes):
                top, left, height, width = box
                if not (
                    0 <= top < 1
                    and 0 <= left < 1
                    and height > 0
                    and width > 0
                    and top + height <= 1
                    and left + width <= 1
                ):
                    raise KeyFileError(f"cutmix box of class {classes[c]!r} is outside the image: {box}", source)
        self._validate_hardening(source)
        self.pgd.validate(source)

    def _validate_hardening(self, source: str | Path | None) -> None:
        for name in self.eot:
            if name not in EOT_TRANSFORMS:
                raise KeyFileError(
                    f"unknown EOT transform {name!r}; expected some of {', '.join(EOT_TRANSFORMS)}", source
                )
        if len(set(self.eot)) != len(self.eot):
            raise KeyFileError(f"repeated EOT transforms {list(self.eot)}", source)
        samples = self.eot_samples
        if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= 64:
            raise KeyFileError(f"eot_samples must be an integer in 1..64, got {samples!r}", source)
        jitter = self.ratio_jitter
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0.0 <= jitter < 0.5:
            raise KeyFileError(f"ratio_jitter must lie in [0, 0.5), got {jitter!r}", source)

    @property
    def hardened(self) -> bool:
        """Whether any hardening option (EOT, ratio jitter, flip-consistent layout) is on."""
        return bool(self.eot) or self.ratio_jitter > 0 or self.combiner == "hconcat_mirror"

    # ------------------------------------------------------------------------------------- persist
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the schema version (contains the secret)."""
        data = asdict(self)
        data["schema_version"] = SCHEMA_VERSION
        data["salt"] = self.salt
        data["classes"] = list(self.classes)
        data["targets"] = [list(row) for row in self.targets]
        data["ratios"] = list(self.ratios)
        data["boxes"] = None if self.boxes is None else [list(b) for b in self.boxes]
        data["eot"] = list(self.eot)
        for name, default in HARDENING_DEFAULTS.items():  # absent when off: the file stays as short as before
            if data[name] == default or (name == "eot" and not data[name]):
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> EncryptionKey:
        """Build and validate a key from :meth:`to_dict` output."""
        if not isinstance(data, dict):
            raise KeyFileError("a key file must hold a JSON object", source)
        version = data.get("schema_version")
        if version not in READABLE_SCHEMAS or isinstance(version, bool):
            raise KeyFileError(f"unsupported key schema_version {version!r}; expected {SCHEMA_VERSION}", source)
        known = {"schema_version", "classes", "combiner", "targets", "ratios", "pgd", "seed", "mixup_lambda", "boxes"}
        if version >= 2:
            known.add("salt")
            if not isinstance(data.get("salt"), str) or not data["salt"]:
                raise KeyFileError("key is missing its salt", source, tip="draw a new key with `medenc keygen`")
        else:
            warnings.warn(
                f"{source or 'key'}: schema 1 key (no salt): its identifier changes at every load; "
                "draw a new key with `medenc keygen` for stable, unguessable identifiers",
                stacklevel=2,
            )
        known |= set(HARDENING_DEFAULTS)
        unknown = sorted(set(data) - known)
        if unknown:
            raise KeyFileError(f"unknown field(s) in key: {', '.join(unknown)}", source)
        missing = [name for name in ("classes", "combiner", "targets", "ratios", "pgd") if name not in data]
        if missing:
            raise KeyFileError(f"key is missing field(s): {', '.join(missing)}", source)
        if not isinstance(data["pgd"], dict):
            raise KeyFileError(f"pgd must be an object, got {type(data['pgd']).__name__}", source)
        try:
            pgd = PGDSettings(**data["pgd"])
            boxes = data.get("boxes")
            key = cls(
                classes=tuple(str(c) for c in data["classes"]),
                combiner=str(data["combiner"]),
                targets=tuple(tuple(row) for row in data["targets"]),
                ratios=tuple(data["ratios"]),
                pgd=pgd,
                seed=data.get("seed"),
                mixup_lambda=data.get("mixup_lambda", 0.5),
                boxes=None if boxes is None else tuple(tuple(float(v) for v in b) for b in boxes),
                eot=tuple(str(t) for t in _string_list(data.get("eot", []), "eot")),
                eot_samples=data.get("eot_samples", 1),
                ratio_jitter=data.get("ratio_jitter", 0.0),
                salt=data.get("salt", ""),
            )
        except KeyFileError as error:
            if source is None or error.path is not None:
                raise
            raise KeyFileError(error.problem, source, error.tip) from None
        except (TypeError, ValueError) as error:
            raise KeyFileError(f"malformed key: {error}", source) from None
        return key

    def save(self, path: str | Path, *, force: bool = False, inputs: Sequence[str | Path | None] = ()) -> Path:
        """Write the key as JSON, atomically, readable by its owner only (mode 0600).

        ``inputs`` (e.g. the model the classes came from) may not be replaced, even with ``force``.
        """
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        return atomic_write_text(path, text, mode=0o600, force=force, inputs=inputs)

    @classmethod
    def load(cls, path: str | Path) -> EncryptionKey:
        """Read and validate a key file; every problem is a :class:`KeyFileError` naming the file."""
        path = Path(path)
        if not path.exists():
            raise KeyFileError("key file not found", path)
        if path.is_dir():
            raise KeyFileError("key file is a folder, not a JSON file", path)
        if not path.is_file():
            raise KeyFileError("not a regular file (a key is a small JSON file)", path)
        try:
            with path.open("rb") as handle:
                raw = handle.read(MAX_KEY_BYTES + 1)
            if len(raw) > MAX_KEY_BYTES:
                raise KeyFileError(f"larger than {MAX_KEY_BYTES // 1024} KiB: not a key file", path)
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise KeyFileError(f"cannot read key file ({error.__class__.__name__})", path) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise KeyFileError(f"not valid JSON (line {error.lineno})", path) from None
        except RecursionError:
            raise KeyFileError("JSON nested too deeply: not a key file", path) from None
        return cls.from_dict(data, path)

    def fingerprint(self) -> str:
        """A short identifier of the key: 16 hex characters of HMAC-SHA256(salt, content).

        It changes with any setting (a calibration variant gets its own) and, without the salt that only
        the key file holds, cannot be matched against candidate correspondences.
        """
        content = {k: v for k, v in self.to_dict().items() if k not in ("salt", "schema_version")}
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hmac.new(bytes.fromhex(self.salt), b"medenc-key\0" + canonical.encode(), hashlib.sha256).hexdigest()[:16]

    def __repr__(self) -> str:
        # never print the secret correspondence by accident (logs, tracebacks)
        return (
            f"EncryptionKey(classes={len(self.classes)}, combiner={self.combiner!r}, fingerprint={self.fingerprint()})"
        )


def _string_list(value: Any, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"{name} must be a list, got {type(value).__name__}")
    return value


def check_key_classes(key: EncryptionKey, classes: Sequence[str], source: str | Path | None = None) -> EncryptionKey:
    """Check that ``key`` was drawn for these classes, in this order (the base model's); return it.

    Raises:
        InputError: the classes differ.
    """
    if tuple(key.classes) != tuple(classes):
        raise InputError(
            f"the key's classes ({', '.join(key.classes)}) do not match the model's ({', '.join(classes)})",
            source,
            tip="draw a key with `medenc keygen --from MODEL.pt`",
        )
    return key


def load_key_for(path: str | Path, classes: Sequence[str]) -> EncryptionKey:
    """Load a key file, check it was made for these classes, and warn if others may read it."""
    key = check_key_classes(EncryptionKey.load(path), classes, path)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        warnings.warn(f"{path}: key file is readable by others (mode {mode:o}); chmod 600 it", stacklevel=2)
    return key
