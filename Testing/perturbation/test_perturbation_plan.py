"""Perturbation plans: parsing, strict validation, group assignment, per-case random streams."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from HyperSORTLib.data.readers import AMOS_CLASSES
from HyperSORTLib.demo.phantom import CLASS_NAMES
from HyperSORTLib.perturbation.plan import PerturbationPlan, PlanError, case_rng, load_plan

IDS = [f"case_{i:03d}" for i in range(40)]


def plan(groups: list, **top) -> PerturbationPlan:
    return PerturbationPlan.from_dict({"seed": 7, "groups": groups, **top}, source="test.yaml")


def test_builtin_amos_style_plan_loads_round_trips_and_fits_common_class_names():
    amos = load_plan("amos-style")
    assert PerturbationPlan.from_dict(yaml.safe_load(amos.to_yaml())) == amos
    assert sum(g.fraction for g in amos.groups) < 0.5  # a clean majority
    assert sum(g.erroneous for g in amos.groups) == 1 and len(amos.groups) == 4
    for names in (CLASS_NAMES, AMOS_CLASSES, ("background", "liver", "spleen", "kidney_right", "kidney_left")):
        amos.check_classes(names)
    counts = Counter(a.group for a in amos.assign(IDS))
    assert counts == {"clean": 28, "liver_dilated": 5, "spleen_omitted": 3, "kidneys_swapped": 2, "erroneous": 2}


def test_group_sizes_from_fraction_count_and_ids():
    p = plan([
        {"name": "a", "fraction": 0.25, "perturbations": ["empty_label"]},
        {"name": "b", "count": 3, "perturbations": ["empty_label"]},
        {"name": "c", "cases": ["case_005", "case_006"], "erroneous": True, "perturbations": ["empty_label"]},
    ], clean_group="untouched")
    assignments = p.assign(IDS)
    assert [a.case_id for a in assignments] == IDS
    groups = {a.case_id: a.group for a in assignments}
    assert Counter(groups.values()) == {"a": 10, "b": 3, "c": 2, "untouched": 25}
    assert groups["case_005"] == groups["case_006"] == "c"
    assert all(a.erroneous == (a.group == "c") for a in assignments)
    assert all(a.steps == () for a in assignments if a.group == "untouched")


def test_fractions_are_rounded_by_largest_remainder():
    p = plan([{"name": n, "fraction": 1 / 3, "perturbations": ["empty_label"]} for n in "xyz"])
    counts = Counter(a.group for a in p.assign(IDS[:10]))
    assert sorted(counts.values()) == [3, 3, 4] and "clean" not in counts


def test_adding_cases_keeps_most_groups_and_every_case_keeps_its_draws():
    dilate = {"dilate_class": {"class_id": "liver", "mm": [2, 8]}}
    p = plan([{"name": "dil", "fraction": 0.3, "perturbations": [dilate]}])
    before = {a.case_id: a for a in p.assign(IDS)}
    after = {a.case_id: a for a in p.assign(IDS + [f"extra_{i}" for i in range(4)])}
    kept = sum(before[c].group == after[c].group for c in IDS)
    assert kept >= len(IDS) - 4
    for case in IDS:
        if before[case].group == after[case].group == "dil":
            first = p.draw(before[case], CLASS_NAMES, IDS)
            second = p.draw(after[case], CLASS_NAMES, IDS + ["extra"])
            assert first == second
    assert case_rng(7, "case_001").random() == case_rng(7, "case_001").random() != case_rng(7, "case_002").random()


def test_drawn_values_follow_ranges_choices_and_vectors():
    p = plan([{"name": "g", "fraction": 1.0, "perturbations": [
        {"dilate_class": {"class_id": ["liver", "spleen"], "mm": [2, 4]}},
        {"remove_slices": {"axis": [0, 2], "fraction": {"choice": [0.25, 0.5]}}},
        {"shift_class": {"class_id": "liver", "shift_mm": [0, [-5, 5], {"choice": [1, 2]}]}},
        {"translate_label": {"distance_mm": 30}},
    ]}])
    seen_classes, seen_axes = set(), set()
    for assignment in p.assign(IDS):
        dilate, slices, shift, translate = p.draw(assignment, CLASS_NAMES, IDS)
        assert dilate.params["class_id"] in ("liver", "spleen") and 2 <= dilate.params["mm"] <= 4
        assert dilate.kwargs["class_id"] == CLASS_NAMES.index(dilate.params["class_id"])
        assert dilate.kwargs["overwrite"] == (0,) and dilate.params["overwrite"] == ["background"]
        assert slices.params["axis"] in (0, 1, 2) and slices.params["fraction"] in (0.25, 0.5)
        assert isinstance(slices.params["seed"], int)
        v = shift.params["shift_mm"]
        assert v[0] == 0 and -5 <= v[1] <= 5 and v[2] in (1, 2)
        assert sum(x * x for x in translate.kwargs["shift_mm"]) == pytest.approx(900, rel=1e-3)
        assert translate.params["shift_mm"] == translate.kwargs["shift_mm"] and "distance_mm" not in translate.kwargs
        seen_classes.add(dilate.params["class_id"])
        seen_axes.add(slices.params["axis"])
    assert seen_classes == {"liver", "spleen"} and seen_axes == {0, 1, 2}


def test_apply_one_gives_each_kind_in_turn_and_donors_are_other_cases():
    p = plan([{"name": "err", "count": 6, "erroneous": True, "apply": "one",
               "perturbations": [{"replace_label": {"donor": "random"}}, "empty_label",
                                 {"translate_label": {"shift_mm": [1, 2, 3]}}]}])
    errors = [a for a in p.assign(IDS) if a.group == "err"]
    assert Counter(a.steps[0].name for a in errors) == {"replace_label": 2, "empty_label": 2, "translate_label": 2}
    for a in errors:
        (step,) = p.draw(a, CLASS_NAMES, IDS)
        if step.name == "replace_label":
            assert step.donor in IDS and step.donor != a.case_id and step.params == {"donor": step.donor}


@pytest.mark.parametrize("data, fragment", [
    ({"seed": 0, "group": []}, r"unknown key 'group'\. Did you mean 'groups'\?"),
    ({"seed": -1, "groups": []}, "seed"),
    ({"groups": [{"name": "a", "fraction": 0.5, "perturbations": ["dilate_clas"]}]},
     r"unknown perturbation 'dilate_clas'\. Did you mean 'dilate_class'\?"),
    ({"groups": [{"name": "a", "fraction": 0.5, "perturbations": [{"dilate_class": {"class_id": "liver", "mmm": 3}}]}]},
     r"unknown parameter 'mmm'\. Did you mean 'mm'\?"),
    ({"groups": [{"name": "a", "fraction": 0.5, "perturbations": [{"dilate_class": {"class_id": "liver"}}]}]},
     "parameter 'mm' is required"),
    ({"groups": [{"name": "a", "fraction": 0.7, "perturbations": ["empty_label"]},
                 {"name": "b", "fraction": 0.4, "perturbations": ["empty_label"]}]}, "fractions sum to 1.1"),
    ({"groups": [{"name": "a", "fraction": 1.5, "perturbations": ["empty_label"]}]}, r"fraction.*\[0, 1\]"),
    ({"groups": [{"name": "a", "fraction": 0.1, "count": 2, "perturbations": ["empty_label"]}]}, "exactly one of"),
    ({"groups": [{"name": "a", "fraction": 0.1, "perturbations": ["empty_label"]},
                 {"name": "a", "count": 1, "perturbations": ["empty_label"]}]}, "unique"),
    ({"groups": [{"name": "clean", "count": 1, "perturbations": ["empty_label"]}]}, "unique"),
    ({"groups": [{"name": "a", "cases": ["x"], "perturbations": ["empty_label"]},
                 {"name": "b", "cases": ["x"], "perturbations": ["empty_label"]}]}, "listed in groups 'a' and 'b'"),
    ({"groups": [{"name": "a", "count": 1, "perturbations": [{"erode_class": {"class_id": 1, "mm": -2}}]}]},
     r"expected a number >= 0, found -2"),
    ({"groups": [{"name": "a", "count": 1, "perturbations": [{"erode_class": {"class_id": 1, "mm": [5, 2]}}]}]},
     "low <= high"),
    ({"groups": [{"name": "a", "count": 1, "perturbations": [{"erode_class": {"class_id": 1, "mm": [1, 2, 3]}}]}]},
     r"exactly two numbers.*\{choice: \[\.\.\.\]\}"),
    ({"groups": [{"name": "a", "count": 1, "perturbations": [{"translate_label": {}}]}]},
     "exactly one of shift_mm, distance_mm"),
    ({"groups": [{"name": "a", "count": 1, "perturbations": [{"remove_slices": {"axis": 3, "fraction": 0.5}}]}]},
     r"axis.*in \[0, 2\]"),
    ({"groups": [{"name": "a", "count": 1, "apply": "some", "perturbations": ["empty_label"]}]}, "'apply'"),
    ({"groups": [{"name": "a", "count": 1, "perturbations": []}]}, "non-empty list"),
])
def test_invalid_plans_are_rejected_with_readable_errors(data, fragment):
    with pytest.raises(PlanError, match=fragment) as info:
        PerturbationPlan.from_dict(data, source="my_plan.yaml")
    assert "plan my_plan.yaml" in str(info.value)


def test_plan_that_does_not_fit_the_dataset_names_what_is_missing():
    p = plan([{"name": "a", "count": 2, "perturbations": [{"omit_class": {"class_id": "pancreas"}}]}])
    with pytest.raises(PlanError, match=r"group 'a'.*class 'pancreas' is not a class.*Classes: background, liver"):
        p.check_classes(CLASS_NAMES)
    with pytest.raises(PlanError, match=r"case id\(s\) 'case_999'"):
        plan([{"name": "a", "cases": ["case_999"], "perturbations": ["empty_label"]}]).assign(IDS)
    with pytest.raises(PlanError, match="need 50 cases"):
        plan([{"name": "a", "count": 50, "perturbations": ["empty_label"]}]).assign(IDS)
    with pytest.raises(PlanError, match="donor case 'case_0001'.*Did you mean"):
        plan([{"name": "a", "count": 1, "perturbations": [{"replace_label": {"donor": "case_0001"}}]}]).assign(IDS)


def test_load_plan_from_file_and_errors(tmp_path: Path):
    path = tmp_path / "p.yaml"
    path.write_text("seed: 3\ngroups:\n"
                    "  - {name: big, fraction: 0.5, perturbations: [{dilate_class: {class_id: liver, mm: 4}}]}\n")
    loaded = load_plan(path)
    assert loaded.seed == 3 and loaded.groups[0].steps[0].name == "dilate_class" and loaded.source == str(path)
    (tmp_path / "bad.yaml").write_text("seed: [unclosed\n")
    with pytest.raises(PlanError, match="bad.yaml: not valid YAML"):
        load_plan(tmp_path / "bad.yaml")
    with pytest.raises(FileNotFoundError, match="Did you mean 'amos-style'"):
        load_plan("amos_style")
