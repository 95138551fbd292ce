"""Each baseline trains the HyperSORT UNet on a tiny dataset, resumes after a kill and is read by
``hypersort segment`` like a HyperSORT run."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_config
from data_helpers import Killed, kill_after
from HyperSORTLib import rundir
from HyperSORTLib.baselines import METHODS, BaselineConfig, BaselineTrainer, PINTConfig
from HyperSORTLib.cli import main
from HyperSORTLib.commands.baseline import METHOD_CHOICES
from HyperSORTLib.data import read_nnunet_folder
from HyperSORTLib.data.dataset import PreprocessedCases
from HyperSORTLib.inference import TrainedRun
from HyperSORTLib.model.hypersort import HyperSORTModel
from HyperSORTLib.model.unet import UNet3D
from HyperSORTLib.training import RunDirectoryError, Trainer

BASELINES = {"unet": BaselineConfig("unet"), "ce-threshold": BaselineConfig("ce-threshold"),
             "mcpm": BaselineConfig("mcpm"), "pint": BaselineConfig("pint", pint=PINTConfig(warmup_epochs=1))}


@pytest.fixture
def cases(sphere_dataset):
    return read_nnunet_folder(sphere_dataset)


def _fit(cases, run_dir: Path, method: str, config=None, callbacks=()):
    config = config or tiny_config()
    dataset = PreprocessedCases(cases, config.data)
    meta = PreprocessedCases(cases.without(cases.case_ids[2:]), config.data) if method == "mcpm" else None
    return BaselineTrainer(config, dataset, cases.case_ids, run_dir, BASELINES[method], meta_dataset=meta,
                           meta_case_ids=cases.case_ids[:2] if meta is not None else (), callbacks=callbacks,
                           progress=False).fit()


def test_the_command_offers_every_method():
    assert METHOD_CHOICES == METHODS


@pytest.mark.parametrize("method", sorted(BASELINES))
def test_each_baseline_learns_and_writes_a_run_of_the_hypersort_unet(cases, tmp_path, method):
    result = _fit(cases, tmp_path / method, method, tiny_config(epochs=4))
    losses = [h["loss"] for h in result.history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0 if method != "pint" else 1]
    weights = load_file(str(tmp_path / method / rundir.MODEL_FILE))
    template = HyperSORTModel(tiny_config().model, cases.case_ids).unet
    assert {k[len("unet."):]: v.shape for k, v in weights.items()} == {k: v.shape for k, v in
                                                                      template.state_dict().items()}
    _, _, doc = rundir.read_run_config(tmp_path / method)
    assert rundir.run_method(doc)["name"] == method
    run = TrainedRun.load(tmp_path / method, device="cpu")
    assert isinstance(run.decode([0.0, 0.0]), UNet3D)
    assert np.isfinite(rundir.read_latents_table(tmp_path / method, cases.case_ids)[1]).all()


def test_baseline_starts_from_the_template_the_hyper_network_starts_from(cases, tmp_path):
    config = tiny_config(epochs=1)
    trainer = BaselineTrainer(config, PreprocessedCases(cases, config.data), cases.case_ids, tmp_path / "r",
                              progress=False)
    template = HyperSORTModel(config.model, cases.case_ids, seed=config.train.seed).unet
    for key, value in template.state_dict().items():
        assert torch.equal(trainer.model.unet.state_dict()[key], value), key


def test_pint_teacher_starts_as_the_running_mean_of_the_student(cases, tmp_path):
    # The teacher must not keep its random initial weights through a short run: after the first
    # step it is the student, after the second the mean of the student's two states.
    config = tiny_config(epochs=2)
    trainer = BaselineTrainer(config, PreprocessedCases(cases, config.data), cases.case_ids, tmp_path / "r",
                              BASELINES["pint"], progress=False)
    batches = iter(trainer._loader())
    trainer.train_step(next(batches))
    first = {k: v.detach().clone() for k, v in trainer.model.unet.state_dict().items()}
    for key, value in trainer.teacher.state_dict().items():
        torch.testing.assert_close(value, first[key])
    trainer.train_step(next(batches))
    second = trainer.model.unet.state_dict()
    for key, value in trainer.teacher.state_dict().items():
        if value.dtype.is_floating_point:
            torch.testing.assert_close(value, (first[key] + second[key]) / 2)


@pytest.mark.parametrize("method", ["mcpm", "pint"])
def test_resume_after_kill_matches_uninterrupted(cases, tmp_path, method):
    config = tiny_config(epochs=3)
    _fit(cases, tmp_path / "full", method, config)
    with pytest.raises(Killed):
        _fit(cases, tmp_path / "killed", method, config, callbacks=[kill_after(2)])
    state = rundir.load_training_state(tmp_path / "killed")
    assert state["epoch"] == 2 and ("mask_net" in state if method == "mcpm" else "teacher" in state)
    assert _fit(cases, tmp_path / "killed", method, config).resumed_from == 2
    full, killed = load_file(str(tmp_path / "full" / rundir.MODEL_FILE)), load_file(str(tmp_path / "killed" /
                                                                                      rundir.MODEL_FILE))
    for key in full:
        torch.testing.assert_close(full[key], killed[key], rtol=0, atol=0, msg=key)


def test_resume_refuses_another_method_or_configuration(cases, tmp_path):
    _fit(cases, tmp_path / "run", "unet", tiny_config(epochs=1))
    with pytest.raises(RunDirectoryError, match="another training method"):
        _fit(cases, tmp_path / "run", "pint", tiny_config(epochs=2))
    with pytest.raises(RunDirectoryError, match="train.lr: was 0.001, now 0.01"):
        _fit(cases, tmp_path / "run", "unet", tiny_config(epochs=2, lr=0.01))
    config = tiny_config(epochs=2)
    with pytest.raises(RunDirectoryError, match="another training method"):
        Trainer(config, PreprocessedCases(cases, config.data), cases.case_ids, tmp_path / "run", progress=False).fit()


def test_mcpm_without_a_meta_set_is_refused(cases, tmp_path):
    config = tiny_config()
    with pytest.raises(ValueError, match="clean meta set"):
        BaselineTrainer(config, PreprocessedCases(cases, config.data), cases.case_ids, tmp_path / "r",
                        BaselineConfig("mcpm"))


def test_hypersort_baseline_then_segment(sphere_dataset, tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"model": {"unet": {"channels": [4, 8], "convs_per_level": 1},
                                            "hyper": {"hidden": [8]}},
                                  "data": {"spacing": None, "patch_size": [16, 16, 16], "intensity": "window",
                                           "window": [-50, 250]}}))
    run = tmp_path / "ce"
    args = ["baseline", "--method", "ce-threshold", "--data", str(sphere_dataset), "--out", str(run), "--config",
            str(config), "--device", "cpu", "--no-cache", "--no-progress", "--epochs"]
    assert main(args + ["2"]) == 0
    assert main(args + ["3"]) == 0  # resumes to epoch 3
    assert [int(r.split(",")[0]) for r in (run / rundir.LOG_FILE).read_text().splitlines()[1:]] == [1, 2, 3]
    assert rundir.weights_epoch(run) == 3
    scan = sphere_dataset / "imagesTr" / "case_000_0000.nii.gz"
    out = tmp_path / "seg.nii.gz"
    assert main(["segment", "--run", str(run), "--input", str(scan), "--output", str(out), "--device", "cpu",
                 "--no-progress"]) == 0
    assert nib.load(out).shape == nib.load(scan).shape
    assert main(["baseline", "--method", "mcpm", "--data", str(sphere_dataset), "--out", str(tmp_path / "m"),
                 "--no-progress"]) == 2
    assert "--meta-data" in capsys.readouterr().err
    # --overwrite replaces a baseline run, never a HyperSORT run
    assert main(args + ["2", "--overwrite"]) == 0
    assert rundir.weights_epoch(run) == 2
    hyper = tmp_path / "hyper"
    assert main(["train", "--data", str(sphere_dataset), "--out", str(hyper), "--config", str(config), "--epochs",
                 "1", "--device", "cpu", "--no-cache", "--no-progress"]) == 0
    assert main(args[:6] + [str(hyper)] + args[7:] + ["1", "--overwrite"]) == 2
    assert "holds a HyperSORT run" in capsys.readouterr().err
    assert (hyper / rundir.MODEL_FILE).is_file()


def test_a_ce_threshold_run_labels_by_each_images_t_star(cases, tmp_path):
    from HyperSORTLib.inference.decode import marginal_threshold_logits
    from HyperSORTLib.perturbation.marginal import marginal_threshold

    config = tiny_config(epochs=2)
    dataset = PreprocessedCases(cases, config.data)
    BaselineTrainer(config, dataset, cases.case_ids, tmp_path / "ce", BaselineConfig("ce-threshold"),
                    progress=False).fit()
    run = TrainedRun.load(tmp_path / "ce", device="cpu")
    image = torch.as_tensor(dataset.volume(0).image)[None, None]
    unet = run.decode([0.0, 0.0])
    with torch.no_grad():
        probs = torch.softmax(unet(image), 1)[0]
    labels = run.segment(dataset.volume(0).image, [0.0, 0.0])
    for k in (1, 2):
        t = marginal_threshold(probs[k].double().numpy())
        chosen = probs[k].numpy() >= t
        assert chosen.any()
        assert ((labels == k) <= chosen).all()  # a voxel takes class k only where p_k reaches its t*
    torch.testing.assert_close(run.predict_logits(image, unet), marginal_threshold_logits(unet(image).detach()))
