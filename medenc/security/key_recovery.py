"""Key recovery (paper sections 3.4 and 4.3): can a thief with the encrypted set and a few labelled
originals find the secret class correspondence (and the concat ratios)?

The attack follows the paper. The thief trains a model ``f_enc`` on the encrypted training set and a
surrogate ``g`` on his labelled originals. For a source class ``y`` and a candidate target tuple
``(t_1, ..., t_k)`` (and, for the concat combiners, a candidate ratio) he simulates the encryption of his
class-``y`` originals with ``g`` and the known method, and scores how strongly ``f_enc`` recognises the
result as class ``y`` (mean log-probability; the paper used accuracy, which ties more often). The true
tuple should score best because ``f_enc`` learned exactly "features of ``t_1`` here and ``t_2`` there mean
``y``". Classes are searched one at a time, as in the paper; a full correspondence is ranked by the sum
of its classes' best scores among every correspondence the key generator can draw.

The thief is assumed to know the method and the PGD settings (Kerckhoffs); only the correspondence and
the ratios are secret.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from medenc.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from medenc.core.key import EncryptionKey

SUPPORTED = ("basic", "hconcat", "hconcat_mirror", "mixup")
RATIO_GRID = (0.3, 0.4, 0.5, 0.6, 0.7)
ENUMERATION_LIMIT = 2_000_000


def class_candidates(num_classes: int, k: int, source: int) -> list[tuple[int, ...]]:
    """Every ordered k-tuple of distinct target classes other than ``source`` (the per-class search)."""
    others = [c for c in range(num_classes) if c != source]
    return list(itertools.permutations(others, k))


def enumerate_correspondences(num_classes: int, k: int) -> Iterator[tuple[tuple[int, ...], ...]]:
    """Every correspondence :meth:`medenc.core.key.EncryptionKey.generate` can draw.

    That is k columns, each a derangement of the classes, with distinct entries in every row
    (rows are source classes). Yields ``targets`` tuples like ``EncryptionKey.targets``.
    """
    derangements = [p for p in itertools.permutations(range(num_classes)) if all(p[c] != c for c in range(num_classes))]

    def extend(columns: list[tuple[int, ...]]) -> Iterator[list[tuple[int, ...]]]:
        if len(columns) == k:
            yield columns
            return
        for perm in derangements:
            if all(all(col[c] != perm[c] for col in columns) for c in range(num_classes)):
                yield from extend([*columns, perm])

    for columns in extend([]):
        yield tuple(tuple(col[c] for col in columns) for c in range(num_classes))


def count_correspondences(num_classes: int, k: int) -> int:
    """Exact number of correspondences the key generator can draw (enumerated; small class counts only).

    Raises:
        InputError: more than 9 classes (the enumeration would take too long).
    """
    if num_classes > 9:
        raise InputError(f"counting correspondences of {num_classes} classes by enumeration is too slow")
    return sum(1 for _ in enumerate_correspondences(num_classes, k))


def _simulate_copies(
    surrogate: nn.Module, x: Tensor, targets: Sequence[int], pgd: Any, device: torch.device
) -> dict[int, Tensor]:
    """Targeted PGD copies of ``x`` toward each target class with the surrogate (batched).

    Shape:
        x: (n, C, H, W); result: target -> (n, C, H, W).
    """
    from medenc.core.fast_model import attack_model
    from medenc.core.pgd import targeted_pgd

    fast = attack_model(surrogate, device)
    n = x.shape[0]
    batch = x.repeat(len(targets), 1, 1, 1).to(device)
    target = torch.tensor(list(targets), dtype=torch.long).repeat_interleave(n).to(device)
    low = batch.amin(dim=(1, 2, 3))
    high = batch.amax(dim=(1, 2, 3))
    adv = targeted_pgd(
        fast,
        batch,
        target,
        eps=pgd.eps,
        step=pgd.step,
        steps=pgd.steps,
        norm=pgd.norm,
        bounds=(low, high),
        use_best=pgd.use_best,
    ).cpu()
    return {t: adv[i * n : (i + 1) * n] for i, t in enumerate(targets)}


def recover_key(
    enc_model: nn.Module,
    surrogate: nn.Module,
    x: Tensor,
    y: Tensor,
    key: EncryptionKey,
    *,
    ratio_grid: Sequence[float] = RATIO_GRID,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Run the per-class search and rank the true key; the result names no secret classes.

    Args:
        enc_model: the thief's model trained on the encrypted training set.
        surrogate: the thief's model trained on his labelled originals ``x``, ``y``.
        x: the thief's labelled originals (model inputs).
        y: their classes.
        key: the true key (for scoring the search only; its PGD settings are taken as known).
        ratio_grid: candidate ratios for the concat combiners and Mixup.
        device: where PGD runs.

    Returns:
        Counts and ranks: ``space`` (exact number of drawable correspondences), ``simulations`` (what
        the per-class search costs), per class ``rank_of_true_targets`` and ``ratio_error``, and for the
        full correspondence ``rank_of_true_key`` and ``top1``.

    Shape:
        x: (n, C, H, W); y: (n,).
    """
    from medenc.core.combine import combine
    from medenc.learn.train import predict, resolve_device

    if key.combiner not in SUPPORTED:
        raise InputError(f"key recovery supports the {', '.join(SUPPORTED)} combiners, not {key.combiner!r}")
    dev = resolve_device(device)
    k, num = key.num_targets, key.num_classes
    ratios = [None] if key.combiner == "basic" else [float(r) for r in ratio_grid]
    per_class: list[dict[str, Any]] = []
    scores: list[dict[tuple[int, ...], tuple[float, float | None]]] = []
    simulations = 0
    for c in range(num):
        xc = x[y == c]
        if xc.shape[0] == 0:
            raise InputError(f"the thief holds no labelled original of class {key.classes[c]!r}")
        candidates = class_candidates(num, k, c)
        copies = _simulate_copies(surrogate, xc, [t for t in range(num) if t != c], key.pgd, dev)
        table: dict[tuple[int, ...], tuple[float, float | None]] = {}
        for tup in candidates:
            best = (float("-inf"), None)
            stacked = torch.stack([copies[t] for t in tup], dim=1)
            for r in ratios:
                simulated = combine(key.combiner, stacked, ratio=0.5 if r is None else r)
                logp = predict(enc_model, simulated, device=dev).log_softmax(dim=1)[:, c].mean()
                simulations += 1
                if float(logp) > best[0]:
                    best = (float(logp), r)
            table[tup] = best
        true = tuple(key.targets[c])
        found_ratio = table[true][1]
        # ties count against the thief's luck: rank = 1 + candidates scoring at least as high
        rank = 1 + sum(1 for t, v in table.items() if t != true and v[0] >= table[true][0])
        per_class.append(
            {
                "class": key.classes[c],
                "candidates": len(candidates) * len(ratios),
                "rank_of_true_targets": rank,
                "ratio_error": None if found_ratio is None else abs(found_ratio - key.ratios[c]),
            }
        )
        scores.append(table)
    result: dict[str, Any] = {
        "combiner": key.combiner,
        "k": k,
        "thief_images": int(x.shape[0]),
        "ratio_grid": None if ratios == [None] else list(ratios),
        "simulations": simulations,
        "per_class": per_class,
        "classes_top1": sum(p["rank_of_true_targets"] == 1 for p in per_class),
    }
    result.update(_rank_full_key(scores, key, num, k))
    return result


def _rank_full_key(
    scores: list[dict[tuple[int, ...], tuple[float, float | None]]], key: Any, num: int, k: int
) -> dict[str, Any]:
    """Rank the true correspondence among all drawable ones by the summed per-class scores."""
    if num > 8:
        return {"space": None, "rank_of_true_key": None, "top1": None, "note": "space too large to enumerate"}
    true = tuple(tuple(row) for row in key.targets)
    true_score = sum(scores[c][true[c]][0] for c in range(num))
    space = better = 0
    for corr in enumerate_correspondences(num, k):
        space += 1
        if corr != true and sum(scores[c][corr[c]][0] for c in range(num)) >= true_score:
            better += 1  # ties count as better: the thief cannot tell them apart
        if space > ENUMERATION_LIMIT:
            return {"space": None, "rank_of_true_key": None, "top1": None, "note": "space too large to enumerate"}
    return {"space": space, "rank_of_true_key": better + 1, "top1": better == 0}
