"""What a cluster's UNet does differently from the main mode's, measured and put into words.

Given the label maps that the main mode's UNet and a cluster's UNet produce on the same probe
cases, :func:`compare_to_reference` measures per class (pooled over the probes): volumes in ml,
the relative volume change, the Dice overlap, whether the class vanishes or appears, and whether
two classes trade places (e.g. left/right kidney swapped) or one is labelled as another.
:func:`describe_behaviour` turns that into a short sentence such as
``"liver about 22% larger than the main mode; spleen missing"``.

Only numpy is needed; the label maps come from any source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from HyperSORTLib.metrics import dice_from_confusion

__all__ = ["BehaviourThresholds", "ClassBehaviour", "ClusterBehaviour", "compare_to_reference",
           "describe_behaviour"]


@dataclass(frozen=True)
class BehaviourThresholds:
    """When a difference is worth a phrase.

    Args:
        volume: relative volume change (fraction) from which "larger"/"smaller" is said.
        dice: Dice with the main mode below which a class is said to be drawn differently.
        vanish: a class present in the main mode is "missing" when the cluster keeps less than
            this fraction of its volume.
        swap: share of a class's main-mode voxels that must carry the other class (both ways)
            for a swap, or one way for "labelled as".
        min_voxel_fraction: a class absent from the main mode "appears" when the cluster gives
            it at least this fraction of the probe voxels (and at least 20 voxels).
    """

    volume: float = 0.05
    dice: float = 0.85
    vanish: float = 0.1
    swap: float = 0.5
    min_voxel_fraction: float = 1e-4

    def __post_init__(self) -> None:
        for name in ("volume", "dice", "vanish", "swap", "min_voxel_fraction"):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"BehaviourThresholds.{name} must lie in [0, 1]; found {value!r}")


@dataclass(frozen=True)
class ClassBehaviour:
    """One class of one cluster, pooled over the probe cases.

    Attributes:
        name: class name.
        volume_ml: mean volume per probe case under the cluster's UNet.
        reference_volume_ml: mean volume per probe case under the main mode's UNet.
        volume_change: ``(volume - reference) / reference``; NaN when the reference is empty.
        dice: Dice between the cluster's and the main mode's outputs (1.0 when both are empty).
        missing: present in the main mode's output, (almost) absent from the cluster's.
        appears: absent from the main mode's output, present in the cluster's.
        swapped_with: name of the class it trades places with, or ``None``.
        labelled_as: name of the class its main-mode voxels mostly receive, or ``None``.
    """

    name: str
    volume_ml: float
    reference_volume_ml: float
    volume_change: float
    dice: float
    missing: bool = False
    appears: bool = False
    swapped_with: str | None = None
    labelled_as: str | None = None

    def as_dict(self) -> dict[str, Any]:
        change = None if not np.isfinite(self.volume_change) else round(float(self.volume_change), 4)
        return {"name": self.name, "volume_ml": round(self.volume_ml, 3),
                "reference_volume_ml": round(self.reference_volume_ml, 3), "volume_change": change,
                "dice": round(self.dice, 4), "missing": self.missing, "appears": self.appears,
                "swapped_with": self.swapped_with, "labelled_as": self.labelled_as}


@dataclass(frozen=True)
class ClusterBehaviour:
    """All foreground classes of one cluster compared with the main mode, and the words for it."""

    classes: tuple[ClassBehaviour, ...]
    n_probes: int
    description: str = ""
    thresholds: BehaviourThresholds = field(default_factory=BehaviourThresholds, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {"description": self.description, "n_probes": self.n_probes,
                "classes": [c.as_dict() for c in self.classes]}


def _check_maps(reference: Sequence[np.ndarray], other: Sequence[np.ndarray],
                voxel_ml: Sequence[float]) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    ref = [np.asarray(r) for r in reference]
    oth = [np.asarray(o) for o in other]
    vox = np.asarray(voxel_ml, dtype=np.float64).reshape(-1)
    if not ref or len(ref) != len(oth) or len(ref) != vox.size:
        raise ValueError(f"need one reference map, one cluster map and one voxel volume per probe case; found "
                         f"{len(ref)}, {len(oth)} and {vox.size}")
    for i, (r, o) in enumerate(zip(ref, oth)):
        if r.shape != o.shape:
            raise ValueError(f"probe {i}: reference map {r.shape} and cluster map {o.shape} differ in shape")
        if r.dtype.kind not in "iub" or o.dtype.kind not in "iub":
            raise ValueError(f"probe {i}: label maps must be integer arrays; found {r.dtype} and {o.dtype}")
    if not np.all(np.isfinite(vox)) or np.any(vox <= 0):
        raise ValueError(f"voxel volumes must be positive numbers (ml); found {vox.tolist()}")
    return ref, oth, vox


def compare_to_reference(reference: Sequence[np.ndarray], other: Sequence[np.ndarray], voxel_ml: Sequence[float],
                         class_names: Sequence[str],
                         thresholds: BehaviourThresholds = BehaviourThresholds()) -> ClusterBehaviour:
    """Compare a cluster's label maps with the main mode's on the same probe cases.

    Everything is pooled over the probes: volumes are summed (in ml, each probe with its own
    voxel volume) and reported as the mean per probe; Dice and the class-to-class confusion are
    computed over all probe voxels together.

    Args:
        reference: label maps of the main mode's UNet, one per probe case.
        other: label maps of the cluster's UNet, same shapes.
        voxel_ml: voxel volume of each probe case in millilitres.
        class_names: name of class ``i`` at index ``i`` (index 0, background, is not described).
        thresholds: when a difference is worth a phrase.

    Returns:
        A :class:`ClusterBehaviour` whose ``description`` is :func:`describe_behaviour`'s sentence.

    Example:
        >>> ref = np.zeros((10, 10, 10), np.uint8); ref[2:6, 2:6, 2:6] = 1
        >>> big = np.zeros_like(ref); big[2:7, 2:6, 2:6] = 1
        >>> compare_to_reference([ref], [big], [0.008], ["background", "liver"]).description
        'liver about 25% larger than the main mode'
    """
    ref, oth, vox = _check_maps(reference, other, voxel_ml)
    n_classes = len(class_names)
    # confusion[a, b]: voxel volume (ml) that the main mode calls a and the cluster calls b.
    confusion = np.zeros((n_classes, n_classes))
    voxels = np.zeros((n_classes, n_classes), dtype=np.int64)
    total_voxels = 0
    for r, o, v in zip(ref, oth, vox):
        r64, o64 = r.astype(np.int64).ravel(), o.astype(np.int64).ravel()
        if r64.size and (r64.min() < 0 or o64.min() < 0 or max(r64.max(), o64.max()) >= n_classes):
            raise ValueError(f"label maps hold values outside 0..{n_classes - 1} ({', '.join(class_names)})")
        counts = np.bincount(r64 * n_classes + o64, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
        voxels += counts
        confusion += counts * v
        total_voxels += r64.size
    n_probes = len(ref)
    ref_voxels, oth_voxels = voxels.sum(axis=1), voxels.sum(axis=0)
    ref_ml, oth_ml = confusion.sum(axis=1), confusion.sum(axis=0)
    min_voxels = max(20, int(np.ceil(thresholds.min_voxel_fraction * total_voxels)))

    swapped: dict[int, int] = {}
    labelled: dict[int, int] = {}
    for a in range(1, n_classes):
        if ref_voxels[a] == 0:
            continue
        share = voxels[a] / ref_voxels[a]
        share[a] = 0.0
        b = int(np.argmax(share))
        if b == 0 or share[b] < thresholds.swap:
            continue
        back = voxels[b, a] / ref_voxels[b] if ref_voxels[b] else 0.0
        if back >= thresholds.swap:
            swapped[a] = b
        else:
            labelled[a] = b

    classes = []
    dice_of = dice_from_confusion(voxels)
    for k in range(1, n_classes):
        dice = dice_of[k]
        change = (oth_ml[k] - ref_ml[k]) / ref_ml[k] if ref_ml[k] > 0 else float("nan")
        missing = ref_voxels[k] >= min_voxels and oth_voxels[k] < thresholds.vanish * ref_voxels[k]
        appears = oth_voxels[k] >= min_voxels and ref_voxels[k] < thresholds.vanish * oth_voxels[k]
        classes.append(ClassBehaviour(
            name=str(class_names[k]), volume_ml=float(oth_ml[k] / n_probes),
            reference_volume_ml=float(ref_ml[k] / n_probes), volume_change=float(change), dice=float(dice),
            missing=bool(missing and k not in labelled and k not in swapped),
            appears=bool(appears), swapped_with=str(class_names[swapped[k]]) if k in swapped else None,
            labelled_as=str(class_names[labelled[k]]) if k in labelled else None))
    behaviour = ClusterBehaviour(tuple(classes), n_probes, "", thresholds)
    return ClusterBehaviour(behaviour.classes, n_probes, describe_behaviour(behaviour), thresholds)


def _readable(name: str) -> str:
    return name.replace("_", " ")


def describe_behaviour(behaviour: ClusterBehaviour) -> str:
    """One sentence naming each class that differs from the main mode, most striking first.

    Structural differences come first, in class order: ``"A and B swapped"``, ``"A labelled as
    B"``, ``"A missing"``, ``"A appears (12.3 ml per case) where the main mode has none"``. Then
    volume changes, largest first: ``"A about 12% larger than the main mode; B about 7% smaller"``.
    Then classes of similar volume that overlap poorly: ``"A drawn differently (Dice 0.71 with
    the main mode)"``. Without any: ``"segments like the main mode"`` with the tolerances used.
    """
    t = behaviour.thresholds
    structural: list[str] = []
    volumes: list[tuple[float, str]] = []
    shapes: list[str] = []
    said_swaps: set[frozenset[str]] = set()
    for c in behaviour.classes:
        name = _readable(c.name)
        if c.swapped_with is not None:
            pair = frozenset((c.name, c.swapped_with))
            if pair not in said_swaps:
                said_swaps.add(pair)
                structural.append(f"{name} and {_readable(c.swapped_with)} swapped")
        elif c.labelled_as is not None:
            structural.append(f"{name} labelled as {_readable(c.labelled_as)}")
        elif c.missing:
            structural.append(f"{name} missing")
        elif c.appears:
            structural.append(f"{name} appears ({c.volume_ml:.1f} ml per case) where the main mode has none")
        elif np.isfinite(c.volume_change) and abs(c.volume_change) >= t.volume:
            word = "larger" if c.volume_change > 0 else "smaller"
            volumes.append((abs(c.volume_change), f"{name} about {abs(c.volume_change) * 100:.0f}% {word}"))
        elif c.dice < t.dice:
            shapes.append(f"{name} drawn differently (Dice {c.dice:.2f} with the main mode)")
    ordered = [text for _, text in sorted(volumes, key=lambda item: -item[0])]
    if ordered:
        ordered[0] += " than the main mode"
    phrases = structural + ordered + shapes
    if not phrases:
        return (f"segments like the main mode (every class within {t.volume * 100:.0f}% volume, "
                f"Dice >= {t.dice:.2f})")
    return "; ".join(phrases)
