"""The built-in biased demo cohort: synthetic CT cases with known annotation biases.

:func:`generate_cohort` writes an nnU-Net-raw-style dataset of :mod:`phantom <HyperSORTLib.demo.phantom>`
cases whose training labels carry known problems, so an audit can be checked against the truth:

* ``clean``: the training label is the ground truth (the majority);
* ``liver_dilated``: a systematic annotation style, the liver drawn a few millimetres too large;
* ``spleen_missing``: a systematic omission, the spleen left unannotated;
* ``erroneous``: individual gross errors, each of a different kind (the label of another case,
  a large translation, a strong elastic deformation, a block of missing slices), cycling through
  the kinds when there are more than four.

The phantom generator writes the clean cohort; the built-in perturbation plan ``demo-cohort``
(:func:`demo_plan`, sized by the :class:`CohortSpec`) then perturbs it with
:func:`~HyperSORTLib.perturbation.runner.perturb_dataset`, exactly as ``hypersort perturb`` does.

Layout under ``out_dir``::

    dataset.json                      nnU-Net v2 metadata (+ provenance under "hypersort_demo")
    manifest.csv                      group, perturbation and its parameters, Dice / volume change
    imagesTr/case_000_0000.nii.gz     int16 HU image
    labelsTr/case_000.nii.gz          training (perturbed) label, uint8
    labelsClean/case_000.nii.gz       clean ground-truth label, uint8
    perturb_plan.yaml, .hypersort_perturb/   the plan applied, as ``hypersort perturb`` leaves them

Everything is a deterministic function of ``(spec, seed)``; files are written atomically and
byte-identically for the same inputs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import nibabel as nib
import numpy as np
import yaml

from HyperSORTLib.data.cases import read_nnunet_folder
from HyperSORTLib.data.manifest import MANIFEST_FILE, read_manifest_rows
from HyperSORTLib.demo.phantom import CLASS_NAMES, Phantom, make_phantom
from HyperSORTLib.perturbation.plan import PerturbationPlan, builtin_plan_path
from HyperSORTLib.perturbation.runner import perturb_dataset
from HyperSORTLib.utils.io import atomic_path, atomic_save_nifti, atomic_write_json

__all__ = [
    "GROUPS",
    "ERROR_KINDS",
    "Cohort",
    "CohortSpec",
    "demo_plan",
    "generate_cohort",
]

#: Group names, in the order their cases are drawn.
GROUPS: tuple[str, ...] = ("clean", "liver_dilated", "spleen_missing", "erroneous")

#: Kinds of individual gross errors given to the ``erroneous`` cases, in turn.
ERROR_KINDS: tuple[str, ...] = ("translate_label", "elastic_deform", "remove_slices", "replace_label")

_CASE_FILE = re.compile(r"^case_\d+(_0000)?\.nii\.gz$")


def check_counts(spec: Any, names: Sequence[str]) -> None:
    """Each of ``spec``'s fields ``names`` must be an integer >= 0 (a :class:`ValueError` names it)."""
    for name in names:
        value = getattr(spec, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{type(spec).__name__}.{name} must be an integer >= 0, found {value!r}.")


def check_plan_parameters(spec: Any) -> None:
    """A spec's voxel spacing and the error parameters its built-in plan is sized with: 3 positive
    spacings (normalised to floats), positive millimetre values and a removed fraction in (0, 1]."""
    kind = type(spec).__name__
    if len(spec.spacing) != 3 or not all(_finite(s) and s > 0 for s in spec.spacing):
        raise ValueError(f"{kind}.spacing must be 3 positive numbers (mm), found {spec.spacing!r}.")
    for name in ("liver_dilation_mm", "translation_mm", "elastic_displacement_mm", "elastic_control_spacing_mm"):
        value = getattr(spec, name)
        if not _finite(value) or value <= 0:
            raise ValueError(f"{kind}.{name} must be a positive number, found {value!r}.")
    if not _finite(spec.removed_fraction) or not 0 < spec.removed_fraction <= 1:
        raise ValueError(f"{kind}.removed_fraction must lie in (0, 1], found {spec.removed_fraction!r}.")
    object.__setattr__(spec, "spacing", tuple(float(s) for s in spec.spacing))


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
        check_counts(self, ("n_cases", "n_liver_dilated", "n_spleen_missing", "n_erroneous"))
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
        check_plan_parameters(self)
        # Normalise so equal specs compare and serialise equally whatever sequence type was given.
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))

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
    """Write a gzipped NIfTI atomically and reproducibly (qform = sform = ``affine``, mm units)."""
    image = nib.Nifti1Image(array, affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    image.header.set_xyzt_units(xyz="mm")
    atomic_save_nifti(image, path)


def demo_plan(spec: CohortSpec, seed: int = 0) -> PerturbationPlan:
    """The built-in ``demo-cohort`` perturbation plan with the group sizes and millimetres of ``spec``.

    Groups of size 0 are left out; ``seed`` becomes the plan seed (which cases fall in which
    group, and every drawn parameter).
    """
    return sized_plan("demo-cohort", spec.group_sizes(), spec, seed)


def sized_plan(name: str, sizes: dict[str, int], spec: Any, seed: int) -> PerturbationPlan:
    """The built-in plan ``name`` with each group's count taken from ``sizes`` and the bias
    parameters from ``spec`` (``liver_dilation_mm``, ``translation_mm``, ``elastic_displacement_mm``,
    ``elastic_control_spacing_mm``, ``removed_fraction``); groups of size 0 are left out and
    ``seed`` becomes the plan seed."""
    path = builtin_plan_path(name)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    values = {"dilate_class": {"mm": float(spec.liver_dilation_mm)},
              "translate_label": {"distance_mm": float(spec.translation_mm)},
              "elastic_deform": {"displacement_mm": float(spec.elastic_displacement_mm),
                                 "control_spacing_mm": float(spec.elastic_control_spacing_mm)},
              "remove_slices": {"fraction": float(spec.removed_fraction)}}
    groups = []
    for group in data["groups"]:
        if sizes[group["name"]] == 0:
            continue
        group["count"] = sizes[group["name"]]
        for step in group["perturbations"]:
            if isinstance(step, dict):
                step_name, params = next(iter(step.items()))
                params.update(values.get(step_name, {}))
        groups.append(group)
    return PerturbationPlan.from_dict({**data, "seed": int(seed), "groups": groups}, source=str(path))


def _case_id(index: int) -> str:
    return f"case_{index:03d}"


def generate_cohort(out_dir: str | Path, spec: CohortSpec = CohortSpec(), seed: int = 0) -> Cohort:
    """Generate the biased demo cohort and write it as an nnU-Net raw dataset.

    Which cases fall in which group, and every drawn parameter, follow the ``demo-cohort`` plan
    seeded by ``seed`` (:func:`demo_plan`). Each case's anatomy comes from its own
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
    # The anatomy's streams are the second of three spawned from the seed (as in earlier releases).
    case_seeds = np.random.SeedSequence(int(seed)).spawn(3)[1].spawn(spec.n_cases)
    case_ids = [_case_id(i) for i in range(spec.n_cases)]
    phantoms: list[Phantom] = [make_phantom(np.random.default_rng(s), spec.shape, spec.spacing) for s in case_seeds]
    labels = {"background": 0, **{name: i for i, name in enumerate(CLASS_NAMES) if i}}

    for folder in ("imagesTr", "labelsTr", "labelsClean"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    _remove_stale_cases(root, set(case_ids))

    with tempfile.TemporaryDirectory(prefix="hypersort_demo_clean_") as tmp:
        # The clean cohort, then the plan's perturbed copy of it in ``root`` (as `hypersort perturb`).
        clean_root = Path(tmp)
        for case_id, phantom in zip(case_ids, phantoms):
            hu = np.clip(np.rint(phantom.image), -1024, 3071).astype(np.int16)
            _save_nifti(clean_root / "imagesTr" / f"{case_id}_0000.nii.gz", hu, phantom.affine)
            _save_nifti(clean_root / "labelsTr" / f"{case_id}.nii.gz", phantom.label.astype(np.uint8), phantom.affine)
        atomic_write_json(clean_root / "dataset.json", {"channel_names": {"0": "CT"}, "labels": labels,
                                                        "numTraining": spec.n_cases, "file_ending": ".nii.gz"})
        perturb_dataset(read_nnunet_folder(clean_root), root, demo_plan(spec, seed), copy_images=True,
                        overwrite=True)
        for case_id in case_ids:
            name = f"{case_id}.nii.gz"
            with atomic_path(root / "labelsClean" / name) as target:
                target.write_bytes((clean_root / "labelsTr" / name).read_bytes())
    rows = read_manifest_rows(root / MANIFEST_FILE)
    groups = [row["group"] for row in rows]

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
                  erroneous=[row["erroneous"] == "1" for row in rows], class_names=list(CLASS_NAMES))


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
