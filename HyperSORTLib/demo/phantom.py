"""CT-like abdominal phantoms built from smooth analytic shapes.

Each phantom is an axial stack of the upper abdomen in RAS orientation: axis i runs from the
patient's left to the patient's right (+x is patient Right, as in NIfTI and Slicer), axis j from
posterior to anterior (+y), axis k from inferior to superior (+z). Shapes are placed in a
patient-left coordinate ``u = -x`` (so the liver is at negative ``u``, on the patient's right). The affine is ``diag(spacing)`` with its origin
chosen so that the volume is centred on world (0, 0, 0); every shape is defined in millimetres
and then sampled, so the same random draw gives the same anatomy at any grid.

The image holds air, a body of subcutaneous fat with a muscle wall, back and psoas muscles,
the spine, the aorta and the inferior vena cava, stomach and bowel loops, and four labelled
organs (liver, spleen, right and left kidney). Body size, organ sizes, positions, rotations and
tissue intensities vary between draws; partial-volume blur and Gaussian noise finish the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from HyperSORTLib.utils.nifti import voxel_sizes

__all__ = ["CLASS_NAMES", "Phantom", "make_phantom", "phantom_affine"]

#: Label names by id; id 0 is background.
CLASS_NAMES: tuple[str, ...] = ("background", "liver", "spleen", "right_kidney", "left_kidney")

_LIVER, _SPLEEN, _RIGHT_KIDNEY, _LEFT_KIDNEY = 1, 2, 3, 4


@dataclass(frozen=True, eq=False)
class Phantom:
    """One synthetic CT case.

    Attributes:
        image: float32 array of Hounsfield units, axes (i, j, k).
        label: uint8 label map with ids as in :data:`CLASS_NAMES`.
        affine: 4x4 float64 voxel-to-RAS-world affine in millimetres.
    """

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in millimetres along i, j, k."""
        return tuple(float(v) for v in voxel_sizes(self.affine))  # type: ignore[return-value]


def phantom_affine(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """RAS affine ``diag(spacing)`` whose origin puts the centre of the volume at world 0.

    Args:
        shape: number of voxels along i, j, k.
        spacing: voxel size in millimetres along i, j, k.

    Returns:
        A 4x4 float64 affine.
    """
    affine = np.diag([*map(float, spacing), 1.0])
    affine[:3, 3] = -(np.asarray(shape, dtype=np.float64) - 1.0) / 2.0 * np.asarray(spacing, dtype=np.float64)
    return affine


def _check_grid(shape: object, spacing: object) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    try:
        shape_t = tuple(int(s) for s in shape)  # type: ignore[union-attr]
        spacing_t = tuple(float(s) for s in spacing)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"shape and spacing must be sequences of 3 numbers, found {shape!r} and {spacing!r}.") from None
    if len(shape_t) != 3 or any(s < 1 for s in shape_t) or any(int(s) != s for s in shape):  # type: ignore[union-attr]
        raise ValueError(f"shape must be 3 positive integers, found {shape!r}.")
    if len(spacing_t) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing_t):
        raise ValueError(f"spacing must be 3 finite positive numbers (mm), found {spacing!r}.")
    return shape_t, spacing_t  # type: ignore[return-value]


def _rotation(rng: np.random.Generator, max_deg: tuple[float, float, float]) -> np.ndarray:
    """Random rotation, angles uniform in +-max_deg about x, y, z (applied z, y, x)."""
    ax, ay, az = (math.radians(rng.uniform(-m, m)) for m in max_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _rot_z(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])


def _rot_y(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


class _Grid:
    """Coordinates (mm) of the voxel centres, as three broadcastable axis vectors.

    ``x`` is the patient-left coordinate (minus RAS x), ``y`` and ``z`` are RAS.
    """

    def __init__(self, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> None:
        self.shape = shape
        centred = [(np.arange(n, dtype=np.float64) - (n - 1) / 2.0) * h for n, h in zip(shape, spacing)]
        self.x = -centred[0][:, None, None]
        self.y = centred[1][None, :, None]
        self.z = centred[2][None, None, :]

    def local(self, centre: np.ndarray, rotation: np.ndarray | None) -> tuple[np.ndarray, ...]:
        """Coordinates in a frame centred at ``centre`` and rotated by ``rotation`` (object to world)."""
        dx, dy, dz = self.x - centre[0], self.y - centre[1], self.z - centre[2]
        if rotation is None:
            return dx, dy, dz
        r = rotation  # world = R @ local, so local = R.T @ world
        return (r[0, 0] * dx + r[1, 0] * dy + r[2, 0] * dz,
                r[0, 1] * dx + r[1, 1] * dy + r[2, 1] * dz,
                r[0, 2] * dx + r[1, 2] * dy + r[2, 2] * dz)

    def superellipsoid(self, centre: np.ndarray, semi: np.ndarray, power: float = 2.0,
                       rotation: np.ndarray | None = None) -> np.ndarray:
        """Boolean mask of |x/a|^p + |y/b|^p + |z/c|^p <= 1 in the rotated frame."""
        u, v, w = self.local(centre, rotation)
        value = np.abs(u / semi[0]) ** power + np.abs(v / semi[1]) ** power + np.abs(w / semi[2]) ** power
        return value <= 1.0

    def elliptic_cylinder(self, cx: float, cy: float, ax: float, ay: float, power: float = 2.0,
                          z_range: tuple[float, float] | None = None) -> np.ndarray:
        """Boolean mask of a cylinder along z with a superelliptic cross-section."""
        mask2d = (np.abs((self.x - cx) / ax) ** power + np.abs((self.y - cy) / ay) ** power) <= 1.0
        mask = np.broadcast_to(mask2d, self.shape)
        if z_range is not None:
            mask = mask & (self.z >= z_range[0]) & (self.z <= z_range[1])
        return np.array(mask)


def make_phantom(
    rng: np.random.Generator,
    shape: tuple[int, int, int] = (48, 40, 32),
    spacing: tuple[float, float, float] = (7.0, 7.0, 8.0),
) -> Phantom:
    """Draw one CT-like abdominal phantom.

    Anatomy varies between draws: body size +-10 %, each organ's size +-15 %, organ positions by
    about 1-2 cm, small organ rotations, tissue intensities by a few HU, noise level 15-20 HU.
    Organs never overlap (kidneys take precedence over spleen, spleen over liver) and stay
    inside the muscle wall; spine and vessels are never labelled.

    Args:
        rng: random generator; the phantom is a deterministic function of its state.
        shape: number of voxels along i (right->left), j (posterior->anterior), k (inferior->superior).
        spacing: voxel size in millimetres along i, j, k. The default grid covers
            336 x 280 x 256 mm, a typical upper-abdomen field of view.

    Returns:
        A :class:`Phantom` with float32 HU image, uint8 label and its RAS affine.

    Raises:
        ValueError: ``rng`` is not a numpy Generator, or ``shape``/``spacing`` are not three
            positive numbers (shape integers).
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, found {type(rng).__name__}.")
    shape, spacing = _check_grid(shape, spacing)
    g = _Grid(shape, spacing)
    u = rng.uniform

    # ---- body: elliptical cylinder, muscle wall, subcutaneous fat ---------------------------
    body_scale = u(0.9, 1.1)
    body_ax, body_ay = 150.0 * body_scale * u(0.97, 1.03), 112.0 * body_scale * u(0.97, 1.03)
    body_cy = u(-5.0, 5.0)
    fat_layer = u(8.0, 22.0)  # subcutaneous fat thickness varies a lot between patients
    wall = u(9.0, 14.0)
    outer = g.elliptic_cylinder(0.0, body_cy, body_ax, body_ay, power=2.2)
    wall_outer = g.elliptic_cylinder(0.0, body_cy, body_ax - fat_layer, body_ay - fat_layer, power=2.2)
    interior = g.elliptic_cylinder(0.0, body_cy, body_ax - fat_layer - wall, body_ay - fat_layer - wall, power=2.2)
    back = body_cy - body_ay  # posterior skin line, y coordinate

    hu = {
        "air": -1000.0, "fat": u(-110.0, -90.0), "muscle": u(40.0, 60.0), "bone": u(380.0, 450.0),
        "disc": u(70.0, 100.0), "canal": u(10.0, 30.0), "aorta": u(140.0, 170.0), "ivc": u(100.0, 130.0),
        "bowel": u(20.0, 45.0), "gas": u(-900.0, -700.0), "liver": u(90.0, 110.0),
        "spleen": u(100.0, 120.0), "kidney": u(165.0, 195.0),
    }
    image = np.full(shape, hu["air"], dtype=np.float64)
    image[outer] = hu["fat"]
    image[wall_outer] = hu["muscle"]
    image[interior] = hu["fat"]
    # Mesenteric fat is slightly denser than subcutaneous fat.
    image[interior] += 10.0

    def scaled(v: tuple[float, float, float]) -> np.ndarray:
        return np.asarray(v, dtype=np.float64) * body_scale

    def jitter(mm: float) -> np.ndarray:
        return rng.uniform(-mm, mm, size=3)

    # ---- spine, paraspinal and psoas muscles --------------------------------------------------
    spine_cy = back + fat_layer + wall + u(40.0, 50.0) * body_scale
    vb_r = u(18.0, 22.0) * body_scale
    vertebral_body = g.elliptic_cylinder(u(-3.0, 3.0), spine_cy, vb_r * 1.1, vb_r * 0.9)
    canal = g.elliptic_cylinder(0.0, spine_cy - vb_r - 9.0, 9.0, 8.0)
    arch = g.elliptic_cylinder(0.0, spine_cy - vb_r - 9.0, 17.0, 15.0) & ~canal
    spinous = g.elliptic_cylinder(0.0, spine_cy - vb_r - 30.0, 5.0, 14.0)
    erector_l = g.elliptic_cylinder(32.0 * body_scale, spine_cy - vb_r - 22.0, 24.0, 20.0)
    erector_r = g.elliptic_cylinder(-32.0 * body_scale, spine_cy - vb_r - 22.0, 24.0, 20.0)
    image[(erector_l | erector_r) & outer] = hu["muscle"]
    # Psoas muscles widen towards the pelvis (inferior, low z).
    psoas_scale = np.clip(1.0 - g.z / 300.0, 0.4, 1.6)
    for side in (-1.0, 1.0):
        psoas = (((g.x - side * (vb_r + 14.0)) / (16.0 * psoas_scale)) ** 2
                 + ((g.y - spine_cy + 2.0) / (15.0 * psoas_scale)) ** 2) <= 1.0
        image[psoas & interior] = hu["muscle"]
    # Intervertebral discs every ~32 mm along z, at a random phase.
    disc_phase = u(0.0, 32.0)
    is_disc = np.broadcast_to(((g.z - disc_phase) % 32.0) < 6.0, shape)
    spine_bone = vertebral_body | arch | spinous

    # ---- great vessels -----------------------------------------------------------------------
    aorta = g.elliptic_cylinder(u(8.0, 16.0), spine_cy + vb_r + u(10.0, 14.0), 11.0, 11.0)
    ivc = g.elliptic_cylinder(u(-30.0, -22.0), spine_cy + vb_r + u(8.0, 14.0), 11.0, 8.0)
    vessels = aorta | ivc

    # ---- stomach and bowel (unlabelled soft tissue with gas) -----------------------------------
    stomach_c = scaled((55.0, 45.0, 55.0)) + jitter(12.0)
    stomach = g.superellipsoid(stomach_c, scaled((45.0, 32.0, 50.0)) * u(0.8, 1.2), 2.0, _rotation(rng, (10, 10, 25)))
    image[stomach & interior] = hu["bowel"]
    gas_level = stomach_c[1] + u(10.0, 20.0)  # gas rises anteriorly in a supine patient
    image[stomach & interior & (g.y > gas_level)] = hu["gas"]
    for _ in range(int(rng.integers(5, 9))):
        c = np.array([u(-70.0, 90.0), u(0.0, 70.0), u(-120.0, -10.0)]) * body_scale
        loop = g.superellipsoid(c, np.array([u(12.0, 25.0), u(12.0, 22.0), u(15.0, 35.0)]), 2.0,
                                _rotation(rng, (30, 30, 60))) & interior
        image[loop] = hu["bowel"] + u(-10.0, 10.0)
        if rng.uniform() < 0.5:
            image[loop & (g.y > c[1] + u(4.0, 10.0))] = hu["gas"]

    # ---- lung bases above the diaphragm, posterior-lateral at the top of the field of view -------
    diaphragm_z = u(70.0, 95.0) * body_scale
    for side in (-1.0, 1.0):
        lung_c = np.array([side * 70.0 * body_scale, back + 95.0 * body_scale, diaphragm_z + 75.0])
        lung = g.superellipsoid(lung_c + jitter(6.0), scaled((62.0, 75.0, 80.0)), 2.0) & interior
        image[lung] = u(-880.0, -820.0)

    # ---- labelled organs -----------------------------------------------------------------------
    label = np.zeros(shape, dtype=np.uint8)
    organ_scale = rng.uniform(0.85, 1.15, size=4)

    # Liver: patient right (negative u), anterior-upper; a superellipsoid that thins towards the
    # left lobe so its cross-section looks like a wedge rather than a ball.
    liver_c = scaled((-55.0, 12.0, 52.0)) + jitter(15.0)
    liver_semi = np.array([88.0, 78.0, 75.0]) * organ_scale[0] * body_scale
    lu, lv, lw = g.local(liver_c, _rotation(rng, (6, 6, 10)))
    taper = np.clip(1.0 - 0.45 * (lu / liver_semi[0] + 1.0) / 2.0, 0.45, 1.0)  # 1 at right, ~0.55 at left tip
    dome = np.clip(1.0 - 0.5 * np.clip(lw / liver_semi[2], 0.0, None), 0.5, 1.0)  # narrower towards the dome
    liver = (np.abs(lu / liver_semi[0]) ** 2.5 + np.abs(lv / (liver_semi[1] * taper)) ** 2.5
             + np.abs(lw / (liver_semi[2] * dome)) ** 2.5) <= 1.0
    # Gallbladder-free but with a posterior bare area: the liver wraps around the IVC region.
    liver &= interior & ~vessels & ~spine_bone

    # Spleen: patient left, posterior, upper; oriented along the ribs.
    spleen_c = scaled((88.0, -38.0, 58.0)) + jitter(12.0)
    spleen_rot = _rot_z(u(-45.0, -25.0)) @ _rotation(rng, (8, 8, 8))
    spleen = g.superellipsoid(spleen_c, np.array([26.0, 55.0, 48.0]) * organ_scale[1] * body_scale, 2.2, spleen_rot)
    spleen &= interior

    # Kidneys: paravertebral, posterior, below liver and spleen; the right lower than the left.
    # Upper poles tilt medially and the hilum faces antero-medially.
    kidneys = []
    for class_id, side, z0, scale in ((_RIGHT_KIDNEY, -1.0, -45.0, organ_scale[2]),
                                      (_LEFT_KIDNEY, 1.0, -25.0, organ_scale[3])):
        c = np.array([side * (vb_r + 48.0) * body_scale, spine_cy + u(-4.0, 8.0), z0 * body_scale]) + jitter(10.0)
        rot = _rot_z(side * u(20.0, 40.0)) @ _rot_y(-side * u(8.0, 18.0)) @ _rotation(rng, (5, 5, 5))
        semi = np.array([32.0, 24.0, 56.0]) * scale * body_scale
        kidney = g.superellipsoid(c, semi, 2.0, rot) & interior & ~spine_bone
        # Renal sinus fat at the hilum: a notch on the medial side, part of the kidney label.
        ku, kv, kw = g.local(c, rot)
        sinus = (((ku + side * 0.55 * semi[0]) / (0.45 * semi[0])) ** 2 + (kv / (0.45 * semi[1])) ** 2
                 + (kw / (0.4 * semi[2])) ** 2) <= 1.0
        kidneys.append((class_id, kidney, kidney & sinus))

    # Paint in reverse priority so that higher-priority organs win where shapes overlap.
    label[liver] = _LIVER
    label[spleen] = _SPLEEN
    for class_id, kidney, _ in kidneys:
        label[kidney] = class_id
    image[label == _LIVER] = hu["liver"]
    image[label == _SPLEEN] = hu["spleen"]
    for class_id, _, sinus in kidneys:
        image[label == class_id] = hu["kidney"]
        image[sinus & (label == class_id)] = hu["fat"] + 60.0
    # Vessels and bone are drawn last and are never part of an organ label.
    image[aorta] = hu["aorta"]
    image[ivc] = hu["ivc"]
    image[spine_bone] = hu["bone"]
    image[vertebral_body & is_disc] = hu["disc"]
    image[canal] = hu["canal"]
    label[vessels | spine_bone | canal] = 0
    image[label == _LIVER] += _smooth_texture(rng, shape, 6.0)[label == _LIVER]

    # ---- acquisition: partial-volume blur and noise ---------------------------------------------
    image = ndimage.gaussian_filter(image, sigma=0.7, mode="nearest")
    image += rng.normal(0.0, u(15.0, 20.0), size=shape)
    return Phantom(image=image.astype(np.float32), label=label, affine=phantom_affine(shape, spacing))


def _smooth_texture(rng: np.random.Generator, shape: tuple[int, int, int], amplitude_hu: float) -> np.ndarray:
    """Low-frequency parenchymal texture (a few HU), so organs are not perfectly flat."""
    field = ndimage.gaussian_filter(rng.normal(0.0, 1.0, size=shape), sigma=2.0, mode="wrap")
    std = float(field.std())
    return field * (amplitude_hu / std) if std > 0 else field
