"""The built-in biased demo cohort: synthetic CT cases with known annotation biases.

:func:`generate_cohort` writes an nnU-Net-raw-style dataset of :mod:`phantom <HyperSORTLib.demo.phantom>`
cases whose training labels carry known problems, so an audit can be checked against the truth:

* ``clean``: the training label is the ground truth (the majority);
* ``liver_dilated``: a systematic annotation style, the liver drawn a few millimetres too large;
* ``spleen_missing``: a systematic omission, the spleen left unannotated;
* ``erroneous``: individual gross errors, each of a different kind (the label of another case,
  a large translation, a strong elastic deformation, a block of missing slices), cycling through
  the kinds when there are more than four.

Layout under ``out_dir``::

    dataset.json                      nnU-Net v2 metadata (+ provenance under "hypersort_demo")
    manifest.csv                      group, perturbation and its parameters, Dice / volume change
    imagesTr/case_000_0000.nii.gz     int16 HU image
    labelsTr/case_000.nii.gz          training (perturbed) label, uint8
    labelsClean/case_000.nii.gz       clean ground-truth label, uint8

Everything is a deterministic function of ``(spec, seed)``; files are written atomically and
byte-identically for the same inputs.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from HyperSORTLib.data.manifest import MANIFEST_FILE, ManifestRow, read_manifest_rows, write_manifest
from HyperSORTLib.demo.phantom import CLASS_NAMES, Phantom, make_phantom
from HyperSORTLib.metrics import dice_per_class, volume_change
from HyperSORTLib.perturbation.label_ops import (
    dilate_class,
    elastic_deform,
    omit_class,
    remove_slices,
    translate_label,
)
from HyperSORTLib.utils.io import atomic_path, atomic_write_json

__all__ = [
    "GROUPS",
    "ERROR_KINDS",
    "Cohort",
    "CohortSpec",
    "generate_cohort",
]

#: Group names, in the order their cases are drawn.
GROUPS: tuple[str, ...] = ("clean", "liver_dilated", "spleen_missing", "erroneous")

#: Kinds of individual gross errors given to the ``erroneous`` cases, in turn.
ERROR_KINDS: tuple[str, ...] = ("label_of_other_case", "translate_label", "elastic_deform", "remove_slices")

_LIVER = CLASS_NAMES.index("liver")
_SPLEEN = CLASS_NAMES.index("spleen")
_FOREGROUND = tuple(range(1, len(CLASS_NAMES)))
_CASE_FILE = re.compile(r"^case_\d+(_0000)?\.nii\.gz$")


@dataclass(frozen=True)
class CohortSpec:
    """What the demo cohort contains.

    Attributes:
        n_cases: total number of cases.
        shape: voxels per case along i, j, k.
        spacing: voxel size in millimetres along i, j, k.
        n_liver_dilated: cases whose liver is dilated by ``liver_dilation_mm``.
        n_spleen_missing: cases whose spleen is left unannotated.
        n_erroneous: cases with an individual gross error.
        liver_dilation_mm: margin of the systematic liver dilation (7 mm is one in-plane voxel
            at the default grid).
        translation_mm: length of the random shift of a ``translate_label`` error.
        elastic_displacement_mm: control-point displacement s.d. of an ``elastic_deform`` error.
        elastic_control_spacing_mm: control-point spacing of an ``elastic_deform`` error.
        removed_fraction: share of the labelled extent along k zeroed by a ``remove_slices`` error.

    The clean group is whatever remains: ``n_cases - n_liver_dilated - n_spleen_missing - n_erroneous``.

    Raises:
        ValueError: on construction, when a count is negative or not an integer, the groups
            need more than ``n_cases`` cases, or a shape/spacing/mm value is out of range.
    """

    n_cases: int = 40
    shape: tuple[int, int, int] = (48, 40, 32)
    spacing: tuple[float, float, float] = (7.0, 7.0, 8.0)
    n_liver_dilated: int = 8
    n_spleen_missing: int = 6
    n_erroneous: int = 4
    liver_dilation_mm: float = 7.0
    translation_mm: float = 40.0
    elastic_displacement_mm: float = 18.0
    elastic_control_spacing_mm: float = 80.0
    removed_fraction: float = 0.5

    def __post_init__(self) -> None:
        for name in ("n_cases", "n_liver_dilated", "n_spleen_missing", "n_erroneous"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"CohortSpec.{name} must be an integer >= 0, found {value!r}.")
        if self.n_cases < 1:
            raise ValueError(f"CohortSpec.n_cases must be >= 1, found {self.n_cases}.")
        n_biased = self.n_liver_dilated + self.n_spleen_missing + self.n_erroneous
        if n_biased > self.n_cases:
            raise ValueError(
                f"CohortSpec group sizes must sum to at most n_cases={self.n_cases}, found "
                f"n_liver_dilated + n_spleen_missing + n_erroneous = {self.n_liver_dilated} + "
                f"{self.n_spleen_missing} + {self.n_erroneous} = {n_biased}.")
        if (len(self.shape) != 3 or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1
                                        for s in self.shape)):
            raise ValueError(f"CohortSpec.shape must be 3 positive integers, found {self.shape!r}.")
        if len(self.spacing) != 3 or not all(_finite(s) and s > 0 for s in self.spacing):
            raise ValueError(f"CohortSpec.spacing must be 3 positive numbers (mm), found {self.spacing!r}.")
        for name in ("liver_dilation_mm", "translation_mm", "elastic_displacement_mm", "elastic_control_spacing_mm"):
            value = getattr(self, name)
            if not _finite(value) or value <= 0:
                raise ValueError(f"CohortSpec.{name} must be a positive number, found {value!r}.")
        if not _finite(self.removed_fraction) or not 0 < self.removed_fraction <= 1:
            raise ValueError(f"CohortSpec.removed_fraction must lie in (0, 1], found {self.removed_fraction!r}.")
        # Normalise so equal specs compare and serialise equally whatever sequence type was given.
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))

    @property
    def n_clean(self) -> int:
        """Number of cases whose training label is the ground truth."""
        return self.n_cases - self.n_liver_dilated - self.n_spleen_missing - self.n_erroneous

    def group_sizes(self) -> dict[str, int]:
        """Cases per group, keyed by the names in :data:`GROUPS`."""
        return {"clean": self.n_clean, "liver_dilated": self.n_liver_dilated,
                "spleen_missing": self.n_spleen_missing, "erroneous": self.n_erroneous}


def _finite(value: object) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
            and math.isfinite(float(value)))


@dataclass
class Cohort:
    """A generated demo cohort on disk.

    Attributes:
        root: the dataset folder.
        case_ids: case ids in manifest order (``case_000``, ...).
        groups: group name of each case (see :data:`GROUPS`).
        erroneous: whether each case carries an individual gross error.
        class_names: label names by id, background first.
    """

    root: Path
    case_ids: list[str]
    groups: list[str]
    erroneous: list[bool]
    class_names: list[str]

    def image_path(self, case_id: str) -> Path:
        """Path of the case's CT image (``imagesTr/<id>_0000.nii.gz``)."""
        return self.root / "imagesTr" / f"{self._known(case_id)}_0000.nii.gz"

    def label_path(self, case_id: str) -> Path:
        """Path of the case's training (possibly perturbed) label (``labelsTr/<id>.nii.gz``)."""
        return self.root / "labelsTr" / f"{self._known(case_id)}.nii.gz"

    def clean_label_path(self, case_id: str) -> Path:
        """Path of the case's clean ground-truth label (``labelsClean/<id>.nii.gz``)."""
        return self.root / "labelsClean" / f"{self._known(case_id)}.nii.gz"

    def group_of(self, case_id: str) -> str:
        """Group name of one case."""
        return self.groups[self.case_ids.index(self._known(case_id))]

    def read_manifest(self) -> list[dict[str, str]]:
        """Rows of ``manifest.csv`` as dictionaries of strings, in case order."""
        return read_manifest_rows(self.root / MANIFEST_FILE)

    def _known(self, case_id: str) -> str:
        if case_id not in self.case_ids:
            raise ValueError(f"case_id must be one of this cohort's {len(self.case_ids)} cases "
                             f"({self.case_ids[0]}..{self.case_ids[-1]}), found {case_id!r}.")
        return case_id

    @classmethod
    def load(cls, root: str | Path) -> Cohort:
        """Read a cohort written by :func:`generate_cohort` back from ``dataset.json`` and ``manifest.csv``.

        Args:
            root: the dataset folder.

        Returns:
            The :class:`Cohort`.

        Raises:
            FileNotFoundError: ``dataset.json`` or ``manifest.csv`` is missing.
            ValueError: the files are malformed or disagree on the number of cases.
        """
        root = Path(root)
        meta_path, manifest_path = root / "dataset.json", root / MANIFEST_FILE
        for path in (meta_path, manifest_path):
            if not path.is_file():
                raise FileNotFoundError(f"{root} is not a HyperSORT demo cohort: {path} is missing.")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            by_id = {int(v): str(k) for k, v in meta["labels"].items()}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{meta_path} must be JSON with a 'labels' mapping of names to ids: {exc}") from exc
        if sorted(by_id) != list(range(len(by_id))):
            raise ValueError(f"{meta_path}: label ids must be 0..K-1, found {sorted(by_id)}.")
        rows = read_manifest_rows(manifest_path)
        if meta.get("numTraining") is not None and int(meta["numTraining"]) != len(rows):
            raise ValueError(f"{meta_path} says numTraining={meta['numTraining']} but {manifest_path} "
                             f"lists {len(rows)} cases.")
        return cls(root=root,
                   case_ids=[r["case_id"] for r in rows],
                   groups=[r["group"] for r in rows],
                   erroneous=[r["erroneous"].strip() == "1" for r in rows],
                   class_names=[by_id[i] for i in range(len(by_id))])


# --------------------------------------------------------------------------- generation


def _save_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    """Write a gzipped NIfTI atomically and reproducibly (no gzip timestamp)."""
    image = nib.Nifti1Image(array, affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    image.header.set_xyzt_units(xyz="mm")
    # The temporary file of atomic_path has no .nii.gz suffix, so nibabel cannot infer the
    # format from it: serialise in memory and compress with a fixed mtime instead.
    payload = gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


def _assign_groups(spec: CohortSpec, rng: np.random.Generator) -> list[str]:
    groups = [name for name, size in spec.group_sizes().items() for _ in range(size)]
    order = rng.permutation(spec.n_cases)
    assigned = [""] * spec.n_cases
    for position, case_index in enumerate(order):
        assigned[int(case_index)] = groups[position]
    return assigned


def _perturb(
    group: str,
    error_kind: str | None,
    index: int,
    clean: list[np.ndarray],
    spec: CohortSpec,
    rng: np.random.Generator,
    donor_rng: np.random.Generator,
) -> tuple[np.ndarray, str, dict]:
    """Training label, perturbation name and its drawn parameters for one case."""
    label = clean[index]
    spacing = spec.spacing
    if group == "clean":
        return label.copy(), "none", {}
    if group == "liver_dilated":
        mm = float(spec.liver_dilation_mm)
        return dilate_class(label, _LIVER, mm, spacing), "dilate_class", {"class_id": _LIVER, "mm": mm}
    if group == "spleen_missing":
        return omit_class(label, _SPLEEN), "omit_class", {"class_id": _SPLEEN}
    if error_kind == "label_of_other_case":
        others = [i for i in range(len(clean)) if i != index]
        if others:
            donor = int(others[int(rng.integers(len(others)))])
            return clean[donor].copy(), error_kind, {"source_case": _case_id(donor)}
        # A one-case cohort has no other case: draw an unrelated phantom as the donor.
        donor_label = make_phantom(donor_rng, spec.shape, spec.spacing).label
        return donor_label, error_kind, {"source_case": "synthetic"}
    if error_kind == "translate_label":
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        shift = [round(float(v), 2) for v in direction * spec.translation_mm]
        return translate_label(label, shift, spacing), error_kind, {"shift_mm": shift}
    if error_kind == "elastic_deform":
        seed = int(rng.integers(2**31))
        params = {"displacement_mm": float(spec.elastic_displacement_mm),
                  "control_spacing_mm": float(spec.elastic_control_spacing_mm), "seed": seed}
        return elastic_deform(label, spacing, **params), error_kind, params
    if error_kind == "remove_slices":
        seed = int(rng.integers(2**31))
        params = {"axis": 2, "fraction": float(spec.removed_fraction), "seed": seed}
        return remove_slices(label, **params), error_kind, params
    raise ValueError(f"Unknown group/error kind {group!r}/{error_kind!r}.")  # unreachable by construction


def _case_id(index: int) -> str:
    return f"case_{index:03d}"


def generate_cohort(out_dir: str | Path, spec: CohortSpec = CohortSpec(), seed: int = 0) -> Cohort:
    """Generate the biased demo cohort and write it as an nnU-Net raw dataset.

    Which cases fall in which group is a seeded shuffle. Each case's anatomy comes from its own
    random stream (spawned from ``seed``), so it depends only on the seed, the case index and
    the grid, not on the group sizes. Case files from an earlier, larger cohort in the same
    folder (names ``case_<n>...nii.gz`` in ``imagesTr``, ``labelsTr``, ``labelsClean``) are
    removed so the folder always describes exactly one cohort; other files are left alone.

    Args:
        out_dir: destination folder (created if needed).
        spec: cohort composition and grid.
        seed: non-negative int; the same ``(spec, seed)`` gives byte-identical files.

    Returns:
        The written :class:`Cohort`.

    Raises:
        ValueError: ``spec`` is not a :class:`CohortSpec` or ``seed`` is not a non-negative int.
    """
    if not isinstance(spec, CohortSpec):
        raise ValueError(f"spec must be a CohortSpec, found {type(spec).__name__}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, found {seed!r}.")
    root = Path(out_dir)
    streams = np.random.SeedSequence(int(seed)).spawn(3)
    assign_rng = np.random.default_rng(streams[0])
    case_seeds = streams[1].spawn(spec.n_cases)
    perturb_seeds = streams[2].spawn(spec.n_cases)

    case_ids = [_case_id(i) for i in range(spec.n_cases)]
    groups = _assign_groups(spec, assign_rng)
    error_order = assign_rng.permutation(len(ERROR_KINDS))
    error_kinds: list[str | None] = [None] * spec.n_cases
    n_error = 0
    for i, group in enumerate(groups):
        if group == "erroneous":
            error_kinds[i] = ERROR_KINDS[int(error_order[n_error % len(ERROR_KINDS)])]
            n_error += 1

    phantoms: list[Phantom] = [make_phantom(np.random.default_rng(s), spec.shape, spec.spacing) for s in case_seeds]
    clean = [p.label for p in phantoms]

    for folder in ("imagesTr", "labelsTr", "labelsClean"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    _remove_stale_cases(root, set(case_ids))

    rows: list[ManifestRow] = []
    for i, case_id in enumerate(case_ids):
        perturb_rng, donor_rng = (np.random.default_rng(s) for s in perturb_seeds[i].spawn(2))
        train_label, perturbation, params = _perturb(groups[i], error_kinds[i], i, clean, spec, perturb_rng, donor_rng)
        train_label = train_label.astype(np.uint8, copy=False)
        dice = dice_per_class(clean[i], train_label, _FOREGROUND)
        change = volume_change(clean[i], train_label, _FOREGROUND, spec.spacing)
        rows.append(ManifestRow(case_id, groups[i], groups[i] == "erroneous", perturbation, params, dice, change))
        phantom = phantoms[i]
        hu = np.clip(np.rint(phantom.image), -1024, 3071).astype(np.int16)
        _save_nifti(root / "imagesTr" / f"{case_id}_0000.nii.gz", hu, phantom.affine)
        _save_nifti(root / "labelsTr" / f"{case_id}.nii.gz", train_label, phantom.affine)
        _save_nifti(root / "labelsClean" / f"{case_id}.nii.gz", clean[i], phantom.affine)

    write_manifest(root / MANIFEST_FILE, rows, CLASS_NAMES)

    sizes = spec.group_sizes()
    atomic_write_json(root / "dataset.json", {
        "name": "HyperSORTDemo",
        "description": (
            "Synthetic CT-like abdominal phantoms with injected annotation biases for auditing with "
            f"HyperSORT: {sizes['clean']} clean, {sizes['liver_dilated']} with the liver dilated by "
            f"{spec.liver_dilation_mm:g} mm, {sizes['spleen_missing']} with the spleen unannotated, "
            f"{sizes['erroneous']} with individual gross errors. labelsTr holds the training labels, "
            "labelsClean the ground truth, manifest.csv the group of every case."),
        "channel_names": {"0": "CT"},
        "labels": {name: i for i, name in enumerate(CLASS_NAMES)},
        "numTraining": spec.n_cases,
        "file_ending": ".nii.gz",
        "hypersort_demo": {"seed": int(seed), "spec": _spec_to_json(spec)},
    })
    return Cohort(root=root, case_ids=case_ids, groups=groups,
                  erroneous=[g == "erroneous" for g in groups], class_names=list(CLASS_NAMES))


def _spec_to_json(spec: CohortSpec) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(spec).items()}


def _remove_stale_cases(root: Path, keep: set[str]) -> None:
    for folder in ("imagesTr", "labelsTr", "labelsClean"):
        for path in (root / folder).iterdir():
            if not _CASE_FILE.match(path.name):
                continue
            case_id = path.name[: -len(".nii.gz")].removesuffix("_0000")
            if case_id not in keep:
                path.unlink()
