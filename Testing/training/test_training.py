"""Joint training: learning, reproducibility, checkpoints and resuming after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import tiny_config, write_sphere_dataset
from data_helpers import Killed, kill_after
from HyperSORTLib.data import SegmentationCases, read_nnunet_folder, training_transforms
from HyperSORTLib.inference import TrainedRun
from HyperSORTLib.training import RunDirectoryError, Trainer
from HyperSORTLib import rundir


def _train(data: Path, run_dir: Path, config, callbacks=()):
    cases = read_nnunet_folder(data)
    dataset = SegmentationCases(cases, training_transforms(config.data))
    return Trainer(config, dataset, cases.case_ids, run_dir, callbacks=callbacks, progress=False).fit()


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / rundir.MODEL_FILE))


def _assert_same_run(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0, msg=key)
    assert (a / rundir.LATENTS_FILE).read_text() == (b / rundir.LATENTS_FILE).read_text()
    log_a = [line.split(",")[:5] for line in (a / rundir.LOG_FILE).read_text().splitlines()]
    log_b = [line.split(",")[:5] for line in (b / rundir.LOG_FILE).read_text().splitlines()]
    assert log_a == log_b  # losses equal; timing columns differ


def test_training_reduces_loss_and_writes_run(sphere_dataset, tmp_path):
    result = _train(sphere_dataset, tmp_path / "run", tiny_config(epochs=12))
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.6 * losses[0]
    for name in (rundir.CONFIG_FILE, rundir.MODEL_FILE, rundir.CHECKPOINT_FILE, rundir.LATENTS_FILE, rundir.LOG_FILE):
        assert (tmp_path / "run" / name).is_file(), name
    assert not list((tmp_path / "run").glob(".*.tmp")), "temporary files left behind"
    config, case_ids, doc = rundir.read_run_config(tmp_path / "run")
    assert config == tiny_config(epochs=12)
    assert case_ids == [f"case_{i:03d}" for i in range(6)]
    assert doc["config"]["data"]["class_names"] == ["background", "ball_a", "ball_b"]
    assert doc["software"]["torch"] == torch.__version__ and "code" in doc["software"]
    assert torch.isfinite(result.sample_loss).all()


def test_same_seed_same_run(sphere_dataset, tmp_path):
    _train(sphere_dataset, tmp_path / "a", tiny_config())
    _train(sphere_dataset, tmp_path / "b", tiny_config())
    _assert_same_run(tmp_path / "a", tmp_path / "b")
    _train(sphere_dataset, tmp_path / "c", tiny_config(seed=1))
    assert not torch.equal(_weights(tmp_path / "a")["latents.weight"], _weights(tmp_path / "c")["latents.weight"])


def test_latents_move_only_when_visited(sphere_dataset, tmp_path):
    """With batch size 4 of 6 samples, every epoch leaves 2 latents untouched."""
    config = tiny_config(epochs=1, batch_size=4)
    cases = read_nnunet_folder(sphere_dataset)
    dataset = SegmentationCases(cases, training_transforms(config.data))
    trainer = Trainer(config, dataset, cases.case_ids, tmp_path / "run", progress=False)
    before = trainer.model.latents.weight.detach().clone()
    batch = next(iter(trainer._loader()))
    trainer.train_step(batch)
    after = trainer.model.latents.weight.detach()
    moved = (after != before).any(dim=1).nonzero().flatten().tolist()
    assert sorted(moved) == sorted(batch["index"])
    assert trainer.latent_optimizer.steps.sum() == 4


def test_latent_warmup_trains_only_the_generator_first(sphere_dataset, tmp_path):
    """During ``latent_warmup_epochs`` the latents stay at their initial values while the
    generator learns; afterwards they move."""
    config = tiny_config(epochs=3, latent_warmup_epochs=2, latent_init_std=0.0)
    cases = read_nnunet_folder(sphere_dataset)
    dataset = SegmentationCases(cases, training_transforms(config.data))
    trainer = Trainer(config, dataset, cases.case_ids, tmp_path / "run", progress=False)
    generator_before = [p.detach().clone() for p in trainer.model.generator.parameters()]
    loader = trainer._loader()
    for _ in range(2):
        trainer._run_epoch(loader, None)
    assert torch.count_nonzero(trainer.model.latents.weight) == 0
    assert int(trainer.latent_optimizer.steps.sum()) == 0
    assert any(not torch.equal(a, b.detach()) for a, b in zip(generator_before, trainer.model.generator.parameters()))
    trainer._run_epoch(loader, None)
    assert (trainer.model.latents.weight.detach().abs().sum(dim=1) > 0).all()


def test_a_warm_up_run_resumes_with_more_epochs(sphere_dataset, tmp_path):
    """A run trained with a warm-up can be resumed to train longer with an epochs override: the
    warm-up it was trained with is kept, so the configuration check on resume accepts it."""
    cases = read_nnunet_folder(sphere_dataset)
    config = tiny_config(epochs=3, latent_warmup_epochs=2).for_dataset(cases)
    _train(sphere_dataset, tmp_path / "run", config)
    longer = config.for_dataset(cases, epochs=6)
    assert longer.train.latent_warmup_epochs == 2  # scaled, it would be 4 and the resume refused
    result = _train(sphere_dataset, tmp_path / "run", longer)
    assert result.resumed_from == 3 and result.epochs == 6


def test_resume_after_kill_matches_uninterrupted(sphere_dataset, tmp_path):
    _train(sphere_dataset, tmp_path / "full", tiny_config(epochs=4))
    with pytest.raises(Killed):
        _train(sphere_dataset, tmp_path / "killed", tiny_config(epochs=4), callbacks=[kill_after(2)])
    assert rundir.load_training_state(tmp_path / "killed")["epoch"] == 2
    result = _train(sphere_dataset, tmp_path / "killed", tiny_config(epochs=4))
    assert result.resumed_from == 2
    _assert_same_run(tmp_path / "full", tmp_path / "killed")


def test_more_epochs_extends_a_finished_run(sphere_dataset, tmp_path):
    _train(sphere_dataset, tmp_path / "full", tiny_config(epochs=4))
    _train(sphere_dataset, tmp_path / "grown", tiny_config(epochs=2))
    config_path = tmp_path / "grown" / rundir.CONFIG_FILE
    doc = json.loads(config_path.read_text())
    doc["software"] = {**doc["software"], "code": "0123456789ab", "torch": "2.0.0"}  # as trained by older code
    config_path.write_text(json.dumps(doc))
    _train(sphere_dataset, tmp_path / "grown", tiny_config(epochs=4))
    _assert_same_run(tmp_path / "full", tmp_path / "grown")
    software = json.loads(config_path.read_text())["software"]
    assert (software["code"], software["torch"]) == ("0123456789ab", "2.0.0"), "the run's start is kept"


def test_resume_refuses_changed_configuration(sphere_dataset, tmp_path):
    _train(sphere_dataset, tmp_path / "run", tiny_config(epochs=1))
    with pytest.raises(RunDirectoryError, match="train.latent_lr: was 0.01, now 0.5"):
        _train(sphere_dataset, tmp_path / "run", tiny_config(epochs=2, latent_lr=0.5))
    other = write_sphere_dataset(tmp_path / "other", n_cases=5)
    with pytest.raises(RunDirectoryError, match="different case list"):
        _train(other, tmp_path / "run", tiny_config(epochs=2))


def test_corrupt_checkpoint_and_foreign_version_give_clear_errors(sphere_dataset, tmp_path):
    run = tmp_path / "run"
    _train(sphere_dataset, run, tiny_config(epochs=1))
    (run / rundir.CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(RunDirectoryError, match="checkpoint.pt could not be loaded"):
        _train(sphere_dataset, run, tiny_config(epochs=2))
    doc = (run / rundir.CONFIG_FILE).read_text().replace('"format_version": 1', '"format_version": 99')
    (run / rundir.CONFIG_FILE).write_text(doc)
    with pytest.raises(RunDirectoryError, match="run format 99"):
        TrainedRun.load(run, device="cpu")
    (run / rundir.MODEL_FILE).write_bytes(b"\x00" * 10)
    with pytest.raises(RunDirectoryError, match="not a HyperSORT run|could not be read|run format"):
        TrainedRun.load(run, device="cpu")


def test_checkpoint_round_trip_and_decoding(sphere_dataset, tmp_path):
    result = _train(sphere_dataset, tmp_path / "run", tiny_config(epochs=3))
    run = TrainedRun.load(tmp_path / "run", device="cpu")
    torch.testing.assert_close(torch.from_numpy(run.latents), result.latents, rtol=0, atol=0)
    assert run.class_names == ("background", "ball_a", "ball_b")
    cases = read_nnunet_folder(sphere_dataset)
    item = SegmentationCases(cases, training_transforms(run.config.data))[4]
    z = run.latent_of("case_004")
    with torch.no_grad():
        expected = run.model(item["image"][None], torch.tensor([4]))
    torch.testing.assert_close(run.decode(z)(item["image"][None]), expected, rtol=1e-4, atol=1e-5)
    labels = run.segment(item["image"][0].numpy(), z)
    assert labels.shape == (16, 16, 16) and labels.dtype.name == "uint8"
    with pytest.raises(ValueError, match="3-D volume"):
        run.segment(item["image"][0, 0].numpy(), z)


def test_hypersort_train_cli_resumes_after_sigkill(tmp_path):
    """A real process killed with SIGKILL mid-run resumes and ends where an uninterrupted run ends."""
    data = write_sphere_dataset(tmp_path / "data", n_cases=6)
    config = tiny_config(epochs=60, batch_size=1)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config.to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def command(out):
        return [sys.executable, "-m", "HyperSORTLib.cli", "train", "--data", str(data), "--out", str(out),
                "--config", str(config_file), "--no-progress"]

    subprocess.run(command(tmp_path / "full"), env=env, check=True, capture_output=True, timeout=300)
    proc = subprocess.Popen(command(tmp_path / "killed"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (tmp_path / "killed" / rundir.CHECKPOINT_FILE).exists() and time.time() < deadline:
        time.sleep(0.005)
    time.sleep(0.3)  # somewhere inside a later epoch, possibly mid-write
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed_at = rundir.load_training_state(tmp_path / "killed")["epoch"]
    assert 1 <= killed_at < 60, "the process was not killed mid-run; make the run longer"
    done = subprocess.run(command(tmp_path / "killed"), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    _assert_same_run(tmp_path / "full", tmp_path / "killed")


def test_cli_reports_bad_dataset_without_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "HyperSORTLib.cli", "train", "--data", str(tmp_path / "nowhere"),
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "dataset.json is missing" in done.stderr and "Traceback" not in done.stderr


def test_amp_is_off_on_cpu_whatever_the_configuration(sphere_dataset, tmp_path):
    config = tiny_config(amp=True, device="cpu")
    cases = read_nnunet_folder(sphere_dataset)
    trainer = Trainer(config, SegmentationCases(cases, training_transforms(config.data)), cases.case_ids,
                      tmp_path / "run", progress=False)
    assert trainer.device.type == "cpu" and trainer.amp_dtype is None


def test_forward_strategies_train_alike_and_may_change_on_resume(sphere_dataset, tmp_path):
    """One step with the batched pass and with the per-sample loop: the same gradients (to float
    tolerance); a run may resume under the other strategy."""
    from HyperSORTLib.config import config_hash_fields

    cases = read_nnunet_folder(sphere_dataset)
    grads = {}
    for strategy in ("batched", "loop"):
        config = tiny_config(epochs=1, batch_size=3, forward=strategy)
        trainer = Trainer(config, SegmentationCases(cases, training_transforms(config.data)), cases.case_ids,
                          tmp_path / strategy, progress=False)
        assert trainer.model.forward_strategy == strategy
        trainer.train_step(next(iter(trainer._loader())))
        grads[strategy] = [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]
    assert len(grads["batched"]) == len(grads["loop"]) > 2
    for batched, looped in zip(grads["batched"], grads["loop"]):
        torch.testing.assert_close(batched, looped, rtol=1e-4, atol=1e-5 * float(looped.abs().max()))
    assert config_hash_fields(tiny_config(forward="loop")) == config_hash_fields(tiny_config(forward="batched"))
    auto = Trainer(tiny_config(), SegmentationCases(cases, training_transforms(tiny_config().data)), cases.case_ids,
                   tmp_path / "auto", progress=False)
    assert auto.model.forward_strategy == "batched"  # 4/8 channels: the batched pass
