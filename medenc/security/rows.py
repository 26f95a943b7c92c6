"""The rows of the security table: what each thief does, as a registry of runnable rows.

A :class:`Row` has a label and a ``run(context, arch, recipe, progress) -> VictimResult`` that trains one
thief model (one architecture, one training seed: ``recipe.seed``) and scores it on the original test
images (``original_test``, scored after every epoch for the peak) and, where it trained on the encrypted
set, on the encrypted test images (``encrypted_test``). :func:`build_rows` lists the reference rows, one
row per :class:`~medenc.security.defenses.Defence` and the rows that go with them; other modules add rows
by passing their own :class:`Row` objects to :func:`medenc.security.evaluate.security_evaluate`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from medenc.learn.recipe import TrainRecipe
from medenc.learn.victims import VictimResult, curves_of, score, train_and_score, train_victim
from medenc.security.defenses import Defence, adversarial_hook, crop_only, flip_only

if TYPE_CHECKING:  # pragma: no cover
    from medenc.core.key import EncryptionKey
    from medenc.experiment.evaluate import EvalData

#: the test sets every thief row is scored on; ``original_test`` is watched every epoch
ORIGINAL, ENCRYPTED = "original_test", "encrypted_test"


@dataclass(frozen=True)
class ThiefSettings(TrainRecipe):
    """How the thief trains (the fields of :class:`~medenc.learn.recipe.TrainRecipe`) and what else he holds.

    Attributes:
        clean_fraction: share of the clean training split the thief holds with labels (stratified).
        finetune_epochs: epochs of fine-tuning on those images (``finetune``).
        finetune_lr: peak learning rate of the fine-tuning.
        adv_steps: PGD steps per batch of adversarial training (budget: the key's eps and norm).
        seeds: training seeds per cell (``seed``, ``seed + 1``, ...): mean and 95% interval.
    """

    clean_fraction: float = 0.2
    finetune_epochs: int = 15
    finetune_lr: float = 0.01
    adv_steps: int = 5
    seeds: int = 1


@dataclass
class RowContext:
    """What every row's thief works from, and what rows share (computed once, reused).

    Attributes:
        data: the four splits as model inputs.
        thief: the thief's labelled originals ``(x, y)``.
        settings: the thief's settings.
        key: the encryption key (its eps and norm set the adversarial-training budget).
        early_stop: the undefended rows also score the thief's originals every epoch (for ``early-stop``).
        transformed: input-transformed splits per row label.
        notes: per row label, what the row measured besides accuracy (e.g. achieved compression ratios).
        models: trained models kept for later rows and key recovery, by (row label, arch, seed).
        runs: results kept for later rows, by (row label, arch, seed).
    """

    data: EvalData
    thief: tuple[Tensor, Tensor]
    settings: ThiefSettings
    key: EncryptionKey
    early_stop: bool = False
    transformed: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[tuple[str, str, int], nn.Module] = field(default_factory=dict)
    runs: dict[tuple[str, str, int], VictimResult] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.data.classes)

    def tests(self) -> dict[str, tuple[Tensor, Tensor]]:
        return {ORIGINAL: self.data.clean_test, ENCRYPTED: self.data.enc_test}

    def few_clean_epochs(self) -> int:
        """Epochs on the thief's originals that take as many SGD steps as the others' training."""
        s = self.settings
        steps = s.epochs * math.ceil(self.data.enc_train[1].numel() / s.batch_size)
        return max(1, round(steps / math.ceil(self.thief[1].numel() / s.batch_size)))


RowRunner = Callable[[RowContext, str, TrainRecipe, Any], VictimResult]


@dataclass(frozen=True)
class Row:
    """One row of the security table.

    Attributes:
        label: the row's name in the report.
        run: trains and scores one thief model: ``run(context, arch, recipe, progress)``.
        clean_only: trained on clean images only (the same for every encrypted set: reusable when comparing,
            and a reference, not a defence, in the verdict).
        defence: the defence the row measures, if any.
        archs: the architectures the row is run for (None: every column); the others' cells are absent.
    """

    label: str
    run: RowRunner
    clean_only: bool = False
    defence: Defence | None = None
    archs: tuple[str, ...] | None = None


# ------------------------------------------------------------------------------------------- runners
def run_clean(context: RowContext, arch: str, recipe: TrainRecipe, progress: Any = None) -> VictimResult:
    """The clean baseline: trained and tested on originals."""
    data = context.data
    return train_and_score(arch, data.clean_train, {ORIGINAL: data.clean_test}, context.num_classes, recipe, progress)


def run_undefended(context: RowContext, arch: str, recipe: TrainRecipe, progress: Any = None) -> VictimResult:
    """The undefended thief: plain training on the encrypted set (its model is kept for later rows)."""
    tests = context.tests()
    watch = [ORIGINAL]
    if context.early_stop:  # the early-stopping thief follows the same run and picks his epoch
        tests["thief_clean"] = context.thief
        watch += [ENCRYPTED, "thief_clean"]
    result = train_and_score(
        arch, context.data.enc_train, tests, context.num_classes, recipe, progress, watch=watch, keep_model=True
    )
    result.final.pop("thief_clean", None)  # his originals are his validation set, not a test set
    result.predictions.pop("thief_clean", None)
    context.models[("undefended", arch, recipe.seed)] = result.model  # type: ignore[assignment]
    context.runs[("undefended", arch, recipe.seed)] = result
    result.model = None
    return result


def run_early_stop(context: RowContext, arch: str, recipe: TrainRecipe, progress: Any = None) -> VictimResult:
    """Early stopping on the thief's originals: the undefended run's epoch best on them (the first on ties).

    Training does not depend on what is scored, so this is the model the thief keeps; without a recorded
    undefended run it trains with :func:`medenc.learn.train.fit`'s ``keep_best``. Its peak is its final
    accuracy: the row measures the thief's own stopping rule, where every other row's peak is an oracle's.
    """
    run = context.runs.get(("undefended", arch, recipe.seed))
    if run is None or "thief_clean" not in run.curves:
        result = train_and_score(
            arch, context.data.enc_train, context.tests(), context.num_classes, recipe, progress,
            watch=[], val=context.thief, keep_best=True,
        )  # fmt: skip
        final = result.final
    else:
        val = run.curves["thief_clean"]
        epoch = val.index(max(val))
        final = {ORIGINAL: run.curves[ORIGINAL][epoch], ENCRYPTED: run.curves[ENCRYPTED][epoch]}
    return VictimResult(recipe.seed, final, {ORIGINAL: [final[ORIGINAL]]})


def run_input(
    defence: Defence, context: RowContext, arch: str, recipe: TrainRecipe, progress: Any = None
) -> VictimResult:
    """An input transformation applied to every image the thief trains and tests on (computed once)."""
    if defence.label not in context.transformed:
        notes: dict[str, Any] = {}
        x = defence.transform(context.data.enc_train[0], stats=notes)
        tests = {n: (defence.transform(tx), ty) for n, (tx, ty) in context.tests().items()}
        context.transformed[defence.label] = ((x, context.data.enc_train[1]), tests)
        if notes:
            context.notes[defence.label] = notes
    train, tests = context.transformed[defence.label]
    return train_and_score(arch, train, tests, context.num_classes, recipe, progress, watch=[ORIGINAL])


def recipe_options(defence: Defence, context: RowContext) -> dict[str, Any]:
    """:func:`medenc.learn.train.fit` options of a training-recipe defence."""
    from medenc.security import augment

    k, name = context.num_classes, defence.name
    key, settings = context.key, context.settings
    options: dict[str, Callable[[], dict[str, Any]]] = {
        "flip-aug": lambda: {"augment": flip_only},
        "crop-aug": lambda: {"augment": crop_only},
        "augment": lambda: {"augment": True},
        "advtrain": lambda: {"batch_hook": adversarial_hook(key.pgd.eps, settings.adv_steps, key.pgd.norm)},
        "ueraser": lambda: {"batch_hook": augment.ueraser_hook(int(defence.value))},
        "cutout": lambda: {"augment": augment.cutout},
        "mixup": lambda: {"mix": partial(augment.mixup, num_classes=k)},
        "cutmix": lambda: {"mix": partial(augment.cutmix, num_classes=k)},
    }
    return options[name]()


def run_recipe(
    defence: Defence, context: RowContext, arch: str, recipe: TrainRecipe, progress: Any = None
) -> VictimResult:
    """A training recipe on the encrypted set."""
    return train_and_score(
        arch, context.data.enc_train, context.tests(), context.num_classes, recipe, progress,
        watch=[ORIGINAL], **recipe_options(defence, context),
    )  # fmt: skip


def _fine_tune(
    model: nn.Module, context: RowContext, recipe: TrainRecipe, progress: Any, *, epochs: int, lr: float
) -> VictimResult:
    """Fine-tune ``model`` on the thief's originals, scoring the original test images every epoch."""
    from medenc.learn.train import fit

    history = fit(
        model, *context.thief, epochs=epochs, batch_size=recipe.batch_size, lr=lr, device=recipe.device,
        seed=recipe.seed, progress=progress, watch={ORIGINAL: context.data.clean_test},
    )  # fmt: skip
    final, _ = score(model, context.tests(), recipe.device)
    return VictimResult(recipe.seed, final, curves_of(history, [ORIGINAL]))


def run_finetune(context: RowContext, arch: str, recipe: TrainRecipe, progress: Any = None) -> VictimResult:
    """The undefended thief's model fine-tuned on his originals (the peak is over the fine-tuning epochs)."""
    model = context.models.get(("undefended", arch, recipe.seed))
    if model is None:
        model, _ = train_victim(arch, *context.data.enc_train, context.num_classes, recipe, progress=progress)
    s = context.settings
    return _fine_tune(copy.deepcopy(model), context, recipe, progress, epochs=s.finetune_epochs, lr=s.finetune_lr)


def run_few_clean(context: RowContext, arch: str, recipe: TrainRecipe, progress: Any = None) -> VictimResult:
    """Trained on the thief's originals only, as many SGD steps as the others (model kept: key recovery's
    surrogate)."""
    data = context.data
    result = train_and_score(
        arch, context.thief, {ORIGINAL: data.clean_test}, context.num_classes, recipe, progress,
        keep_model=True, epochs=context.few_clean_epochs(),
    )  # fmt: skip
    context.models[("few clean only", arch, recipe.seed)] = result.model  # type: ignore[assignment]
    result.model = None
    return result


def run_ssl_finetune(context: RowContext, arch: str, recipe: TrainRecipe, progress: Any = None) -> VictimResult:
    """SimCLR on the encrypted images without labels, a fresh head, then the few-clean training on his
    originals (same epochs and learning rate as 'few clean only': only the start differs)."""
    from medenc.security.pretrain import replace_head, simclr_pretrain

    model, history = simclr_pretrain(
        arch, context.data.enc_train[0], epochs=recipe.epochs, batch_size=max(64, recipe.batch_size), lr=recipe.lr,
        seed=recipe.seed, device=recipe.device, progress=progress,
    )  # fmt: skip
    context.notes.setdefault("ssl-finetune", {})[f"{arch} seed {recipe.seed} SimCLR loss"] = [
        round(h["loss"], 4) for h in history
    ]
    replace_head(model, context.num_classes)
    return _fine_tune(model, context, recipe, progress, epochs=context.few_clean_epochs(), lr=recipe.lr)


# -------------------------------------------------------------------------------------------- the rows
def defence_row(defence: Defence) -> Row:
    """The row of one defence."""
    special: dict[str, RowRunner] = {
        "early-stop": run_early_stop,
        "finetune": run_finetune,
        "ssl-finetune": run_ssl_finetune,
    }
    if defence.kind == "input":
        return Row(defence.label, partial(run_input, defence), defence=defence)
    if defence.name in special:
        return Row(defence.label, special[defence.name], defence=defence)
    return Row(defence.label, partial(run_recipe, defence), defence=defence)


def build_rows(defences: Sequence[Defence], extra: Sequence[Row] = ()) -> list[Row]:
    """The clean baseline and the undefended thief, a row per defence, ``extra`` rows, and 'few clean only'
    (what the thief's originals give alone) when a defence uses them to train."""
    rows = [Row("clean baseline", run_clean, clean_only=True), Row("undefended", run_undefended)]
    rows += [defence_row(d) for d in defences]
    rows += list(extra)
    if any(d.name in ("finetune", "ssl-finetune") for d in defences):
        rows.append(Row("few clean only", run_few_clean, clean_only=True))
    return rows
