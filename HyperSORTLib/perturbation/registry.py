"""Every label perturbation by name, with the parameters a plan file may give it.

:data:`PERTURBATIONS` maps a name to its function (the name is the function's ``__name__``);
:data:`SPECS` maps the same names to a :class:`PerturbationSpec` that says which parameters the
function takes from a plan, of which kind, with which bounds and defaults, and whether it also
needs the voxel spacing, a random seed or a donor case. Plans (:mod:`HyperSORTLib.perturbation.plan`)
validate against these specs before any file is touched.

Parameter kinds:

* ``class``: a class, by name (``liver``) or by index; names match exactly, then ignoring case
  and the order of words (``right kidney`` = ``kidney_right``);
* ``classes``: a list of classes;
* ``float`` / ``int``: a number within ``[low, high]`` (``low_open`` excludes ``low``);
* ``vector``: three numbers in millimetres, one per voxel axis;
* ``donor``: a case id, or ``random`` (another case of the dataset, drawn per case).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from HyperSORTLib.perturbation.case_ops import empty_label, replace_label
from HyperSORTLib.perturbation.class_ops import annotate_neighbour, erode_class, shift_boundary, shift_class
from HyperSORTLib.perturbation.deformation import gaussian_field_deform
from HyperSORTLib.perturbation.label_ops import (
    dilate_class,
    elastic_deform,
    merge_classes,
    omit_class,
    remove_slices,
    swap_classes,
    translate_label,
)

__all__ = ["PERTURBATIONS", "SPECS", "Param", "PerturbationSpec", "resolve_class", "suggest"]

REQUIRED = object()
PARAM_KINDS = ("class", "classes", "float", "int", "vector", "donor")


def suggest(name: str, valid: Sequence[str]) -> str:
    """`` Did you mean 'x'?`` for the closest valid name, or an empty string."""
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


def _words(name: str) -> tuple[str, ...]:
    return tuple(sorted(w for w in re.split(r"[^0-9a-z]+", name.lower()) if w))


def resolve_class(value: object, class_names: Sequence[str], where: str) -> int:
    """Class index of a class given by name or index.

    Names match exactly, then case-insensitively, then as the same set of words (so ``right
    kidney``, ``right_kidney`` and ``kidney_right`` are one class); an integer is an index.

    Raises:
        ValueError: no class or several classes match; the message names ``where`` and lists
            the valid classes.
    """
    names = list(class_names)
    valid = ", ".join(names)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if 0 <= int(value) < len(names):
            return int(value)
        raise ValueError(f"{where}: class index {int(value)} is outside 0..{len(names) - 1}; classes: {valid}.")
    if not isinstance(value, str):
        raise ValueError(f"{where}: a class must be a name or an index, found {value!r}; classes: {valid}.")
    for match in (lambda n: n == value, lambda n: n.lower() == value.lower(),
                  lambda n: _words(n) == _words(value)):
        hits = [i for i, n in enumerate(names) if match(n)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise ValueError(f"{where}: class {value!r} matches several classes "
                             f"({', '.join(names[i] for i in hits)}); use the exact name.")
    raise ValueError(f"{where}: class {value!r} is not a class of this dataset.{suggest(value, names)} "
                     f"Classes: {valid}.")


@dataclass(frozen=True)
class Param:
    """One plan parameter of a perturbation.

    Attributes:
        name: the keyword argument of the function (and the key in a plan).
        kind: one of ``class``, ``classes``, ``float``, ``int``, ``vector``, ``donor``.
        default: value used when a plan omits it (``REQUIRED``: the plan must give it).
        low, high: inclusive bounds for numbers (``None``: unbounded).
        low_open: ``low`` itself is excluded (a strictly positive quantity).
        doc: one line for ``hypersort perturb --list``.
    """

    name: str
    kind: str
    default: object = REQUIRED
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def domain(self) -> str:
        """The accepted numbers in words, e.g. ``> 0`` or ``in [0, 1]``."""
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{_fmt(self.low)}, {_fmt(self.high)}]"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_fmt(self.low)}"
        if self.high is not None:
            return f"<= {_fmt(self.high)}"
        return "any finite number"

    def check_number(self, value: object, where: str) -> float:
        """A number of this parameter's kind and domain, or a ValueError naming ``where``."""
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"{where}: expected a number {self.domain()}, found {value!r}.")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"{where}: expected a finite number, found {value!r}.")
        if self.kind == "int" and number != int(number):
            raise ValueError(f"{where}: expected an integer {self.domain()}, found {value!r}.")
        too_low = self.low is not None and (number <= self.low if self.low_open else number < self.low)
        too_high = self.high is not None and number > self.high
        if too_low or too_high:
            raise ValueError(f"{where}: expected a number {self.domain()}, found {value!r}.")
        return number


def _fmt(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class PerturbationSpec:
    """What a perturbation needs besides the label map.

    Attributes:
        name: registry name (the function's ``__name__``).
        function: the perturbation.
        params: the parameters a plan gives, in the order they are drawn.
        spacing: the function takes the voxel ``spacing`` (from the label file's header).
        seed: the function takes a ``seed``, drawn per case and recorded in the manifest.
        summary: one line for ``hypersort perturb --list``.
        one_of: groups of parameters of which a plan gives exactly one.
        derive: turns the drawn plan parameters into the function's keyword arguments when they
            differ (``(params, rng) -> kwargs``); by default the parameters are the arguments.
    """

    name: str
    function: Callable[..., np.ndarray]
    params: tuple[Param, ...] = ()
    spacing: bool = False
    seed: bool = False
    summary: str = ""
    one_of: tuple[tuple[str, ...], ...] = ()
    derive: Callable[[dict, np.random.Generator], dict] | None = None

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def apply(self, label: np.ndarray, spacing: Sequence[float], kwargs: Mapping[str, object]) -> np.ndarray:
        """Call the function on ``label`` with resolved keyword arguments (plus spacing)."""
        call = dict(kwargs)
        if self.spacing:
            call["spacing"] = tuple(spacing)
        return self.function(label, **call)


_CLASS = "the class, by name or index"


def _translate_kwargs(params: dict, rng: np.random.Generator) -> dict:
    """``distance_mm`` becomes a shift of that length in a uniformly random direction, drawn
    from the case's stream and recorded (rounded to 0.001 mm) as ``shift_mm``."""
    if params.get("shift_mm") is None:
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        params["shift_mm"] = [round(float(v), 3) for v in direction * float(params["distance_mm"])]
    return {"shift_mm": list(params["shift_mm"])}


def _specs() -> dict[str, PerturbationSpec]:
    mm = dict(kind="float")
    specs = [
        PerturbationSpec("dilate_class", dilate_class, (
            Param("class_id", "class", doc=_CLASS),
            Param("mm", doc="margin in mm (negative shrinks)", **mm),
            Param("overwrite", "classes", default=(0,), doc="classes the grown voxels may replace"),
        ), spacing=True, summary="grow one class by a margin in mm (into background by default)"),
        PerturbationSpec("erode_class", erode_class, (
            Param("class_id", "class", doc=_CLASS),
            Param("mm", low=0.0, doc="margin in mm", **mm),
        ), spacing=True, summary="shrink one class by a margin in mm (its rim becomes background)"),
        PerturbationSpec("shift_class", shift_class, (
            Param("class_id", "class", doc=_CLASS),
            Param("shift_mm", "vector", doc="shift along i, j, k in mm"),
            Param("overwrite", "classes", default=(0,), doc="classes the moved structure may cover"),
        ), spacing=True, summary="move one structure rigidly; its old place becomes background"),
        PerturbationSpec("shift_boundary", shift_boundary, (
            Param("class_id", "class", doc="the structure whose border moves outwards for mm > 0"),
            Param("neighbour_id", "class", doc="the structure across the border"),
            Param("mm", doc="signed distance in mm", **mm),
        ), spacing=True, summary="move the border between two touching structures"),
        PerturbationSpec("annotate_neighbour", annotate_neighbour, (
            Param("class_id", "class", doc="the organ"),
            Param("neighbour_id", "class", doc="the adjacent structure drawn into it"),
            Param("contact_mm", default=0.0, low=0.0, doc="gap still counted as contact, mm", **mm),
        ), spacing=True, summary="draw the touching pieces of a neighbouring structure as part of the organ"),
        PerturbationSpec("omit_class", omit_class, (
            Param("class_id", "class", doc=_CLASS),
        ), summary="leave one class unannotated (background)"),
        PerturbationSpec("swap_classes", swap_classes, (
            Param("a", "class", doc="first class"),
            Param("b", "class", doc="second class"),
        ), summary="exchange two classes (e.g. left and right kidney)"),
        PerturbationSpec("merge_classes", merge_classes, (
            Param("source", "class", doc="class relabelled"),
            Param("target", "class", doc="class it becomes"),
        ), summary="annotate one class as another"),
        PerturbationSpec("replace_label", replace_label, (
            Param("donor", "donor", default="random", doc="case id, or random (another case)"),
        ), summary="the label of another case (resized by nearest neighbour if its grid differs)"),
        PerturbationSpec("translate_label", translate_label, (
            Param("shift_mm", "vector", default=None, doc="shift along i, j, k in mm"),
            Param("distance_mm", default=None, low=0.0, doc="shift length in mm, random direction", **mm),
        ), spacing=True, one_of=(("shift_mm", "distance_mm"),), derive=_translate_kwargs,
            summary="shift the whole label (misregistration); give shift_mm or distance_mm"),
        PerturbationSpec("remove_slices", remove_slices, (
            Param("axis", "int", low=0, high=2, doc="axis across which slices go missing"),
            Param("fraction", low=0.0, high=1.0, doc="share of the labelled extent removed", **mm),
        ), seed=True, summary="blank a block of slices of the labelled extent"),
        PerturbationSpec("empty_label", empty_label, (), summary="nothing annotated"),
        PerturbationSpec("elastic_deform", elastic_deform, (
            Param("displacement_mm", low=0.0, doc="s.d. of the control-point displacements, mm", **mm),
            Param("control_spacing_mm", low=0.0, low_open=True, doc="control-point spacing, mm", **mm),
        ), spacing=True, seed=True, summary="random cubic B-spline deformation (ElasticDeform-style)"),
        PerturbationSpec("gaussian_field_deform", gaussian_field_deform, (
            Param("std_mm", low=0.0, doc="displacement s.d. per axis, mm", **mm),
            Param("correlation_mm", low=0.0, low_open=True, doc="correlation length, mm", **mm),
        ), spacing=True, seed=True, summary="Gaussian random field deformation (marginal-thresholding noise)"),
    ]
    return {spec.name: spec for spec in specs}


#: Perturbation specifications by name.
SPECS: dict[str, PerturbationSpec] = _specs()

#: Label perturbations by name, for plan files and manifests.
PERTURBATIONS: dict[str, Callable[..., np.ndarray]] = {name: spec.function for name, spec in SPECS.items()}
