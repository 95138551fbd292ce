"""A semi-real development cohort: augmented views of real CT scans with known annotation biases.

:func:`build_semireal_cohort` turns a few real scans with organ label maps (by default the
TotalSegmentator examples ``A_example_ct_3mm`` and ``B_example_ct_dicom`` of the shared data
folder) into an nnU-Net raw dataset whose training labels carry known problems, so the audit's
defaults can be checked on real anatomy and not only on the :mod:`phantoms <HyperSORTLib.demo.phantom>`:

1. every source is read once, its organs are remapped to the kept classes (1..K, the rest
   background) and it is resampled to the cohort spacing (MONAI ``Spacingd``; bilinear for
   the image, nearest for the label);
2. each view is a random small rotation, scaling and translation of it (``RandAffined``), cropped
   around the kept organs to a fixed size (``CropForegroundd`` + ``ResizeWithPadOrCropd``, air
   outside the scan), with Gaussian noise and an intensity shift (``RandGaussianNoised``,
   ``RandShiftIntensityd``); each view has its own random stream spawned from the seed;
3. the clean views are perturbed by the built-in plan ``semireal-liver`` (:func:`semireal_plan`,
   sized by the :class:`SemirealSpec`) with :func:`~HyperSORTLib.perturbation.runner.perturb_dataset`,
   exactly as ``hypersort perturb`` does, so ``manifest.csv`` records each case's group and
   whether it is erroneous.

The layout is that of :func:`~HyperSORTLib.demo.cohort.generate_cohort` (``imagesTr``,
``labelsTr``, ``labelsClean``, ``dataset.json``, ``manifest.csv``); the same sources, spec and
seed give byte-identical files.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from HyperSORTLib.data.cases import read_nnunet_folder
from HyperSORTLib.data.labels import label_dtype
from HyperSORTLib.data.manifest import MANIFEST_FILE, read_manifest_rows
from HyperSORTLib.demo.cohort import (Cohort, _case_id, _finite, _remove_stale_cases, _save_nifti, check_counts,
                                      check_plan_parameters, sized_plan)
from HyperSORTLib.perturbation.plan import PerturbationPlan
from HyperSORTLib.perturbation.runner import perturb_dataset
from HyperSORTLib.utils.io import atomic_path, atomic_write_json
from HyperSORTLib.utils.nifti import check_affine, open_nifti

__all__ = ["DEFAULT_SOURCES", "SEMIREAL_CONFIG_FILE", "SEMIREAL_GROUPS", "SemirealSpec", "build_semireal_cohort",
           "default_sources", "semireal_plan"]

#: The run configuration the semi-real cohort is trained with (its grid, the demo's networks).
SEMIREAL_CONFIG_FILE = Path(__file__).with_name("semireal.yaml")

#: Example folders (under ``ct-examples/totalsegmentator`` of the shared data) used by default.
DEFAULT_SOURCES: tuple[str, ...] = ("A_example_ct_3mm", "B_example_ct_dicom")

#: Group names of the ``semireal-liver`` plan, clean first.
SEMIREAL_GROUPS: tuple[str, ...] = ("clean", "liver_dilated", "liver_missing", "erroneous")

#: Key of the cohort's provenance in ``dataset.json``; it also marks a folder this module wrote.
PROVENANCE_KEY = "hypersort_semireal"

_HU_MIN, _HU_MAX = -1024, 3071


def default_sources(shared_data: str | Path) -> list[tuple[Path, Path]]:
    """The ``(ct, label)`` pairs of :data:`DEFAULT_SOURCES` under a shared data folder.

    Args:
        shared_data: the folder holding ``ct-examples/totalsegmentator``.

    Raises:
        FileNotFoundError: a CT or label file is missing (the message names it).
    """
    base = Path(shared_data) / "ct-examples" / "totalsegmentator"
    pairs = [(base / name / "ct.nii.gz", base / name / "label_total_fast_pred.nii.gz") for name in DEFAULT_SOURCES]
    for pair in pairs:
        for path in pair:
            if not path.is_file():
                raise FileNotFoundError(f"semi-real source {path} does not exist; expected the TotalSegmentator "
                                        f"examples under {base}.")
    return pairs


@dataclass(frozen=True)
class SemirealSpec:
    """What the semi-real cohort contains and how its views are drawn.

    Attributes:
        views_per_source: augmented views written of every source scan.
        spacing: voxel size of the cohort in millimetres along i, j, k (RAS).
        crop_size: voxels per view along i, j, k, centred on the kept organs.
        classes: ``(name, source label value)`` of the kept classes; they become ids 1..K in this
            order (default: TotalSegmentator v2 liver 5, spleen 1, right kidney 2, left kidney 3).
        n_liver_dilated: views whose liver is dilated by ``liver_dilation_mm``.
        n_liver_missing: views whose liver is left unannotated.
        n_erroneous: views with an individual gross error.
        liver_dilation_mm: margin of the systematic liver dilation.
        translation_mm: length of the shift of a ``translate_label`` error.
        elastic_displacement_mm: control-point displacement s.d. of an ``elastic_deform`` error.
        elastic_control_spacing_mm: control-point spacing of an ``elastic_deform`` error.
        removed_fraction: share of the labelled extent along k zeroed by a ``remove_slices`` error.
        rotation_deg: largest rotation of a view about i, j, k (small out of plane: a thin
            source such as B has few slices).
        scale: largest relative scaling of a view per axis.
        translation_view_mm: largest translation of a view per axis.
        noise_std_hu: largest s.d. of the Gaussian image noise.
        intensity_shift_hu: largest intensity offset of a view.

    The clean group is the rest: ``n_views - n_liver_dilated - n_liver_missing - n_erroneous``,
    where ``n_views = views_per_source * number of sources``.

    Raises:
        ValueError: on construction, a count is not an integer >= 0, a grid value or millimetre
            is out of range, or ``classes`` is empty, has repeated names or values, or holds a
            value that is not an integer >= 1.
    """

    views_per_source: int = 24
    spacing: tuple[float, float, float] = (4.0, 4.0, 4.0)
    crop_size: tuple[int, int, int] = (80, 64, 48)
    classes: tuple[tuple[str, int], ...] = (("liver", 5), ("spleen", 1), ("kidney_right", 2), ("kidney_left", 3))
    n_liver_dilated: int = 12
    n_liver_missing: int = 6
    n_erroneous: int = 6
    liver_dilation_mm: float = 6.0
    translation_mm: float = 40.0
    elastic_displacement_mm: float = 18.0
    elastic_control_spacing_mm: float = 80.0
    removed_fraction: float = 0.5
    rotation_deg: tuple[float, float, float] = (3.0, 3.0, 10.0)
    scale: float = 0.08
    translation_view_mm: float = 10.0
    noise_std_hu: float = 15.0
    intensity_shift_hu: float = 20.0

    def __post_init__(self) -> None:
        check_counts(self, ("views_per_source", "n_liver_dilated", "n_liver_missing", "n_erroneous"))
        if self.views_per_source < 1:
            raise ValueError(f"SemirealSpec.views_per_source must be >= 1, found {self.views_per_source}.")
        check_plan_parameters(self)
        if len(self.crop_size) != 3 or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 8
                                           for s in self.crop_size):
            raise ValueError(f"SemirealSpec.crop_size must be 3 integers >= 8, found {self.crop_size!r}.")
        classes = tuple((str(n), v) for n, v in self.classes)
        values = [v for _, v in classes]
        if (not classes or len({n for n, _ in classes}) != len(classes) or len(set(values)) != len(values)
                or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in values)):
            raise ValueError("SemirealSpec.classes must be distinct (name, label value >= 1) pairs, found "
                             f"{self.classes!r}.")
        if "liver" not in {n for n, _ in classes}:
            raise ValueError(f"SemirealSpec.classes must keep a 'liver' class (the plan perturbs it), found "
                             f"{[n for n, _ in classes]}.")
        if len(self.rotation_deg) != 3 or not all(_finite(r) and 0 <= r <= 45 for r in self.rotation_deg):
            raise ValueError(f"SemirealSpec.rotation_deg must be 3 numbers in [0, 45], found {self.rotation_deg!r}.")
        for name, high in (("scale", 0.5), ("translation_view_mm", 100.0), ("noise_std_hu", 500.0),
                           ("intensity_shift_hu", 500.0)):
            value = getattr(self, name)
            if not _finite(value) or not 0 <= value <= high:
                raise ValueError(f"SemirealSpec.{name} must be a number in [0, {high:g}], found {value!r}.")
        object.__setattr__(self, "crop_size", tuple(int(s) for s in self.crop_size))
        object.__setattr__(self, "classes", tuple((n, int(v)) for n, v in classes))
        object.__setattr__(self, "rotation_deg", tuple(float(r) for r in self.rotation_deg))

    @property
    def class_names(self) -> list[str]:
        """Label names by id, background first."""
        return ["background", *(name for name, _ in self.classes)]

    def group_sizes(self, n_sources: int) -> dict[str, int]:
        """Cases per group (keys :data:`SEMIREAL_GROUPS`) for ``n_sources`` source scans.

        Raises:
            ValueError: the biased groups need more cases than there are views.
        """
        n_views = self.views_per_source * int(n_sources)
        biased = self.n_liver_dilated + self.n_liver_missing + self.n_erroneous
        if biased > n_views:
            raise ValueError(f"SemirealSpec group sizes {self.n_liver_dilated} + {self.n_liver_missing} + "
                             f"{self.n_erroneous} = {biased} exceed the {n_views} views "
                             f"({self.views_per_source} per source x {n_sources} sources).")
        return {"clean": n_views - biased, "liver_dilated": self.n_liver_dilated,
                "liver_missing": self.n_liver_missing, "erroneous": self.n_erroneous}


def semireal_plan(spec: SemirealSpec, n_sources: int, seed: int = 0) -> PerturbationPlan:
    """The built-in ``semireal-liver`` plan with the group sizes and millimetres of ``spec``.

    Args:
        spec: the cohort spec.
        n_sources: number of source scans (the cohort has ``spec.views_per_source`` of each).
        seed: the plan seed (which cases fall in which group, and every drawn parameter).

    Groups of size 0 are left out.
    """
    return sized_plan("semireal-liver", spec.group_sizes(n_sources), spec, seed)


# --------------------------------------------------------------------------- views


def _load_source(ct: Path, label: Path, spec: SemirealSpec) -> dict:
    """A source as MONAI channel-first tensors, RAS, remapped to the kept classes and resampled."""
    from monai.data import MetaTensor
    from monai.transforms import Orientationd, Spacingd

    ct_image, label_image = open_nifti(ct, "semi-real CT"), open_nifti(label, "semi-real label")
    affine = check_affine(ct_image.affine, f"semi-real CT {ct}")
    if ct_image.shape[:3] != label_image.shape[:3] or not np.allclose(affine, label_image.affine, atol=1e-3):
        raise ValueError(f"semi-real label {label} does not lie on the grid of its CT {ct}: shape "
                         f"{label_image.shape} vs {ct_image.shape}, or a different affine; expected the same grid.")
    values = np.asanyarray(label_image.dataobj)
    if values.dtype.kind == "f" and np.isfinite(values).all() and np.array_equal(values, np.rint(values)):
        values = np.rint(values).astype(np.int64)  # integer label values stored as floats
    if values.ndim != 3 or values.dtype.kind not in "iub":
        raise ValueError(f"semi-real label {label}: expected a 3D map of integer label values, found "
                         f"{values.dtype} of shape {values.shape}.")
    remapped = np.zeros(values.shape, dtype=np.uint8)
    for index, (_, value) in enumerate(spec.classes, start=1):
        remapped[values == value] = index
    if not (remapped == 1 + [n for n, _ in spec.classes].index("liver")).any():
        raise ValueError(f"semi-real label {label} has no liver voxel (value "
                         f"{dict(spec.classes)['liver']}); expected a scan showing the liver.")
    # HU + 1024 so that air is 0: resampling and padding fill with zeros, i.e. air.
    hu = np.asanyarray(ct_image.dataobj).astype(np.float32) - _HU_MIN
    data = {"image": MetaTensor(hu[None], affine=affine), "label": MetaTensor(remapped[None].astype(np.float32),
                                                                             affine=affine)}
    data = Orientationd(keys=("image", "label"), axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(data)
    return Spacingd(keys=("image", "label"), pixdim=spec.spacing, mode=("bilinear", "nearest"))(data)


def _view_transform(spec: SemirealSpec):
    from monai.transforms import (
        Compose,
        CropForegroundd,
        RandAffined,
        RandGaussianNoised,
        RandShiftIntensityd,
        ResizeWithPadOrCropd,
    )

    keys = ("image", "label")
    return Compose([
        RandAffined(keys=keys, prob=1.0, rotate_range=tuple(math.radians(r) for r in spec.rotation_deg),
                    scale_range=(spec.scale,) * 3,
                    translate_range=tuple(spec.translation_view_mm / s for s in spec.spacing),
                    mode=("bilinear", "nearest"), padding_mode="zeros"),
        CropForegroundd(keys=keys, source_key="label", allow_smaller=True),
        ResizeWithPadOrCropd(keys=keys, spatial_size=spec.crop_size),
        RandGaussianNoised(keys=("image",), prob=1.0, mean=0.0, std=spec.noise_std_hu),
        RandShiftIntensityd(keys=("image",), offsets=spec.intensity_shift_hu, prob=1.0),
    ])


def _ras_affine(meta_affine: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """An axis-aligned RAS affine of ``spacing`` at the origin of the view's grid."""
    affine = np.diag([*map(float, spacing), 1.0])
    affine[:3, 3] = np.asarray(meta_affine, dtype=np.float64)[:3, 3]
    return affine


# --------------------------------------------------------------------------- the cohort


def _check_out_dir(root: Path, overwrite: bool) -> None:
    if root.exists() and not root.is_dir():
        raise ValueError(f"semi-real cohort folder {root} is a file; expected a folder.")
    if overwrite or not root.is_dir() or not any(root.iterdir()):
        return
    meta = root / "dataset.json"
    try:
        ours = PROVENANCE_KEY in json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        ours = False
    if not ours:
        raise ValueError(f"semi-real cohort folder {root} is not empty and holds no semi-real cohort ({meta} "
                         f"without '{PROVENANCE_KEY}'); choose an empty folder or pass overwrite=True.")


def build_semireal_cohort(sources: Sequence[tuple[str | Path, str | Path]], out_dir: str | Path,
                          spec: SemirealSpec = SemirealSpec(), seed: int = 0, overwrite: bool = False) -> Cohort:
    """Build the semi-real development cohort and write it as an nnU-Net raw dataset.

    Cases ``case_000..`` are the views of the first source, then those of the next, and so on.

    Args:
        sources: ``(ct, label)`` NIfTI pairs of real scans on one grid each, the label holding the
            values of ``spec.classes`` (e.g. :func:`default_sources`).
        out_dir: destination folder (created). A non-empty folder is refused unless it holds an
            earlier semi-real cohort or ``overwrite`` is true; case files beyond the new cohort's
            are removed, other files are left.
        spec: views, grid, classes and group sizes.
        seed: non-negative int; the same sources, spec and seed give byte-identical files.
        overwrite: write into a non-empty folder that holds something else.

    Returns:
        The written :class:`~HyperSORTLib.demo.cohort.Cohort` (groups and erroneous flags from
        ``manifest.csv``).

    Raises:
        ValueError: bad ``spec``, ``seed`` or ``sources``, a source without liver or with a label
            off its CT's grid, group sizes beyond the number of views, or a refused ``out_dir``.
        FileNotFoundError: a source file is missing.
    """
    import tempfile

    import torch

    if not isinstance(spec, SemirealSpec):
        raise ValueError(f"spec must be a SemirealSpec, found {type(spec).__name__}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, found {seed!r}.")
    sources = [(Path(ct), Path(label)) for ct, label in sources]
    if not sources:
        raise ValueError("sources must hold at least one (ct, label) pair, found none.")
    sizes = spec.group_sizes(len(sources))
    plan = semireal_plan(spec, len(sources), seed)
    root = Path(out_dir)
    _check_out_dir(root, overwrite)

    n_views = spec.views_per_source * len(sources)
    case_ids = [_case_id(i) for i in range(n_views)]
    view_seeds = np.random.SeedSequence(int(seed)).spawn(n_views)
    dtype = label_dtype(len(spec.classes) + 1)
    transform = _view_transform(spec)
    loaded = [_load_source(ct, label, spec) for ct, label in sources]  # every source checked before writing
    for folder in ("imagesTr", "labelsTr", "labelsClean"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    _remove_stale_cases(root, set(case_ids))

    with tempfile.TemporaryDirectory(prefix="hypersort_semireal_clean_") as tmp:
        clean_root = Path(tmp)
        index = 0
        for source in loaded:
            for _ in range(spec.views_per_source):
                case_id = case_ids[index]
                transform.set_random_state(seed=int(view_seeds[index].generate_state(1)[0]))
                with torch.no_grad():
                    view = transform({key: value.clone() for key, value in source.items()})
                affine = _ras_affine(view["image"].affine.numpy(), spec.spacing)
                hu = np.clip(np.rint(view["image"][0].numpy() + _HU_MIN), _HU_MIN, _HU_MAX).astype(np.int16)
                lab = np.rint(view["label"][0].numpy()).astype(dtype)
                _save_nifti(clean_root / "imagesTr" / f"{case_id}_0000.nii.gz", hu, affine)
                _save_nifti(clean_root / "labelsTr" / f"{case_id}.nii.gz", lab, affine)
                index += 1
        labels = {name: i for i, name in enumerate(spec.class_names)}
        atomic_write_json(clean_root / "dataset.json", {"channel_names": {"0": "CT"}, "labels": labels,
                                                        "numTraining": n_views, "file_ending": ".nii.gz"})
        perturb_dataset(read_nnunet_folder(clean_root), root, plan, copy_images=True, overwrite=True)
        for case_id in case_ids:
            name = f"{case_id}.nii.gz"
            with atomic_path(root / "labelsClean" / name) as target:
                target.write_bytes((clean_root / "labelsTr" / name).read_bytes())
    rows = read_manifest_rows(root / MANIFEST_FILE)
    atomic_write_json(root / "dataset.json", {
        "name": "HyperSORTSemiReal",
        "description": (
            f"Augmented views of {len(sources)} real CT scans with known annotation biases for auditing with "
            f"HyperSORT: {sizes['clean']} clean, {sizes['liver_dilated']} with the liver dilated by "
            f"{spec.liver_dilation_mm:g} mm, {sizes['liver_missing']} with the liver unannotated, "
            f"{sizes['erroneous']} with individual gross errors. labelsTr holds the training labels, "
            "labelsClean the clean labels, manifest.csv the group of every case."),
        "channel_names": {"0": "CT"},
        "labels": labels,
        "numTraining": n_views,
        "file_ending": ".nii.gz",
        PROVENANCE_KEY: {"seed": int(seed), "sources": [[str(ct), str(label)] for ct, label in sources],
                         "spec": {k: _jsonable(v) for k, v in dataclasses.asdict(spec).items()}},
    })
    return Cohort(root=root, case_ids=case_ids, groups=[row["group"] for row in rows],
                  erroneous=[row["erroneous"] == "1" for row in rows], class_names=spec.class_names)


def _jsonable(value: object) -> object:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value
