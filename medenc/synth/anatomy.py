"""Head anatomy for the synthetic data set: the MNI ICBM152 2009a brain plus a synthetic head around it.

The brain (T1 template, skull-stripped) comes from the ``nilearn`` wheel; skull, scalp, dura and the
skull-base structures the tumour classes live next to (sella with pituitary gland, clivus, cavernous
sinuses, petrous bones with internal auditory canals, sphenoid sinus, orbits) are drawn around it as
simple shapes with plausible T1 post-contrast intensities. The model is built once per process (a few
seconds) on a 1 mm grid in MNI space and cached.

Coordinates: "scanner" coordinates are RAS millimetres in which the synthetic head sits roughly where
the MNI brain sits; a random pose and a smooth elastic field map scanner coordinates to MNI
coordinates, where the head model is sampled.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from medenc.errors import InputError

#: axial slab kept in every volume (scanner z, mm): from below the clivus to above the ventricles.
SLAB_Z = (-66.0, 42.0)
#: square in-plane field of view (mm) and its centre (scanner x, y).
FOV_MM = 240.0
FOV_CENTER = (0.0, -18.0)
#: axial slices per in-plane pixel: 36 slices at the default 128 x 128 (3 mm), 90 at 320 (1.2 mm).
SLICES_PER_PIXEL = 36 / 128
MIN_SLICES = 8

_MNI_FILES = {k: f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz" for k in ("t1", "gm", "wm")}
_Z_PAD = 12  # zero slices added below the template (MNI z -72 .. -84) so poses never sample "nothing"
_Z_TOP = 66.0  # the model stops here (MNI z, mm): above the slab even for large heads

# T1 post-contrast intensities on the template's scale (white matter ~215, grey ~160)
CSF, DURA, BONE, MARROW, FAT, SKIN, MUSCLE, AIR = 50.0, 205.0, 22.0, 150.0, 235.0, 140.0, 105.0, 4.0


@dataclass(frozen=True)
class Grid:
    """The output voxel grid: ``size x size`` axial slices, ``n_slices`` of them, NIfTI axis order.

    Voxel ``(i, j, k)`` is column ``i``, row ``j``, slice ``k``; columns run to the patient's left,
    rows to posterior, slices from inferior to superior (DICOM axial convention).
    """

    size: int
    n_slices: int
    spacing: tuple[float, float, float]
    affine: np.ndarray  # 4x4, voxel -> RAS mm

    def axes_ras(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """RAS coordinates along the three voxel axes (x of columns, y of rows, z of slices)."""
        idx = [np.arange(n, dtype=np.float64) for n in (self.size, self.size, self.n_slices)]
        return tuple(self.affine[a, a] * idx[a] + self.affine[a, 3] for a in range(3))  # type: ignore[return-value]


def n_slices_for(size: int) -> int:
    """Number of axial slices for an in-plane matrix of ``size`` (scales with it, at least 8)."""
    return max(MIN_SLICES, round(size * SLICES_PER_PIXEL))


def output_grid(size: int, n_slices: int | None = None) -> Grid:
    """The voxel grid of a ``size x size`` case covering :data:`SLAB_Z` and :data:`FOV_MM`.

    ``n_slices`` sets the number of axial slices over the same slab (thinner slices for more of them);
    by default it scales with ``size`` (:func:`n_slices_for`).
    """
    n = n_slices_for(size) if n_slices is None else int(n_slices)
    dx = FOV_MM / size
    dz = (SLAB_Z[1] - SLAB_Z[0]) / n
    # LPS position of voxel (0, 0, k): first column = patient right, first row = anterior
    x_lps0 = -FOV_CENTER[0] - (size - 1) / 2 * dx
    y_lps0 = -FOV_CENTER[1] - (size - 1) / 2 * dx
    z0 = SLAB_Z[0] + dz / 2
    affine = np.array(
        [[-dx, 0, 0, -x_lps0], [0, -dx, 0, -y_lps0], [0, 0, dz, z0], [0, 0, 0, 1]], dtype=np.float64
    )
    return Grid(size=size, n_slices=n, spacing=(dx, dx, dz), affine=affine)


@dataclass(frozen=True)
class HeadModel:
    """The cached 1 mm head in MNI space.

    Attributes:
        image: T1 post-contrast-like intensities, shape (X, Y, Z), float32.
        head: voxels inside the head (not air around it), bool, same shape.
        origin: MNI coordinate (mm) of voxel (0, 0, 0).
        surface: dural surface points of the convexity usable as meningioma sites, (N, 3) MNI mm.
        normals: outward unit normals at those points, (N, 3).
    """

    image: np.ndarray
    head: np.ndarray
    origin: np.ndarray
    surface: np.ndarray
    normals: np.ndarray


def _template_dir() -> Path:
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the nilearn package is not installed", tip="pip install nilearn (it ships MNI152)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    for name in _MNI_FILES.values():
        if not (folder / name).is_file():
            raise InputError("MNI ICBM152 2009a template missing from nilearn", path=folder / name)
    return folder


def _load_template() -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    folder = _template_dir()
    img = nib.load(str(folder / _MNI_FILES["t1"]))
    top = round(_Z_TOP - img.affine[2, 3]) + 1
    t1 = np.asarray(img.dataobj[:, :, :top], dtype=np.float32)
    t1 = np.pad(t1, ((0, 0), (0, 0), (_Z_PAD, 0)))
    origin = img.affine[:3, 3] - np.array([0.0, 0.0, _Z_PAD])
    return t1, origin


def _mm_grid(shape: tuple[int, ...], origin: np.ndarray) -> list[np.ndarray]:
    return [np.arange(n, dtype=np.float32) + np.float32(o) for n, o in zip(shape, origin, strict=True)]


def _paint(image: np.ndarray, free: np.ndarray, axes: list[np.ndarray], shape_list: list[tuple]) -> None:
    """Draw ellipsoids ``("e", centre, radii, value)`` and capsules ``("c", p0, p1, radius, value)``.

    Only voxels in ``free`` (outside the template brain) are painted; later shapes overwrite earlier ones.
    """
    for item in shape_list:
        if item[0] == "e":
            _, c, r, value = item
            lo, hi = np.subtract(c, r), np.add(c, r)
        else:
            _, p0, p1, rad, value = item
            lo, hi = np.minimum(p0, p1) - rad, np.maximum(p0, p1) + rad
        sl = tuple(
            slice(max(0, int(np.floor(lo[a] - ax[0]))), min(len(ax), int(np.ceil(hi[a] - ax[0])) + 1))
            for a, ax in enumerate(axes)
        )
        gx, gy, gz = np.meshgrid(*(ax[s] for ax, s in zip(axes, sl, strict=True)), indexing="ij")
        if item[0] == "e":
            inside = ((gx - c[0]) / r[0]) ** 2 + ((gy - c[1]) / r[1]) ** 2 + ((gz - c[2]) / r[2]) ** 2 <= 1
        else:
            p0a, d = np.asarray(p0, np.float32), np.subtract(p1, p0).astype(np.float32)
            t = ((gx - p0a[0]) * d[0] + (gy - p0a[1]) * d[1] + (gz - p0a[2]) * d[2]) / float(d @ d)
            t = np.clip(t, 0, 1)
            dist2 = (gx - p0a[0] - t * d[0]) ** 2 + (gy - p0a[1] - t * d[1]) ** 2 + (gz - p0a[2] - t * d[2]) ** 2
            inside = dist2 <= rad**2
        inside &= free[sl]
        image[sl][inside] = value


def _skull_base() -> list[tuple]:
    """Skull-base and orbit shapes (MNI mm), drawn in this order."""
    shapes: list[tuple] = [
        ("e", (0, 2, -40), (15, 16, 9), MARROW),  # sphenoid body
        ("e", (0, 12, -43), (12, 10, 7), AIR),  # sphenoid sinus
        ("c", (0, -8, -34), (0, -29, -62), 8.0, BONE),  # clivus cortex
        ("c", (0, -8, -34), (0, -28, -61), 5.5, 165.0),  # clivus marrow
        ("c", (0, -8, -33), (0, -7, -24), 2.2, BONE),  # dorsum sellae
        ("e", (0, 2, -23), (15, 13, 6), CSF),  # suprasellar cistern
        ("c", (0, 2, -27), (0, 3, -17), 1.6, 190.0),  # pituitary stalk (enhancing)
        ("e", (0, 1, -31), (6.5, 5.0, 4.0), 225.0),  # pituitary gland (enhancing)
    ]
    for s in (-1, 1):
        shapes += [
            ("e", (s * 12, 1, -30), (4.5, 9, 6), 205.0),  # cavernous sinus
            ("c", (s * 12, 7, -34), (s * 12, -6, -28), 2.2, AIR),  # carotid flow void
            ("c", (s * 19, -13, -39), (s * 54, -38, -37), 8.5, BONE),  # petrous bone
            ("c", (s * 23, -23, -35), (s * 39, -20, -36), 2.6, 60.0),  # internal auditory canal
            ("e", (s * 28, 36, -38), (13, 19, 11), FAT),  # orbital fat
            ("e", (s * 33, 56, -40), (12, 11, 11), 42.0),  # globe (vitreous)
            ("c", (s * 30, 44, -39), (s * 10, 12, -27), 2.3, 150.0),  # optic nerve
            ("e", (s * 24, 34, -60), (12, 16, 10), AIR),  # maxillary sinus
        ]
    shapes += [("e", (0, 44, -52), (10, 22, 13), AIR), ("e", (0, 44, -52), (1.3, 22, 13), SKIN)]  # nose
    return shapes


@functools.lru_cache(maxsize=1)
def head_model() -> HeadModel:
    """Build (once per process) the synthetic head around the MNI brain; see :class:`HeadModel`."""
    t1, origin = _load_template()
    brain = t1 > 0
    icv = ndi.gaussian_filter(brain.astype(np.float32), 3.0) > 0.3
    icv = ndi.binary_fill_holes(icv | brain)
    # the head's outline: union of the intracranial cross-sections above each level (face, neck below)
    above = np.flip(np.logical_or.accumulate(np.flip(icv, axis=2), axis=2), axis=2)
    d_icv = _distance(~icv)
    d_above = _distance(~above)
    image = np.where(brain, t1, np.float32(0.0)).astype(np.float32)
    outside = ~brain
    image[outside & icv] = CSF
    image[outside & icv & (_distance(icv) <= 1.5)] = DURA
    shell = ~icv & (d_icv <= 6.5) & (d_above <= 7.5)
    image[shell] = BONE
    image[shell & (d_icv > 2.0) & (d_icv < 5.0)] = MARROW
    deep = ~icv & ~shell & (d_above <= 7.5)
    rng = np.random.default_rng(12345)  # fixed texture of the deep soft tissue (part of the model)
    coarse = ndi.gaussian_filter(rng.standard_normal([(n + 3) // 4 for n in t1.shape]).astype(np.float32), 1.0)
    texture = _upsample2(_upsample2(coarse, [2 * n for n in coarse.shape]), t1.shape)
    image[deep] = MUSCLE + 90.0 * texture[deep]
    image[(d_above > 7.5) & (d_above <= 11.0)] = FAT
    image[(d_above > 11.0) & (d_above <= 12.5)] = SKIN
    axes = _mm_grid(t1.shape, origin)
    free = outside & (axes[2][None, None, :] <= -12)  # skull-base shapes never reach into the cerebrum
    _paint(image, free, axes, _skull_base())
    # enhancing falx between the hemispheres
    falx = (np.abs(axes[0])[:, None, None] < 1.0) & (t1 < 100) & (axes[2][None, None, :] > -5) & icv
    image[falx] = DURA
    head = d_above <= 12.5
    surface, normals = _convexity_sites(icv, origin)
    return HeadModel(np.clip(image, 0, 255), head, origin.astype(np.float32), surface, normals)


def _upsample2(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Linear x2 upsampling along every axis (sample 2i = a[i]), cropped to ``shape``."""
    for axis, n in enumerate(shape):
        a = np.moveaxis(a, axis, 0)
        out = np.empty((2 * a.shape[0], *a.shape[1:]), dtype=a.dtype)
        out[0::2] = a
        out[1:-1:2] = 0.5 * (a[:-1] + a[1:])
        out[-1] = a[-1]
        a = np.moveaxis(out[:n], 0, axis)
    return a


def _distance(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance (mm) of each ``mask`` voxel to the nearest non-``mask`` voxel, on a 2 mm grid."""
    coarse = ndi.distance_transform_edt(mask[::2, ::2, ::2], sampling=2.0).astype(np.float32)
    return np.where(mask, np.maximum(_upsample2(coarse, mask.shape), 0.5), np.float32(0.0))


def _convexity_sites(icv: np.ndarray, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    border = icv & ~ndi.binary_erosion(icv)
    pts = np.argwhere(border).astype(np.float32) + origin.astype(np.float32)
    keep = (pts[:, 2] > -5) & (pts[:, 2] < 36) & (np.abs(pts[:, 0]) > 18)
    pts = pts[keep][::7]
    smooth = ndi.gaussian_filter(icv[::2, ::2, ::2].astype(np.float32), 1.0)
    grads = np.stack(np.gradient(smooth), axis=0)
    idx = np.clip(np.round((pts - origin) / 2).astype(int), 0, np.array(smooth.shape) - 1).T
    normals = -grads[:, idx[0], idx[1], idx[2]].T
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-6
    return pts, normals.astype(np.float32)


def rotation(angles_deg: np.ndarray) -> np.ndarray:
    """Rotation matrix from angles (degrees) about x, y and z, applied in that order."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def mni_coordinates(grid: Grid, rng: np.random.Generator) -> np.ndarray:
    """Random pose + head size + smooth elastic field: the MNI point seen by every output voxel.

    Returns:
        float32 array, shape (3, size, size, n_slices): MNI x, y, z (mm) of each voxel.
    """
    scale = rng.uniform(0.9, 1.1) * rng.uniform(0.97, 1.03, size=3)
    rot = rotation(rng.uniform(-1, 1, size=3) * np.array([7.0, 4.0, 6.0]))
    shift = rng.uniform(-1, 1, size=3) * np.array([6.0, 8.0, 4.0])
    centre = np.array([FOV_CENTER[0], FOV_CENTER[1], 0.0])
    # scanner p = centre + shift + scale * rot @ (m - centre)  =>  m = centre + rot.T @ (p - centre - shift) / scale
    inv = (rot.T / scale[:, None]).astype(np.float32)
    xs, ys, zs = (a.astype(np.float32) for a in grid.axes_ras())
    p = [xs[:, None, None] - centre[0] - shift[0], ys[None, :, None] - centre[1] - shift[1],
         zs[None, None, :] - shift[2]]
    out = np.empty((3, grid.size, grid.size, grid.n_slices), dtype=np.float32)
    for a in range(3):
        out[a] = centre[a] + inv[a, 0] * p[0] + inv[a, 1] * p[1] + inv[a, 2] * p[2]
    # elastic: a few long-wavelength sine waves per axis, ~1.5 mm amplitude
    for a in range(3):
        for _ in range(3):
            k = rng.standard_normal(3)
            k *= 2 * np.pi / rng.uniform(60, 140) / np.linalg.norm(k)
            phase = np.float32(rng.uniform(0, 2 * np.pi))
            wave = (np.float32(k[0]) * xs[:, None, None] + np.float32(k[1]) * ys[None, :, None]
                    + np.float32(k[2]) * zs[None, None, :] + phase)
            out[a] += np.float32(rng.normal(0, 1.0)) * np.sin(wave)
    return out


def sample(model: HeadModel, coords: np.ndarray, volume: np.ndarray | None = None) -> np.ndarray:
    """Trilinear sample of ``model.image`` (or ``volume`` on the same grid) at MNI ``coords`` (3, ...)."""
    src = model.image if volume is None else volume
    idx = coords - model.origin.reshape((3,) + (1,) * (coords.ndim - 1))
    return ndi.map_coordinates(src, idx, order=1, mode="constant", cval=0.0, prefilter=False)
