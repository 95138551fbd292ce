"""benchmarks/gpu_suite.py --smoke: every part of the GPU suite runs (tiny sizes, CPU) or says why it is skipped."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_helpers import TS_EXAMPLES

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "benchmarks" / "gpu_suite.py"
PARTS = ("step-bf16", "step-fp32", "training", "loader", "probe", "ddp", "step-demo-bf16")
#: What each part's rows must hold as numbers.
NUMBERS = {"step-fp32": "step_s", "training": "samples_per_s", "ddp": "samples_per_s", "loader": "cases_per_s",
           "probe": "next"}


def _rows(record: dict) -> list[dict]:
    result = record["result"]
    return result.get("results", result.get("rows", []))


@pytest.mark.slow
def test_smoke_suite_reports_every_part_with_numbers_or_a_reason(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "suite"
    done = subprocess.run([sys.executable, str(SUITE), "--smoke", "--out", str(out)], capture_output=True, text=True,
                          env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "gpu_suite.json").read_text())
    text = (out / "gpu_suite.md").read_text()

    assert report["smoke"] and report["device"] == "cpu"
    assert report["machine"]["torch"] and "cpu" in report["machine"] and "gpus" in report["machine"]
    records = {r["name"]: r for r in report["parts"]}
    assert tuple(records) == PARTS
    for name, record in records.items():
        assert f"## {name}:" in text
        if record["status"] == "ok":
            rows = _rows(record)
            assert rows and not any("error" in r for r in rows), (name, rows)
            key = NUMBERS.get(name, "step_s")
            assert all(math.isfinite(r[key]) and r[key] > 0 for r in rows), (name, rows)
            assert any(line.startswith("|---") for line in record["result"]["markdown"])
        else:
            assert record["status"] == "skipped" and record["reason"], (name, record)
            assert "**Skipped**" in text

    # On the CPU: bf16 is CUDA-only; everything else runs (the 2-process step on Gloo).
    for name in ("step-bf16", "step-demo-bf16"):
        assert records[name]["status"] == "skipped" and "CUDA" in records[name]["reason"]
    for name in ("step-fp32", "training", "ddp"):
        assert records[name]["status"] == "ok", (name, records[name].get("reason"), records[name].get("output_tail"))
    # the loader reads the shared CT examples; without them it says so instead of running
    loader = records["loader"]
    if (TS_EXAMPLES / "A_example_ct_3mm").is_dir():
        assert loader["status"] == "ok", (loader.get("reason"), loader.get("output_tail"))
    else:
        assert loader["status"] == "skipped" and "shared CT examples" in loader["reason"], loader
    has_slicer = importlib.util.find_spec("slicer") is not None
    assert records["probe"]["status"] == ("ok" if has_slicer else "skipped")

    variants = {r["variant"] for r in _rows(records["step-fp32"])}
    assert variants == {"batched", "looped", "plain"}
    training = {r["variant"]: r for r in _rows(records["training"])}
    assert training["upstream"]["batch"] == 1 and training["upstream"]["forward"] == "loop"
    assert training["upstream"]["dtype"] == "fp32"
    assert _rows(records["ddp"])[0]["processes"] == 2
    keys = {r["key"] for r in report["ratios"]}
    assert {"batched_vs_plain", "loop_vs_batched", "training_vs_upstream", "ddp_vs_one"} <= keys
    # a ratio whose part was skipped is left out, not reported as a number
    assert ("loading_vs_step" in keys) == (loader["status"] == "ok")
    assert "## Ratios against the targets" in text


def test_gpu_plan_runs_the_issue_sizes_and_skips_the_2_gpu_part_on_one_gpu():
    sys.path.insert(0, str(SUITE.parent))
    try:
        import gpu_suite
    finally:
        sys.path.remove(str(SUITE.parent))
    one = {p.name: p for p in gpu_suite.plan("cuda", smoke=False, gpus=1, bf16=True)}
    assert tuple(one) == PARTS
    assert "needs two" in one["ddp"].skip and one["step-bf16"].skip is None
    for name in ("step-bf16", "step-fp32", "training"):
        args = " ".join(one[name].args)
        assert "--preset reference --patch 168 168 168 --batch 4" in args and "--device cuda" in args
        assert "--in-process" not in args  # each variant in its own process: its own peak memory
    assert "--dtype bf16" in " ".join(one["training"].args)
    assert "--step-patch 168" in " ".join(one["loader"].args)
    two = {p.name: p for p in gpu_suite.plan("cuda", smoke=False, gpus=2, bf16=True)}
    assert two["ddp"].skip is None and "--processes 2" in " ".join(two["ddp"].args)
    no_bf16 = {p.name: p for p in gpu_suite.plan("cuda", smoke=False, gpus=1, bf16=False)}
    assert no_bf16["step-bf16"].skip and "--dtype fp32" in " ".join(no_bf16["training"].args)
