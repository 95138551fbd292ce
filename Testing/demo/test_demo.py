"""`hypersort demo` end to end on a tiny cohort (a few epochs: checks wiring and outputs, not quality)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from HyperSORTLib.cli import main
from HyperSORTLib.data.manifest import read_manifest

TINY = {"model": {"unet": {"channels": [4, 8], "convs_per_level": 1}, "hyper": {"hidden": [8, 8]}},
        "train": {"checkpoint_every": 1}}


@pytest.mark.slow
def test_demo_command_writes_map_and_metrics(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "HyperSORTLib.cli", "demo", "--out", str(out), "--cases", "10",
                           "--epochs", "2", "--device", "cpu", "--config", str(config), "--no-progress"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert "ARI" in done.stdout and "AUROC" in done.stdout
    assert f"hypersort compare --runs {out / 'run'}" in done.stdout  # how to check the styles with a second seed
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("ari", "nmi", "auroc", "average_precision", "wall_time_s", "main_mode_dice", "main_mode_hd95"):
        assert key in metrics, key
    assert "HD95" in done.stdout and set(metrics["main_mode_hd95_per_class"]) == set(metrics["main_mode_dice_per_class"])
    # The main mode's members' own annotations, against its UNet, in the terminal and metrics.json.
    assert f"main mode's annotations: {metrics['main_mode_annotations']}" in done.stdout
    assert "members annotate every class like its usual member" in metrics["main_mode_annotations"]
    assert 0.0 <= metrics["main_mode_dice"] <= 1.0
    assert metrics["main_mode_hd95"] is None or metrics["main_mode_hd95"] >= 0.0
    assert metrics["n_cases"] == 10 and metrics["epochs"] == 2
    # The demo's groups scaled to 10 cases, as the manifest says.
    assert metrics["group_sizes"] == {"clean": 5, "erroneous": 1, "liver_dilated": 2, "spleen_missing": 2}
    assert metrics["n_erroneous"] == 1
    assert metrics["config"]["model"]["unet"]["channels"] == [4, 8]
    import torch

    assert metrics["seed"] == metrics["config"]["train"]["seed"]
    assert metrics["software"]["torch"] == torch.__version__
    assert metrics["software"]["torch_threads"] == 1  # the child's (OMP_NUM_THREADS): results repeat at a fixed count
    provenance = json.loads((out / "run" / "analysis" / "provenance.json").read_text())
    assert provenance["software"]["hypersort"] == metrics["software"]["hypersort"]
    png = (out / "latent_map.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    import csv

    with open(out / "run" / "analysis" / "samples.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 10 and list(rows[0])[:4] == ["case_id", "z1", "z2", "cluster"]
    assert sorted(int(r["rank"]) for r in rows) == list(range(1, 11))
    assert {r["group"] for r in rows} <= {"clean", "liver_dilated", "spleen_missing", "erroneous"}
    # The reported AUROC is that of the written ranking against the manifest's erroneous cases.
    truth = read_manifest(out / "cohort" / "manifest.csv", [r["case_id"] for r in rows]).erroneous
    suspicion = np.array([float(r["suspicion"]) for r in rows])
    assert metrics["auroc"] == pytest.approx(roc_auc_score(truth, suspicion))
    assert (out / "run" / "analysis" / "report.html").is_file() and metrics["report"].endswith("report.html")
    # the run directory is a normal, resumable run
    assert (out / "run" / "model.safetensors").is_file()


def test_demo_configuration_is_the_shipped_yaml():
    from HyperSORTLib.config import RunConfig
    from HyperSORTLib.demo.run import DEMO_CONFIG, DEMO_CONFIG_FILE

    assert DEMO_CONFIG_FILE.suffix == ".yaml" and DEMO_CONFIG == RunConfig.from_file(DEMO_CONFIG_FILE)
    assert DEMO_CONFIG.data.spacing == (7.0, 7.0, 8.0) and DEMO_CONFIG.model.unet.num_classes == 5
    # the released UNet widths: narrower UNets mix the demo's dilated-liver style into the clean cases
    assert DEMO_CONFIG.model.unet.channels == (16, 32, 64, 128) and DEMO_CONFIG.model.unet.convs_per_level == 1
    # a generator-first third and a per-visit zoom: without them dilated cases mix into the clean majority
    assert DEMO_CONFIG.train.latent_warmup_epochs * 3 == DEMO_CONFIG.train.epochs
    assert DEMO_CONFIG.data.scale_augmentation > 0 and DEMO_CONFIG.train.latent_init_std == 0.0


def test_the_semireal_configuration_trains_with_the_demos_warm_up_and_zoom():
    from HyperSORTLib.config import RunConfig
    from HyperSORTLib.demo.run import DEMO_CONFIG
    from HyperSORTLib.demo.semireal import SEMIREAL_CONFIG_FILE

    semireal = RunConfig.from_file(SEMIREAL_CONFIG_FILE)
    # one training rule for both development cohorts, not one tuned to each
    assert semireal.train.latent_warmup_epochs * 3 == semireal.train.epochs == DEMO_CONFIG.train.epochs
    assert semireal.data.scale_augmentation == DEMO_CONFIG.data.scale_augmentation > 0
    assert semireal.train.latent_init_std == DEMO_CONFIG.train.latent_init_std == 0.0


def test_demo_config_rejects_unknown_keys(tmp_path):
    from HyperSORTLib.config import ConfigError
    from HyperSORTLib.demo.run import DemoOptions, demo_config

    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epocs: 3\n")
    with pytest.raises(ConfigError, match="Did you mean 'epochs'"):
        demo_config(DemoOptions(config_path=bad), ("background", "liver", "spleen", "right_kidney", "left_kidney"))


def test_demo_refuses_a_folder_with_files_of_its_names_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "metrics.json").write_text('{"my": "results"}')
    (out / "notes.txt").write_text("kept")
    assert main(["demo", "--out", str(out), "--no-progress", "--epochs", "1", "--cases", "10"]) == 2
    err = capsys.readouterr().err
    assert "metrics.json" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert (out / "metrics.json").read_text() == '{"my": "results"}'
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "notes.txt"]
