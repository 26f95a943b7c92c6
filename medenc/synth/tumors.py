"""Tumour models of the synthetic data set: where each class grows, its shape and its enhancement.

Every tumour is a union of lobulated ellipsoids in MNI space (mm), optionally cut by a dural plane,
with internal texture, cysts (dark, rim-enhancing), calcifications (dark dots), "soap-bubble" septa
and a dural tail. Positions and shapes follow each class's anatomical prior (see
``docs/synthetic-data.md``); a :class:`Difficulty` decides how often a case grows at a site typical of
a confusable class, how often its appearance is drawn from another class's, how much it enhances and
how noisy the image is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CLASSES: tuple[str, ...] = ("meningioma", "chordoma", "schwannoma", "pituitary_adenoma", "craniopharyngioma")

SELLA = np.array([0.0, 1.0, -31.0])
SUPRASELLAR = np.array([0.0, 3.0, -21.0])
CLIVUS = (np.array([0.0, -11.0, -36.0]), np.array([0.0, -25.0, -57.0]))  # top, bottom of the clival marrow


@dataclass(frozen=True)
class Difficulty:
    """Knobs of the classification difficulty.

    Attributes:
        name: preset name.
        confuse: probability that a case is drawn entirely (site, shape, look) as one of its class's
            differential diagnoses (:data:`CONFUSABLE`): the radiologically atypical cases that set a
            ceiling on any classifier's accuracy.
        mimic: weight multiplier of the sites typical of a confusable class (0: none).
        share: probability that a case's appearance is drawn from a random class's appearance.
        contrast: scale of the tumour's enhancement around a tissue-like reference (1 = textbook).
        noise: Rician noise sigma relative to white matter.
    """

    name: str
    confuse: float
    mimic: float
    share: float
    contrast: float
    noise: float


DIFFICULTIES: dict[str, Difficulty] = {
    "easy": Difficulty("easy", confuse=0.0, mimic=0.0, share=0.0, contrast=1.2, noise=0.02),
    "paper": Difficulty("paper", confuse=0.12, mimic=1.0, share=0.3, contrast=0.85, noise=0.04),
    "hard": Difficulty("hard", confuse=0.25, mimic=2.0, share=0.5, contrast=0.65, noise=0.06),
}

#: differential diagnoses: the classes whose imaging a case of each class can share.
CONFUSABLE: dict[str, tuple[str, ...]] = {
    "meningioma": ("schwannoma", "chordoma", "pituitary_adenoma"),
    "chordoma": ("meningioma", "pituitary_adenoma"),
    "schwannoma": ("meningioma",),
    "pituitary_adenoma": ("craniopharyngioma", "meningioma"),
    "craniopharyngioma": ("pituitary_adenoma",),
}


@dataclass(frozen=True)
class Blob:
    """A lobulated ellipsoid: ``centre`` (3,), unit ``axes`` (3, 3) as rows, ``radii`` (3,), lobulation."""

    centre: np.ndarray
    axes: np.ndarray
    radii: np.ndarray
    lobe_amp: np.ndarray = field(default_factory=lambda: np.zeros(0))
    lobe_dir: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    lobe_freq: np.ndarray = field(default_factory=lambda: np.zeros(0))
    lobe_phase: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def level(self, pts: np.ndarray) -> np.ndarray:
        """Normalised radius: < 1 inside. ``pts`` (N, 3) -> (N,)."""
        q = ((pts - self.centre.astype(np.float32)) @ self.axes.T.astype(np.float32)) / self.radii.astype(
            np.float32
        )
        r = np.sqrt((q * q).sum(axis=1)) + np.float32(1e-6)
        rho = np.ones_like(r)
        if len(self.lobe_amp):
            cosines = (q / r[:, None]) @ self.lobe_dir.T.astype(np.float32)
            rho += (self.lobe_amp * np.cos(self.lobe_freq * cosines + self.lobe_phase)).sum(axis=1)
        return r / rho


@dataclass
class Tumour:
    """One tumour: shape, dural plane, tail, interior and the anatomical site it was drawn at."""

    site: str
    blobs: list[Blob]
    base: float  # enhancement of the solid part (template scale, WM ~ 215)
    texture: float  # relative amplitude of the heterogeneity
    texture_mm: float  # its wavelength
    cysts: list[Blob] = field(default_factory=list)
    cyst_value: float = 50.0
    rim_value: float = 220.0
    calcs: list[tuple[np.ndarray, float]] = field(default_factory=list)
    septa: float = 0.0  # fraction of the interior as bright septa ("soap bubbles")
    plane: tuple[np.ndarray, np.ndarray] | None = None  # (point, outward normal): no tumour beyond
    tail: Blob | None = None
    tail_value: float = 230.0

    @property
    def centre(self) -> np.ndarray:
        """Volume-weighted centre of the blobs (MNI mm)."""
        w = np.array([np.prod(b.radii) for b in self.blobs])
        return (np.stack([b.centre for b in self.blobs]) * w[:, None]).sum(0) / w.sum()

    @property
    def radius(self) -> float:
        """Radius of a sphere of the blobs' summed volume (mm)."""
        return float(np.cbrt(sum(np.prod(b.radii) for b in self.blobs)))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned MNI box containing the tumour and its tail."""
        parts = [*self.blobs, *([self.tail] if self.tail is not None else [])]
        lo = np.min([b.centre - 1.5 * b.radii.max() for b in parts], axis=0) - 2
        hi = np.max([b.centre + 1.5 * b.radii.max() for b in parts], axis=0) + 2
        return lo, hi


def _unit(v: np.ndarray) -> np.ndarray:
    return np.asarray(v, dtype=np.float64) / np.linalg.norm(v)


def _frame(normal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Orthonormal rows: two random tangents, then ``normal``."""
    n = _unit(normal)
    t = _unit(np.cross(n, rng.standard_normal(3)))
    return np.stack([t, np.cross(n, t), n])


def _blob(centre, radii, rng: np.random.Generator, lob: float = 0.08, axes=None, lobes: int = 4) -> Blob:
    axes = _frame(rng.standard_normal(3), rng) if axes is None else np.asarray(axes, dtype=np.float64)
    return Blob(
        np.asarray(centre, dtype=np.float64), axes, np.asarray(radii, dtype=np.float64),
        rng.uniform(0, lob, lobes), np.stack([_unit(rng.standard_normal(3)) for _ in range(lobes)]),
        rng.uniform(1.5, 4.0, lobes), rng.uniform(0, 2 * np.pi, lobes),
    )


# ---------------------------------------------------------------- shapes (one per growth pattern)


def _dural(site: str, base: np.ndarray, normal: np.ndarray, r: float, rng, tail: bool) -> Tumour:
    """Meningioma pattern: broad-based ellipsoid flattened against the dura, optional dural tail."""
    frame = _frame(normal, rng)
    radii = np.array([r * rng.uniform(0.9, 1.2), r * rng.uniform(0.8, 1.1), r * rng.uniform(0.6, 0.85)])
    t = Tumour(site, [_blob(base - frame[2] * radii[2] * 0.45, radii, rng, 0.05, frame)], 0, 0, 0)
    t.plane = (base, frame[2])
    if tail:
        along = frame[0] * (radii[0] + rng.uniform(3, 8))
        t.tail = Blob(base + along * rng.choice([-1, 1]), frame, np.array([r * 0.9 + 6, 4.0, 1.3]))
    return t


def _lobulated(site: str, centre: np.ndarray, r: float, rng, n: int, spread: float) -> Tumour:
    """Chordoma pattern: a cluster of lobules."""
    blobs = [_blob(centre, [r * 0.8, r * 0.7, r], rng, 0.12)]
    for _ in range(n - 1):
        blobs.append(_blob(centre + rng.normal(0, spread, 3), rng.uniform(0.35, 0.6) * r * np.ones(3), rng, 0.1))
    return Tumour(site, blobs, 0, 0, 0)


def _cone(site: str, centre: np.ndarray, r: float, side: float, rng, canal: bool) -> Tumour:
    """Schwannoma at the cerebellopontine angle: round cisternal part plus a cone into the canal."""
    blobs = [_blob(centre, r * rng.uniform(0.85, 1.1, 3), rng, 0.06)]
    if canal:
        porus, fundus = np.array([side * 23.0, -23, -35]), np.array([side * 37.0, -20, -35.5])
        axis = _unit(fundus - centre)
        length = np.linalg.norm(fundus - centre) / 2 + 1
        blobs.append(Blob((centre + fundus) / 2, _frame(axis, rng)[[0, 1, 2]], np.array([3.0, 3.0, length])))
        blobs.append(_blob(porus, [4.0, 4.0, 4.0], rng, 0.0))
    return Tumour(site, blobs, 0, 0, 0)


def _snowman(site: str, r: float, rng, side: float, invade: bool, centre=SELLA) -> Tumour:
    """Pituitary adenoma: sellar part, and when large a suprasellar part over the diaphragm waist."""
    low = np.array([rng.uniform(7, 10.5), rng.uniform(5.5, 8.0), rng.uniform(5, 7)])
    c = centre + rng.normal(0, 1.0, 3)
    blobs = [_blob(c, low, rng, 0.04, np.eye(3))]
    if r > 9:
        up = np.array([r * rng.uniform(0.7, 1.0), r * rng.uniform(0.6, 0.9), r * rng.uniform(0.7, 1.1)])
        lift = np.array([rng.normal(0, 1), rng.normal(1, 1), low[2] * 0.8 + up[2] * 0.75])
        blobs.append(_blob(c + lift, up, rng, 0.08, np.eye(3)))
    if invade:
        blobs.append(_blob(c + np.array([side * 10, 0, 0]), [5.5, 7, 5], rng, 0.1, np.eye(3)))
    return Tumour(site, blobs, 0, 0, 0)


def _cystic(site: str, centre: np.ndarray, r: float, rng, sellar: bool) -> Tumour:
    """Craniopharyngioma: lobulated suprasellar mass, sometimes with an intrasellar part."""
    blobs = [_blob(centre, r * rng.uniform(0.75, 1.1, 3), rng, 0.12)]
    if sellar:
        blobs.append(_blob(SELLA + rng.normal(0, 1, 3), [6.5, 5.5, 5.0], rng, 0.05, np.eye(3)))
    return Tumour(site, blobs, 0, 0, 0)


# ---------------------------------------------------------------- sites per class


def _meningioma(rng, model, site: str) -> Tumour:
    r, side = rng.uniform(8, 20), rng.choice([-1.0, 1.0])
    tail = rng.random() < 0.5
    if site == "convexity":
        i = rng.integers(len(model.surface))
        return _dural(site, model.surface[i].astype(float), model.normals[i].astype(float), r, rng, tail)
    if site == "falx":
        y = rng.uniform(-65, 45)  # the falx's free edge lies above the corpus callosum in mid-length
        base = np.array([0.0, y, rng.uniform(22 if -45 < y < 20 else 5, 38)])
        return _dural(site, base, np.array([-side, 0, 0]), r, rng, tail)
    table = {  # base point, dural normal (pointing away from the tumour)
        "sphenoid_wing": ([side * rng.uniform(20, 38), rng.uniform(6, 16), rng.uniform(-26, -16)], [0, 0.5, -0.6]),
        "olfactory_groove": ([0, rng.uniform(28, 40), -27], [0, 0.2, -1]),
        "tuberculum_sellae": ([rng.normal(0, 2), rng.uniform(6, 13), -27], [0, 0.3, -1]),
        "petroclival": (
            [side * rng.uniform(9, 16), rng.uniform(-20, -12), rng.uniform(-46, -32)], [side * 0.5, 0.5, -0.2]
        ),
        "cerebellopontine_angle": ([side * 30, -29, -34], [side * 1, 0.4, -0.2]),
    }
    base, normal = table[site]
    r = min(r, 15.0)
    return _dural(site, np.array(base, dtype=float), np.array(normal, dtype=float) * [1, 1, 1], r, rng, tail)


def _chordoma(rng, model, site: str) -> Tumour:
    r = rng.uniform(8, 17)
    if site == "clivus":
        t = rng.uniform(0.0, 0.9)
        centre = CLIVUS[0] + t * (CLIVUS[1] - CLIVUS[0]) + [rng.normal(0, 1.5), rng.uniform(-6, 0), 0]
    elif site == "petroclival":
        centre = np.array([rng.choice([-1, 1]) * rng.uniform(9, 16), rng.uniform(-20, -12), rng.uniform(-46, -34)])
    else:  # "sellar_extension": upper clivus growing into the sella
        centre = CLIVUS[0] + [rng.normal(0, 1.5), rng.uniform(2, 8), rng.uniform(1, 5)]
    return _lobulated(site, centre, r, rng, int(rng.integers(2, 6)), 0.45 * r)


def _schwannoma(rng, model, site: str) -> Tumour:
    side, r = rng.choice([-1.0, 1.0]), rng.uniform(6, 16)
    if site == "meckel_cave":  # trigeminal schwannoma: dumbbell from the cavernous sinus to the CPA
        a = np.array([side * 16, -3, -31]) + rng.normal(0, 1.5, 3)
        b = np.array([side * 20, -18, -36]) + rng.normal(0, 1.5, 3)
        return Tumour(site, [_blob(a, r * 0.7 * np.ones(3), rng, 0.08), _blob(b, r * 0.8 * np.ones(3), rng)], 0, 0, 0)
    centre = np.array([side * (22 + 0.45 * r), -30 - 0.2 * r, -34]) + rng.normal(0, 1.5, 3)
    return _cone(site, centre, r, side, rng, canal=site == "cerebellopontine_angle")


def _pituitary(rng, model, site: str) -> Tumour:
    side = rng.choice([-1.0, 1.0])
    if site == "giant_suprasellar":
        return _snowman(site, rng.uniform(13, 18), rng, side, invade=rng.random() < 0.3)
    if site == "cavernous_invasion":
        return _snowman(site, rng.uniform(6, 14), rng, side, invade=True)
    return _snowman(site, rng.uniform(6, 15), rng, side, invade=rng.random() < 0.15)


def _craniopharyngioma(rng, model, site: str) -> Tumour:
    r = rng.uniform(8, 18)
    if site == "intrasellar":
        return _cystic(site, SELLA + np.array([0, 0, 5]) + rng.normal(0, 1.5, 3), min(r, 11.0), rng, sellar=True)
    centre = SUPRASELLAR + np.array([rng.normal(0, 2), rng.normal(0, 3), rng.uniform(-2, 5) + 0.3 * r])
    return _cystic(site, centre, r, rng, sellar=rng.random() < 0.35)


# (site, weight, mimics another class?)
SITES: dict[str, list[tuple[str, float, bool]]] = {
    "meningioma": [("convexity", 0.35, False), ("falx", 0.2, False), ("sphenoid_wing", 0.15, False),
                   ("olfactory_groove", 0.08, False), ("tuberculum_sellae", 0.14, True),
                   ("petroclival", 0.08, True), ("cerebellopontine_angle", 0.12, True)],
    "chordoma": [("clivus", 0.8, False), ("petroclival", 0.12, True), ("sellar_extension", 0.12, True)],
    "schwannoma": [("cerebellopontine_angle", 0.85, False), ("meckel_cave", 0.1, True),
                   ("cistern_only", 0.1, True)],
    "pituitary_adenoma": [("sella", 0.8, False), ("giant_suprasellar", 0.15, True),
                          ("cavernous_invasion", 0.1, True)],
    "craniopharyngioma": [("suprasellar", 0.8, False), ("intrasellar", 0.2, True)],
}
_BUILDERS = {"meningioma": _meningioma, "chordoma": _chordoma, "schwannoma": _schwannoma,
             "pituitary_adenoma": _pituitary, "craniopharyngioma": _craniopharyngioma}


# ---------------------------------------------------------------- appearance per class


def _appearance(label: str, rng: np.random.Generator, t: Tumour) -> None:
    """Fill ``t``'s enhancement, texture, cysts, calcifications and septa the way ``label`` usually looks."""
    c, r = t.centre, t.radius
    t.texture_mm = rng.uniform(4, 12)
    cyst_p, calc_p = 0.0, 0.0
    if label == "meningioma":
        t.base, t.texture, cyst_p = rng.normal(240, 12), rng.uniform(0.02, 0.07), 0.05
    elif label == "chordoma":
        t.base, t.texture, t.septa = rng.normal(150, 20), rng.uniform(0.1, 0.25), rng.uniform(0.15, 0.35)
        cyst_p, calc_p = 0.15, 0.15
    elif label == "schwannoma":
        t.base, t.texture, cyst_p = rng.normal(225, 15), rng.uniform(0.06, 0.18), 0.55
    elif label == "pituitary_adenoma":
        t.base, t.texture, cyst_p = rng.normal(190, 15), rng.uniform(0.04, 0.1), 0.2
    else:
        t.base, t.texture, cyst_p, calc_p = rng.normal(210, 20), rng.uniform(0.08, 0.2), 0.85, 0.7
    if rng.random() < cyst_p:
        n = int(rng.integers(1, 4))
        for _ in range(n):
            size = r * rng.uniform(0.3, 0.65) * (1.3 if label == "craniopharyngioma" else 1.0)
            t.cysts.append(_blob(c + rng.normal(0, 0.35 * r, 3), size * np.ones(3), rng, 0.1))
        t.cyst_value = rng.uniform(30, 200) if label == "craniopharyngioma" else rng.uniform(30, 90)
        t.rim_value = t.base * rng.uniform(1.0, 1.15)
    if rng.random() < calc_p:
        for _ in range(int(rng.integers(2, 10))):
            d = _unit(rng.standard_normal(3)) * r * rng.uniform(0.5, 0.95)
            t.calcs.append((c + d, rng.uniform(0.8, 2.2)))


def sample_tumour(label: str, rng: np.random.Generator, difficulty: Difficulty, model) -> Tumour:
    """Draw a tumour of class ``label``: its site (with mimicry), shape and appearance."""
    drawn_as = ""
    if rng.random() < difficulty.confuse:
        label = CONFUSABLE[label][int(rng.integers(len(CONFUSABLE[label])))]
        drawn_as = f" (as {label})"
    sites = SITES[label]
    w = np.array([wt * (difficulty.mimic if mimic else 1.0) for _, wt, mimic in sites])
    site = sites[int(rng.choice(len(sites), p=w / w.sum()))][0]
    tumour = _BUILDERS[label](rng, model, site)
    tumour.site += drawn_as
    looks = label if rng.random() >= difficulty.share else CLASSES[int(rng.integers(len(CLASSES)))]
    _appearance(looks, rng, tumour)
    ref = 170.0  # roughly the tissue around: enhancement is scaled around it
    tumour.base = ref + difficulty.contrast * (tumour.base - ref)
    tumour.rim_value = ref + difficulty.contrast * (tumour.rim_value - ref)
    tumour.tail_value = ref + difficulty.contrast * (tumour.tail_value - ref)
    return tumour


# ---------------------------------------------------------------- rendering


def _waves(pts: np.ndarray, rng: np.random.Generator, wavelength: float, k: int = 10) -> np.ndarray:
    """Smooth random field ~N(0, 1) at ``pts`` (N, 3): a sum of ``k`` plane waves."""
    dirs = rng.standard_normal((k, 3))
    dirs *= (2 * np.pi / (wavelength * rng.uniform(0.7, 1.4, k)) / np.linalg.norm(dirs, axis=1))[:, None]
    phases = rng.uniform(0, 2 * np.pi, k).astype(np.float32)
    return np.cos(pts @ dirs.T.astype(np.float32) + phases).sum(axis=1) * np.float32(np.sqrt(2 / k))


def render(t: Tumour, pts: np.ndarray, rng: np.random.Generator, edge: float) -> tuple[np.ndarray, ...]:
    """Tumour opacity, intensity and mask at MNI points.

    Args:
        t: the tumour.
        pts: (N, 3) MNI coordinates (mm), float32.
        rng: draws the texture fields.
        edge: width (mm) of the partial-volume edge.

    Returns:
        ``(alpha, value, inside, tail_alpha)``: opacity in [0, 1], intensity, bool mask (N,) each, and
        the dural tail's opacity (not part of the mask).
    """
    level = np.min([b.level(pts) for b in t.blobs], axis=0)
    dist = (level - 1) * np.float32(t.radius)  # ~ signed distance (mm)
    if t.plane is not None:
        beyond = (pts - t.plane[0].astype(np.float32)) @ t.plane[1].astype(np.float32)
        dist = np.maximum(dist, beyond)
    alpha = np.clip(0.5 - dist / np.float32(edge), 0, 1)
    inside = dist < 0
    value = t.base * (1 + t.texture * _waves(pts, rng, t.texture_mm))
    if t.septa > 0:
        bubbles = np.abs(_waves(pts, rng, 7.0, 14))
        value = np.where(bubbles < t.septa, t.base * 1.35, value * 0.85)
    for cyst in t.cysts:
        lv = cyst.level(pts)
        wall = 1.5 / float(cyst.radii.mean())
        value = np.where(lv < 1, np.where(lv > 1 - wall, t.rim_value, t.cyst_value), value)
    for centre, rad in t.calcs:
        near = ((pts - centre.astype(np.float32)) ** 2).sum(axis=1) < rad**2
        value = np.where(near, 25.0, value)
    tail_alpha = np.zeros_like(alpha)
    if t.tail is not None:
        tail_alpha = np.clip(1.5 - t.tail.level(pts) * 1.5, 0, 1) * (dist > 0)
    return alpha.astype(np.float32), value.astype(np.float32), inside, tail_alpha.astype(np.float32)
