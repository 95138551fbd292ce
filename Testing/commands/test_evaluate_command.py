"""``hypersort evaluate`` from the command line: one table on the terminal, evaluation.json, one-line errors."""

from __future__ import annotations

import json

import yaml

from conftest import tiny_config, write_sphere_dataset
from HyperSORTLib.cli import main

PLAN = """seed: 1
groups:
  - name: a_eroded
    count: 3
    perturbations:
      - erode_class: {class_id: ball_a, mm: 2}
  - name: swapped
    count: 2
    perturbations:
      - swap_classes: {a: ball_a, b: ball_b}
  - name: erroneous
    count: 1
    erroneous: true
    perturbations:
      - empty_label
"""


def _inputs(tmp_path):
    data = write_sphere_dataset(tmp_path / "clean", n_cases=9)
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(epochs=2).to_dict()))
    return data, plan, config


def test_evaluate_prints_one_table_and_writes_evaluation_json(tmp_path, capsys):
    data, plan, config = _inputs(tmp_path)
    out = tmp_path / "eval"
    argv = ["evaluate", "--data", str(data), "--plan", str(plan), "--config", str(config), "--out", str(out),
            "--no-cache", "--no-progress", "--device", "cpu"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "evaluation.json").read_text())
    assert metrics["n_cases"] == 9 and metrics["epochs"] == 2 and metrics["device"] == "cpu"
    assert metrics["group_sizes"] == {"a_eroded": 3, "clean": 3, "erroneous": 1, "swapped": 2}
    table = printed.splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("score"))
    assert table[header].split() == ["score", "expected", "found", "result"]

    def row(prefix: str) -> str:
        return next(line for line in table[header + 2:] if line.startswith(prefix))

    assert row("styles vs groups: ARI").split()[-1] == f"{metrics['ari']:.3f}"
    assert row("erroneous cases: AUROC").split()[-1] == f"{metrics['auroc']:.3f}"
    assert row("main mode vs clean labels: Dice").split()[-1] == f"{metrics['main_mode']['dice']:.3f}"
    # one check row per systematic group: the eroded class's volume ratio, the swap, the clean majority
    checks = {c["group"]: c for c in metrics["styles"]}
    assert sorted(checks) == ["a_eroded", "clean", "swapped"]
    assert checks["a_eroded"]["check"] == "ball_a volume ratio" and checks["a_eroded"]["injected_ratio"] < 1
    assert checks["swapped"]["check"] == "ball_a and ball_b swapped"
    for group, check in checks.items():
        result = "pass" if check["passed"] else "FAIL"
        assert row(f"{group} (").endswith(result) and check["expected"] in row(f"{group} (")
    assert str(out / "evaluation.json") in printed

    # the same command again resumes the finished evaluation: nothing is retrained
    assert main(argv) == 0
    again = json.loads((out / "evaluation.json").read_text())
    assert again["resumed_from"] == 2 and again["resumed_folder"] is True
    assert {k: again[k] for k in ("ari", "nmi", "auroc", "main_mode")} == \
        {k: metrics[k] for k in ("ari", "nmi", "auroc", "main_mode")}


def test_evaluate_refuses_a_folder_of_foreign_files_in_one_line(tmp_path, capsys):
    data, plan, config = _inputs(tmp_path)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "evaluation.json").write_text('{"my": "results"}')
    assert main(["evaluate", "--data", str(data), "--plan", str(plan), "--config", str(config), "--out", str(out),
                 "--no-cache", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "evaluation.json" in err and "--overwrite" in err and err.startswith("hypersort evaluate: error:")
    assert (out / "evaluation.json").read_text() == '{"my": "results"}'
    assert sorted(p.name for p in out.iterdir()) == ["evaluation.json"]


def test_evaluate_rejects_a_bad_plan_before_reading_the_data(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 0\ngroups:\n  - name: x\n    count: 1\n    perturbations:\n      - dilate_clas: {}\n")
    assert main(["evaluate", "--data", str(tmp_path / "absent"), "--plan", str(bad), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'dilate_class'" in err and not (tmp_path / "o").exists()
