"""Perturbation plans: which cases get which label perturbations, with which parameters.

A plan is a YAML (or JSON) file::

    seed: 0
    clean_group: clean            # name of the cases left untouched (default "clean")
    groups:
      - name: liver_dilated
        fraction: 0.2             # or count: 8, or cases: [case_001, case_007]
        erroneous: false          # systematic style (false) or individual error (true)
        perturbations:
          - dilate_class: {class_id: liver, mm: [3, 7]}
      - name: erroneous
        count: 4
        erroneous: true
        apply: one                # each case gets one of the perturbations, in turn
        perturbations:
          - replace_label: {donor: random}
          - translate_label: {distance_mm: [30, 50]}
          - empty_label

Parameter values are fixed (``mm: 5``), drawn uniformly per case from a range (``mm: [3, 7]``,
or ``{uniform: [3, 7]}``; integers inclusive) or chosen per case from a list (``class_id:
[liver, spleen]`` for classes and donors, ``{choice: [2, 4, 8]}`` for any kind). Vectors take one
such value per axis (``shift_mm: [0, 0, [10, 20]]``) or ``{choice: [[...], [...]]}``.

Groups with explicit ``cases`` are filled first; ``fraction`` and ``count`` groups then take
cases in a fixed pseudo-random order of the case ids (a hash of the plan seed and the id), so
adding cases to a dataset moves few cases between groups; the remaining cases form the clean
group. Every case draws its parameters from its own random stream, seeded by the plan seed and
its case id (:func:`case_rng`), so the draws of a case do not depend on the other cases.

:func:`load_plan` reads a file or a built-in plan (``amos-style``); validation is strict: an
unknown key, perturbation or parameter names the closest valid one, and bad values say what
was expected.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from HyperSORTLib.perturbation.registry import SPECS, resolve_class, suggest
from HyperSORTLib.perturbation.values import (
    DrawnStep,
    PlanError,
    Step,
    ValueSpec,
    draw_step,
    is_number,
    location,
    parse_value,
)

__all__ = ["BUILTIN_PLANS", "CaseAssignment", "DrawnStep", "Group", "PerturbationPlan", "PlanError", "Step",
           "ValueSpec", "builtin_plan_path", "case_rng", "load_plan"]

#: Plans shipped with the package, usable by name (``--plan amos-style``).
BUILTIN_PLANS: tuple[str, ...] = ("amos-style", "demo-cohort", "semireal-liver")

_PLAN_KEYS = ("seed", "description", "clean_group", "groups")
_GROUP_KEYS = ("name", "description", "fraction", "count", "cases", "erroneous", "apply", "perturbations")
_APPLY = ("all", "one")


# --------------------------------------------------------------------------- plan structure


@dataclass(frozen=True)
class Group:
    """A group of cases sharing a kind of perturbation (an annotation style or error type)."""

    name: str
    steps: tuple[Step, ...]
    erroneous: bool = False
    fraction: float | None = None
    count: int | None = None
    cases: tuple[str, ...] | None = None
    apply: str = "all"
    description: str = ""

    def to_plan(self) -> dict:
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        for key in ("fraction", "count"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.cases is not None:
            out["cases"] = list(self.cases)
        out["erroneous"] = self.erroneous
        if self.apply != "all":
            out["apply"] = self.apply
        out["perturbations"] = [s.to_plan() for s in self.steps]
        return out


@dataclass(frozen=True)
class CaseAssignment:
    """A case's group and the perturbations it receives, in order."""

    case_id: str
    group: str
    erroneous: bool
    steps: tuple[Step, ...]


def _check_keys(data: Mapping, allowed: Sequence[str], where: str) -> None:
    for key in data:
        if key not in allowed:
            raise PlanError(f"{where}: unknown key {key!r}.{suggest(str(key), allowed)} "
                            f"Valid keys: {', '.join(allowed)}.")


def _parse_step(raw: Any, where: str) -> Step:
    if isinstance(raw, str):
        name, given = raw, {}
    elif isinstance(raw, Mapping) and len(raw) == 1:
        name, given = next(iter(raw.items()))
        given = {} if given is None else given
    else:
        raise PlanError(f"{where}: a perturbation is written as 'name' or {{name: {{parameter: value, ...}}}}, "
                        f"found {raw!r}.")
    if name not in SPECS:
        raise PlanError(f"{where}: unknown perturbation {name!r}.{suggest(str(name), list(SPECS))} "
                        f"Known: {', '.join(SPECS)}.")
    spec = SPECS[name]
    where = f"{where} ({name})"
    if not isinstance(given, Mapping):
        raise PlanError(f"{where}: parameters must be a mapping of names to values, found {given!r}.")
    for key in given:
        if key not in spec.param_names:
            valid = ", ".join(spec.param_names) or "none"
            raise PlanError(f"{where}: unknown parameter {key!r}.{suggest(str(key), spec.param_names)} "
                            f"Parameters of {name}: {valid}.")
    for p in spec.params:
        if p.required and p.name not in given:
            raise PlanError(f"{where}: parameter {p.name!r} is required ({p.doc}).")
    for group in spec.one_of:
        present = [k for k in group if given.get(k) is not None]
        if len(present) != 1:
            raise PlanError(f"{where}: give exactly one of {', '.join(group)}, found {present or 'none'}.")
    values = tuple((p.name, parse_value(p, given[p.name], f"{where}, parameter {p.name!r}"))
                   for p in spec.params if p.name in given and given[p.name] is not None)
    return Step(name, values)


def _parse_group(raw: Any, index: int, source: str) -> Group:
    where = location(source, f"group {index + 1}")
    if not isinstance(raw, Mapping):
        raise PlanError(f"{where}: expected a mapping with name, perturbations and fraction/count/cases, "
                        f"found {raw!r}.")
    _check_keys(raw, _GROUP_KEYS, where)
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip() or "," in name:
        raise PlanError(f"{where}: 'name' must be a non-empty text without commas, found {name!r}.")
    where = location(source, f"group '{name}'")
    chosen = [k for k in ("fraction", "count", "cases") if raw.get(k) is not None]
    if len(chosen) != 1:
        raise PlanError(f"{where}: give exactly one of fraction, count or cases, found {chosen or 'none'}.")
    fraction = count = cases = None
    if "fraction" in chosen:
        fraction = raw["fraction"]
        if not is_number(fraction) or not 0 <= fraction <= 1:
            raise PlanError(f"{where}: 'fraction' must be a number in [0, 1], found {fraction!r}.")
        fraction = float(fraction)
    elif "count" in chosen:
        count = raw["count"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise PlanError(f"{where}: 'count' must be an integer >= 0, found {count!r}.")
    else:
        cases = raw["cases"]
        if not isinstance(cases, list) or not cases or not all(isinstance(c, (str, int)) for c in cases):
            raise PlanError(f"{where}: 'cases' must be a non-empty list of case ids, found {cases!r}.")
        cases = tuple(str(c) for c in cases)
        if len(set(cases)) != len(cases):
            raise PlanError(f"{where}: 'cases' lists a case twice.")
    erroneous = raw.get("erroneous", False)
    if not isinstance(erroneous, bool):
        raise PlanError(f"{where}: 'erroneous' must be true or false, found {erroneous!r}.")
    apply = raw.get("apply", "all")
    if apply not in _APPLY:
        raise PlanError(f"{where}: 'apply' must be 'all' (every perturbation in order) or 'one' (one per case, "
                        f"in turn), found {apply!r}.")
    steps_raw = raw.get("perturbations")
    if not isinstance(steps_raw, list) or not steps_raw:
        raise PlanError(f"{where}: 'perturbations' must be a non-empty list.")
    steps = tuple(_parse_step(s, f"{where}, perturbation {n + 1}") for n, s in enumerate(steps_raw))
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise PlanError(f"{where}: 'description' must be text, found {description!r}.")
    return Group(name.strip(), steps, erroneous, fraction, count, cases, apply, description)


def _order_key(seed: int, case_id: str) -> bytes:
    return hashlib.sha256(f"hypersort-perturb-order\0{seed}\0{case_id}".encode()).digest()


def case_rng(seed: int, case_id: str) -> np.random.Generator:
    """The random stream of one case: ``SeedSequence`` seeded by the plan seed and a hash of the
    case id, so a case draws the same values whatever other cases the dataset holds."""
    words = np.frombuffer(hashlib.sha256(case_id.encode("utf-8")).digest(), dtype="<u4")
    return np.random.default_rng(np.random.SeedSequence([int(seed), *(int(w) for w in words)]))


def _largest_remainder(quotas: Sequence[float]) -> list[int]:
    floors = [math.floor(q + 1e-9) for q in quotas]
    extra = int(round(sum(quotas))) - sum(floors)
    order = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - floors[i]), i))
    for i in order[:max(0, extra)]:
        floors[i] += 1
    return floors


@dataclass(frozen=True)
class PerturbationPlan:
    """A validated plan (see the module docstring for the file format).

    Attributes:
        seed: plan seed (non-negative int).
        groups: the perturbed groups, in file order.
        clean_group: group name of the untouched cases.
        description: free text.
        source: where the plan came from, for error messages.
    """

    seed: int
    groups: tuple[Group, ...]
    clean_group: str = "clean"
    description: str = ""
    source: str = field(default="<plan>", compare=False)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<plan>") -> PerturbationPlan:
        """Validate a plan read from YAML/JSON.

        Raises:
            PlanError: unknown keys, perturbations or parameters (with the closest valid name),
                values of the wrong kind or out of range, fractions summing over 1, duplicate
                group names or cases.
        """
        where = location(source)
        if not isinstance(data, Mapping):
            raise PlanError(f"{where}: expected a mapping with 'seed' and 'groups', found {type(data).__name__}.")
        _check_keys(data, _PLAN_KEYS, where)
        seed = data.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise PlanError(f"{where}: 'seed' must be an integer >= 0, found {seed!r}.")
        clean = data.get("clean_group", "clean")
        if not isinstance(clean, str) or not clean.strip() or "," in clean:
            raise PlanError(f"{where}: 'clean_group' must be a non-empty text without commas, found {clean!r}.")
        groups_raw = data.get("groups")
        if not isinstance(groups_raw, list):
            raise PlanError(f"{where}: 'groups' must be a list of groups, found {groups_raw!r}.")
        groups = tuple(_parse_group(g, n, source) for n, g in enumerate(groups_raw))
        names = [g.name for g in groups] + [clean.strip()]
        duplicate = sorted({n for n in names if names.count(n) > 1})
        if duplicate:
            raise PlanError(f"{where}: group names must be unique (the clean group included), found "
                            f"{', '.join(repr(d) for d in duplicate)} twice.")
        total = sum(g.fraction for g in groups if g.fraction is not None)
        if total > 1 + 1e-9:
            raise PlanError(f"{where}: the group fractions sum to {total:g}, more than 1.")
        listed: dict[str, str] = {}
        for g in groups:
            for case in g.cases or ():
                if case in listed:
                    raise PlanError(f"{where}: case {case!r} is listed in groups '{listed[case]}' and '{g.name}'.")
                listed[case] = g.name
        description = data.get("description", "")
        if not isinstance(description, str):
            raise PlanError(f"{where}: 'description' must be text, found {description!r}.")
        return cls(seed, groups, clean.strip(), description, source)

    def to_dict(self) -> dict:
        """The plan as a mapping that :meth:`from_dict` reads back to an equal plan."""
        out: dict[str, Any] = {"seed": self.seed}
        if self.description:
            out["description"] = self.description
        out["clean_group"] = self.clean_group
        out["groups"] = [g.to_plan() for g in self.groups]
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=100)

    # ----------------------------------------------------------------------- binding to a dataset

    def check_classes(self, class_names: Sequence[str]) -> None:
        """Check that every class the plan names exists in the dataset.

        Raises:
            PlanError: a class name matches no class (or several); the message names the group,
                perturbation and parameter, and lists the dataset's classes.
        """
        for g in self.groups:
            for n, step in enumerate(g.steps):
                spec = SPECS[step.name]
                for name, value in step.values:
                    kind = spec.param(name).kind
                    if kind not in ("class", "classes"):
                        continue
                    where = location(self.source, f"group '{g.name}'", f"perturbation {n + 1} ({step.name})",
                                   f"parameter {name!r}")
                    refs = value.values[0] if kind == "classes" else value.class_refs()
                    for ref in refs:
                        try:
                            resolve_class(ref, class_names, where)
                        except ValueError as exc:
                            raise PlanError(str(exc)) from None

    def assign(self, case_ids: Sequence[str]) -> list[CaseAssignment]:
        """Each case's group and perturbations, in the order of ``case_ids``.

        Raises:
            PlanError: a listed case id (or a fixed donor) is not in the dataset, or the groups
                need more cases than the dataset holds.
        """
        ids = list(case_ids)
        known = set(ids)
        where = location(self.source)
        if len(known) != len(ids):
            raise PlanError(f"{where}: the dataset lists a case id twice.")
        for g in self.groups:
            missing = [c for c in g.cases or () if c not in known]
            if missing:
                raise PlanError(f"{where}, group '{g.name}': case id(s) {', '.join(map(repr, missing[:5]))} are not "
                                f"in the dataset ({len(ids)} cases, e.g. {', '.join(ids[:3])}).")
            for step in g.steps:
                for name, value in step.values:
                    if SPECS[step.name].param(name).kind == "donor":
                        bad = [v for v in value.class_refs() if v != "random" and v not in known]
                        if bad:
                            raise PlanError(f"{where}, group '{g.name}', {step.name}: donor case {bad[0]!r} is not "
                                            f"in the dataset.{suggest(str(bad[0]), ids)}")
        group_of: dict[str, Group] = {c: g for g in self.groups for c in g.cases or ()}
        remaining = sorted((c for c in ids if c not in group_of), key=lambda c: _order_key(self.seed, c))
        sized = [g for g in self.groups if g.cases is None]
        fractions = _largest_remainder([g.fraction * len(ids) for g in sized if g.fraction is not None])
        sizes, it = [], iter(fractions)
        for g in sized:
            sizes.append(g.count if g.count is not None else next(it))
        if sum(sizes) > len(remaining):
            detail = ", ".join(f"'{g.name}': {n}" for g, n in zip(sized, sizes))
            raise PlanError(f"{where}: the groups need {sum(sizes)} cases ({detail}) but only {len(remaining)} of the "
                            f"dataset's {len(ids)} cases are not listed by id.")
        position = 0
        for g, n in zip(sized, sizes):
            for case in remaining[position:position + n]:
                group_of[case] = g
            position += n
        # Round-robin over the kinds of an "apply: one" group, cases in their fixed order.
        turn: dict[str, int] = {}
        seen: dict[str, int] = {}
        for case in sorted(group_of, key=lambda c: _order_key(self.seed, c)):
            name = group_of[case].name
            turn[case] = seen.get(name, 0)
            seen[name] = turn[case] + 1
        out = []
        for case in ids:
            g = group_of.get(case)
            if g is None:
                out.append(CaseAssignment(case, self.clean_group, False, ()))
            else:
                steps = g.steps if g.apply == "all" else (g.steps[turn[case] % len(g.steps)],)
                out.append(CaseAssignment(case, g.name, g.erroneous, steps))
        return out

    def draw(self, assignment: CaseAssignment, class_names: Sequence[str], case_ids: Sequence[str]) -> list[DrawnStep]:
        """Draw the parameters of a case's perturbations from its own stream (:func:`case_rng`)."""
        rng = case_rng(self.seed, assignment.case_id)
        return [draw_step(step, rng, class_names, assignment.case_id, case_ids, self.source)
                for step in assignment.steps]


# --------------------------------------------------------------------------- loading


def builtin_plan_path(name: str) -> Path:
    """Path of a built-in plan shipped in ``HyperSORTLib/perturbation/plans``."""
    return Path(str(resources.files("HyperSORTLib.perturbation") / "plans" / f"{name}.yaml"))


def load_plan(plan: str | Path) -> PerturbationPlan:
    """Read a plan from a YAML/JSON file, or a built-in plan by name (see :data:`BUILTIN_PLANS`).

    Raises:
        FileNotFoundError: neither a file nor a built-in plan of that name exists.
        PlanError: the file is not valid YAML or the plan is invalid (see :meth:`PerturbationPlan.from_dict`).
    """
    path = Path(plan)
    if not path.is_file():
        if str(plan) in BUILTIN_PLANS:
            path = builtin_plan_path(str(plan))
        else:
            raise FileNotFoundError(f"Plan {str(plan)!r} is neither a file nor a built-in plan "
                                    f"({', '.join(BUILTIN_PLANS)}).{suggest(str(plan), BUILTIN_PLANS)}")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise PlanError(f"plan {path}: not valid YAML/JSON: {exc}") from None
    return PerturbationPlan.from_dict(data, source=str(path))
