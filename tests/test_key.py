"""EncryptionKey: drawing, validation, persistence."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace

import pytest

from medenc.core.key import COMBINER_TARGETS, EncryptionKey, PGDSettings
from medenc.errors import KeyFileError, OutputExistsError

CLASSES = ["meningioma", "chordoma", "schwannoma", "pituitary_adenoma", "craniopharyngioma"]


@pytest.mark.parametrize("combiner", list(COMBINER_TARGETS))
def test_generated_keys_never_self_map_and_targets_distinct(combiner: str) -> None:
    for seed in range(300):
        key = EncryptionKey.generate(CLASSES, combiner, seed=seed)
        assert len(key.targets) == len(CLASSES)
        for c, row in enumerate(key.targets):
            assert len(row) == COMBINER_TARGETS[combiner]
            assert c not in row
            assert len(set(row)) == len(row)
        # each column is a permutation (every class is used as a target once per column)
        for column in zip(*key.targets):
            assert sorted(column) == list(range(len(CLASSES)))


def test_seed_reproducible_and_unseeded_random() -> None:
    a = EncryptionKey.generate(CLASSES, "hconcat", seed=7, ratio=(0.3, 0.7))
    b = EncryptionKey.generate(CLASSES, "hconcat", seed=7, ratio=(0.3, 0.7))
    assert a == b and a.fingerprint() == b.fingerprint()  # seeded: reproducible, identifier included
    c, d = (EncryptionKey.generate(CLASSES, "hconcat", seed=None) for _ in range(2))
    assert replace(c, targets=d.targets, ratios=d.ratios) == d  # the same content ...
    assert replace(c, targets=d.targets, ratios=d.ratios).fingerprint() != d.fingerprint()  # ... other salts
    drawn = {EncryptionKey.generate(CLASSES, "hconcat", ratio=(0.3, 0.7)).fingerprint() for _ in range(8)}
    assert len(drawn) == 8
    assert all(0.3 <= r <= 0.7 for r in a.ratios)
    assert len(set(a.ratios)) > 1


def test_round_trip_and_file_mode(tmp_path) -> None:
    key = EncryptionKey.generate(CLASSES, "cutmix", seed=3, pgd=PGDSettings(norm="linf", eps=0.03, step=0.01))
    path = key.save(tmp_path / "key.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = EncryptionKey.load(path)
    assert loaded == key and loaded.fingerprint() == key.fingerprint()  # the salt travels in the key file
    with pytest.raises(OutputExistsError):
        key.save(path)
    key.save(path, force=True)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name != "key.json"]  # no temp files left


def test_repr_hides_the_correspondence() -> None:
    key = EncryptionKey.generate(CLASSES, "hconcat", seed=1)
    text = repr(key)
    assert "targets" not in text and key.fingerprint() in text
    assert str(list(key.targets[0])) not in text


def _valid() -> dict:
    return EncryptionKey.generate(CLASSES, "hconcat", seed=0).to_dict()


def _mutate(path: str, value):
    def apply(d: dict) -> dict:
        node = d
        parts = path.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node[part]
        last = parts[-1]
        if last.isdigit():
            node[int(last)] = value
        elif value is _DELETE:
            del node[last]
        else:
            node[last] = value
        return d

    return apply


_DELETE = object()


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        (lambda d: {**d, "targets": [[c, (c + 1) % 5] for c in range(5)]}, "maps to itself"),
        (_mutate("targets.0", [1, 1]), "repeated targets"),
        (_mutate("targets.0", [1, 9]), "unknown target class"),
        (_mutate("targets.0", [1]), "needs 2"),
        (_mutate("ratios.2", 1.0), "ratio of class 'schwannoma' must lie in (0, 1)"),
        (_mutate("ratios.2", 0.0), "must lie in (0, 1)"),
        (_mutate("combiner", "swirl"), "unknown combiner"),
        (_mutate("combiner", "mixup_concat"), "needs 4"),
        (_mutate("pgd.eps", -1), "eps must be > 0"),
        (_mutate("pgd.eps", float("nan")), "eps must be a finite number"),
        (_mutate("pgd.steps", 0), "steps must be an integer >= 1"),
        (_mutate("pgd.norm", "l1"), "unknown PGD norm"),
        (_mutate("classes", ["a", "a", "b", "c", "d"]), "unique"),
        (_mutate("classes", ["a", "b"]), "at least 3 classes"),
        (_mutate("schema_version", 99), "schema_version"),
        (_mutate("combiner", _DELETE), "missing field"),
        (lambda d: {**d, "extra": 1}, "unknown field"),
        (lambda d: [1, 2], "JSON object"),
    ],
)
def test_each_invalid_key_has_its_own_clear_error(tmp_path, mutation, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(mutation(_valid())))
    with pytest.raises(KeyFileError) as info:
        EncryptionKey.load(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_unreadable_and_non_json(tmp_path) -> None:
    with pytest.raises(KeyFileError, match="not found"):
        EncryptionKey.load(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(KeyFileError, match="not valid JSON"):
        EncryptionKey.load(tmp_path / "x.json")


def test_generate_rejects_impossible_requests() -> None:
    with pytest.raises(KeyFileError, match="at least 5 classes"):
        EncryptionKey.generate(CLASSES[:4], "mixup_concat")
    with pytest.raises(KeyFileError, match="unknown combiner"):
        EncryptionKey.generate(CLASSES, "blend")
    with pytest.raises(KeyFileError, match="ratio range"):
        EncryptionKey.generate(CLASSES, "hconcat", ratio=(0.6, 0.2))


def test_class_index() -> None:
    key = EncryptionKey.generate(CLASSES, "basic", seed=0)
    assert key.class_index("schwannoma") == 2
    with pytest.raises(KeyFileError, match="not in the key's classes"):
        key.class_index("glioma")


def test_fingerprint_resists_brute_force_over_every_correspondence() -> None:
    """The audit recovered schema 1 correspondences from their unsalted fingerprint; the salted one is not found."""
    import hashlib

    from medenc.security.key_recovery import enumerate_correspondences

    key = EncryptionKey.generate(CLASSES, "hconcat")  # ratio 0.5: only the correspondence is unknown

    def unsalted(candidate: EncryptionKey) -> str:  # schema 1's fingerprint
        data = {k: v for k, v in candidate.to_dict().items() if k != "salt"}
        data["schema_version"] = 1
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(b"medenc-key\0" + canonical.encode()).hexdigest()[:16]

    candidates = [replace(key, targets=t, salt="0" * 32) for t in enumerate_correspondences(len(CLASSES), 2)]
    assert len(candidates) > 500 and any(c == key for c in candidates)  # the search space holds the key
    old = {unsalted(c): c for c in candidates}
    assert old[unsalted(key)] == key  # the old identifier gives the key away at once
    new_id = key.fingerprint()
    matches = [c for c in candidates if c.fingerprint() == new_id or unsalted(c) == new_id]
    assert matches == []  # without the salt no candidate reproduces the identifier


def test_key_file_safety_errors(tmp_path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(KeyFileError, match="nested too deeply"):
        EncryptionKey.load(deep)
    with pytest.raises(KeyFileError, match="not a regular file"):
        EncryptionKey.load("/dev/zero")
    with pytest.raises(KeyFileError, match="key file is a folder, not a JSON file"):
        EncryptionKey.load(tmp_path)
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (2 << 20))
    with pytest.raises(KeyFileError, match="not a key file"):
        EncryptionKey.load(big)


def test_schema_1_keys_still_load_with_a_warning(tmp_path) -> None:
    import json

    key = EncryptionKey.generate(CLASSES, "hconcat", seed=2)
    data = key.to_dict()
    data["schema_version"] = 1
    del data["salt"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    with pytest.warns(UserWarning, match="schema 1 key"):
        old = EncryptionKey.load(path)
    assert old == key
