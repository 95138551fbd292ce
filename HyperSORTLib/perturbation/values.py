"""Parameter values of perturbation plans: fixed values, ranges and choices, and their draws.

A plan gives each parameter of a perturbation (see :mod:`HyperSORTLib.perturbation.registry`)
as a fixed value, a uniform range or a list of choices; :func:`parse_value` validates it into a
:class:`ValueSpec`, and :func:`draw_step` draws one case's values from that case's stream,
resolving class names to indices and random donors to case ids.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from HyperSORTLib.perturbation.registry import REQUIRED, SPECS, Param, resolve_class

__all__ = ["DrawnStep", "PlanError", "Step", "ValueSpec", "draw_step", "is_number", "location", "parse_value"]


class PlanError(ValueError):
    """A plan is invalid or does not fit the dataset; the message names the plan and the entry."""


@dataclass(frozen=True)
class ValueSpec:
    """How a plan gives one parameter: ``fixed`` value, ``uniform`` range, ``choice`` list, or
    ``vector`` of per-axis specs; ``raw`` is the plan's own spelling (written back verbatim)."""

    kind: str
    values: tuple
    raw: Any = field(compare=False)

    def class_refs(self) -> list:
        """Every class name/index this value may take (for validation)."""
        return list(self.values) if self.kind in ("fixed", "choice") else []

    def draw(self, param: Param, rng: np.random.Generator) -> Any:
        if self.kind == "fixed":
            return self.values[0]
        if self.kind == "choice":
            return self.values[int(rng.integers(len(self.values)))]
        if self.kind == "uniform":
            low, high = self.values
            if param.kind == "int":
                return int(rng.integers(int(low), int(high) + 1))
            return round(float(rng.uniform(low, high)), 3)
        return [component.draw(param, rng) for component in self.values]  # vector


def is_number(value: object) -> bool:
    """A real number that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _plain(value: Any) -> Any:
    """Tuples as lists, for YAML."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _parse_number_spec(param: Param, raw: Any, where: str) -> ValueSpec:
    hint = "a number, a range [low, high], {uniform: [low, high]} or {choice: [a, b, ...]}"
    if is_number(raw):
        return ValueSpec("fixed", (_number(param, raw, where),), raw)
    if isinstance(raw, Mapping):
        return _parse_mapping_spec(param, raw, where, hint)
    if isinstance(raw, list):
        if len(raw) == 2 and all(is_number(v) for v in raw):
            return _uniform(param, raw, raw, where)
        raise PlanError(f"{where}: expected {hint}, found the list {raw!r} (a range has exactly two numbers; "
                        f"write a list of choices as {{choice: [...]}}).")
    raise PlanError(f"{where}: expected {hint}, found {raw!r}.")


def _number(param: Param, value: Any, where: str) -> float | int:
    try:
        number = param.check_number(value, where)
    except ValueError as exc:
        raise PlanError(str(exc)) from None
    return int(number) if param.kind == "int" else number


def _uniform(param: Param, bounds: Any, raw: Any, where: str) -> ValueSpec:
    if not isinstance(bounds, list) or len(bounds) != 2 or not all(is_number(v) for v in bounds):
        raise PlanError(f"{where}: a range must be two numbers [low, high], found {bounds!r}.")
    low, high = (_number(param, v, where) for v in bounds)
    if low > high:
        raise PlanError(f"{where}: a range [low, high] needs low <= high, found [{low}, {high}].")
    return ValueSpec("uniform", (low, high), raw)


def _parse_mapping_spec(param: Param, raw: Mapping, where: str, hint: str) -> ValueSpec:
    if len(raw) != 1 or next(iter(raw)) not in ("uniform", "choice"):
        raise PlanError(f"{where}: expected {hint}, found the mapping {dict(raw)!r}.")
    key, value = next(iter(raw.items()))
    if key == "uniform":
        if param.kind not in ("float", "int"):
            raise PlanError(f"{where}: a {param.kind} parameter has no range; use {{choice: [...]}}.")
        return _uniform(param, value, raw, where)
    if not isinstance(value, list) or not value:
        raise PlanError(f"{where}: {{choice: ...}} needs a non-empty list, found {value!r}.")
    options = tuple(_parse_single(param, v, f"{where}, choice {n + 1}").values[0] if param.kind != "vector"
                    else _parse_vector_fixed(param, v, f"{where}, choice {n + 1}") for n, v in enumerate(value))
    return ValueSpec("choice", options, raw)


def _parse_single(param: Param, raw: Any, where: str) -> ValueSpec:
    """A fixed value of one parameter kind (no randomness)."""
    if param.kind in ("float", "int"):
        if not is_number(raw):
            raise PlanError(f"{where}: expected a number {param.domain()}, found {raw!r}.")
        return ValueSpec("fixed", (_number(param, raw, where),), raw)
    if param.kind in ("class", "donor"):
        if not isinstance(raw, (str, int)) or isinstance(raw, bool):
            what = "a class name or index" if param.kind == "class" else "a case id or 'random'"
            raise PlanError(f"{where}: expected {what}, found {raw!r}.")
        return ValueSpec("fixed", (raw,), raw)
    raise PlanError(f"{where}: a {param.kind} parameter cannot be chosen per case.")


def _parse_vector_fixed(param: Param, raw: Any, where: str) -> tuple[float, ...]:
    if not isinstance(raw, list) or len(raw) != 3 or not all(is_number(v) for v in raw):
        raise PlanError(f"{where}: expected three numbers (mm along i, j, k), found {raw!r}.")
    return tuple(_number(param, v, f"{where}[{n}]") for n, v in enumerate(raw))


def parse_value(param: Param, raw: Any, where: str) -> ValueSpec:
    """Validate a plan's value for ``param``; ``where`` names it in error messages."""
    if param.kind in ("float", "int"):
        return _parse_number_spec(param, raw, where)
    if param.kind in ("class", "donor"):
        if isinstance(raw, Mapping):
            return _parse_mapping_spec(param, raw, where, "a value or {choice: [...]}")
        if isinstance(raw, list):
            if not raw:
                raise PlanError(f"{where}: a list of choices must not be empty.")
            return ValueSpec("choice", tuple(_parse_single(param, v, f"{where}[{n}]").values[0]
                                             for n, v in enumerate(raw)), raw)
        return _parse_single(param, raw, where)
    if param.kind == "classes":
        items = [raw] if isinstance(raw, (str, int)) and not isinstance(raw, bool) else raw
        if not isinstance(items, list) or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in items):
            raise PlanError(f"{where}: expected a list of class names, found {raw!r}.")
        return ValueSpec("fixed", (tuple(items),), raw)
    # vector
    if isinstance(raw, Mapping):
        return _parse_mapping_spec(param, raw, where, "three values or {choice: [[...], ...]}")
    if not isinstance(raw, list) or len(raw) != 3:
        raise PlanError(f"{where}: expected three values (mm along i, j, k), each a number or a range "
                        f"[low, high], found {raw!r}.")
    component = dataclasses.replace(param, kind="float")
    return ValueSpec("vector", tuple(_parse_number_spec(component, v, f"{where}[{n}]") for n, v in enumerate(raw)), raw)


@dataclass(frozen=True)
class Step:
    """One perturbation of a group, with the plan's value for each parameter it gives."""

    name: str
    values: tuple[tuple[str, ValueSpec], ...]

    def to_plan(self) -> Any:
        if not self.values:
            return self.name
        return {self.name: {k: _plain(v.raw) for k, v in self.values}}


@dataclass(frozen=True)
class DrawnStep:
    """A perturbation with the values drawn for one case.

    Attributes:
        name: registry name.
        params: the drawn parameters as recorded in the manifest (classes by name, seed included).
        kwargs: keyword arguments of the function (classes as indices; no spacing, no donor).
        donor: case id whose clean label is the donor (``replace_label`` only).
    """

    name: str
    params: dict
    kwargs: dict
    donor: str | None = None


def location(source: str, *parts: str) -> str:
    return ", ".join((f"plan {source}", *parts))


def draw_step(step: Step, rng: np.random.Generator, class_names: Sequence[str], case_id: str,
               case_ids: Sequence[str], source: str) -> DrawnStep:
    spec = SPECS[step.name]
    given = dict(step.values)
    params: dict[str, Any] = {}
    kwargs: dict[str, Any] = {}
    donor = None
    where = location(source, f"case '{case_id}'", step.name)
    for p in spec.params:
        if p.name in given:
            value = given[p.name].draw(p, rng)
        elif p.default is REQUIRED or p.default is None:
            continue
        else:
            value = p.default
        if p.kind == "class":
            index = resolve_class(value, class_names, where)
            params[p.name], kwargs[p.name] = class_names[index], index
        elif p.kind == "classes":
            indices = [resolve_class(v, class_names, where) for v in value]
            params[p.name], kwargs[p.name] = [class_names[i] for i in indices], tuple(indices)
        elif p.kind == "donor":
            if value == "random":
                others = [c for c in case_ids if c != case_id]
                if not others:
                    raise PlanError(f"{where}: a random donor needs another case, but the dataset has only this one.")
                value = others[int(rng.integers(len(others)))]
            params[p.name] = donor = str(value)
        else:
            params[p.name] = kwargs[p.name] = value
    if spec.derive is not None:
        kwargs = spec.derive(params, rng)
    if spec.seed:
        params["seed"] = kwargs["seed"] = int(rng.integers(2**31))
    return DrawnStep(step.name, params, kwargs, donor)
