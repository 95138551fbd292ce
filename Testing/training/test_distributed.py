"""Data-parallel training: two Gloo processes on CPU end where one process with the same global batch ends."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml
from safetensors.torch import load_file

from conftest import tiny_config
from HyperSORTLib import rundir
from HyperSORTLib.data import SegmentationCases, read_nnunet_folder, training_transforms
from HyperSORTLib.inference import TrainedRun
from HyperSORTLib.training import DistributedContext, Trainer
from HyperSORTLib.training.distributed import shard_bounds

#: 6 cases in global batches of 5: shares of 3 and 2 samples, then 1 and none (a stand-in sample).
BATCH = 5


def single_config(epochs: int = 3):
    return tiny_config(epochs=epochs, batch_size=BATCH)


def _fit(data: Path, run_dir: Path, epochs: int, progress: bool = False, context: DistributedContext | None = None):
    config = single_config(epochs)
    cases = read_nnunet_folder(data)
    dataset = SegmentationCases(cases, training_transforms(config.data))
    return Trainer(config, dataset, cases.case_ids, run_dir, progress=progress, distributed=context).fit()


def _first_step(data: Path, run_dir: Path) -> dict[str, torch.Tensor]:
    """One global step of a fresh run: the generator's gradients, the latent gradients and table after it."""
    config = single_config(epochs=1)
    cases = read_nnunet_folder(data)
    trainer = Trainer(config, SegmentationCases(cases, training_transforms(config.data)), cases.case_ids, run_dir,
                      progress=False)
    batch = next(trainer._epoch_batches(trainer._loader()))
    trainer.train_step(batch)
    grads = {f"grad.{name}": p.grad.detach().clone() for name, p in trainer.model.generator.named_parameters()}
    return {**grads, "grad.latents": trainer.model.latents.weight.grad.clone(),
            **{f"value.{k}": v.clone() for k, v in trainer.model.learned_state().items()}}


def _rank(rank: int, world: int, port: int, data: Path, work: Path, epochs: tuple[int, ...]) -> None:
    """One process of a torchrun-like launch: its environment, its own output file, then training."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    out = open(work / f"rank{rank}.txt", "w", encoding="utf-8")
    os.dup2(out.fileno(), 1)
    os.dup2(out.fileno(), 2)
    sys.stdout = sys.stderr = out
    torch.set_num_threads(1)
    try:
        torch.save(_first_step(data, work / "step"), work / f"step{rank}.pt")
        for count in epochs:  # a second count resumes the run from its checkpoint
            _fit(data, work / "ddp", count, progress=True)
    finally:
        torch.distributed.destroy_process_group()
        out.flush()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launch(world: int, data: Path, work: Path, epochs: tuple[int, ...]) -> None:
    # fork: the children inherit the imported libraries, so the launch takes well under a second
    mp.start_processes(_rank, args=(world, _free_port(), data, work, epochs), nprocs=world, start_method="fork",
                       join=True)


def _close_to_scale(actual: torch.Tensor, expected: torch.Tensor, rel: float, what: str) -> None:
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * float(expected.abs().max()), msg=what)


def _adam_close(actual: torch.Tensor, expected: torch.Tensor, steps: int, what: str) -> None:
    """Weights after ``steps`` Adam steps from equal gradients (to float tolerance): Adam turns a
    gradient at rounding level (terms that cancel) into a step of up to lr either way, so a few
    weights may differ by up to 2 lr per step; all others agree to float tolerance. Each step's
    rounding differences reach the next step's gradients, so the share of such weights may grow
    with the steps (0.5 % after 6 steps on some CPUs); training on other batches moves a fifth
    or more of every generator tensor's weights apart."""
    diff = (actual - expected).abs()
    assert float(diff.max()) <= 2 * single_config().train.lr * steps, what
    share = float((diff > 1e-5).float().mean())
    assert share < 2e-3 * steps, f"{what}: {share:.2%} of the weights differ by more than 1e-5"


def test_two_gloo_processes_equal_one_process_and_resume(sphere_dataset, tmp_path):
    """Two processes, global batches of 5 out of 6 cases (shares of 3 + 2, then 1 + a stand-in)."""
    single_step = _first_step(sphere_dataset, tmp_path / "single_step")
    single = _fit(sphere_dataset, tmp_path / "single", epochs=3)
    _launch(2, sphere_dataset, tmp_path, epochs=(2, 3))

    # One step: the summed gradients are the global batch's, and both processes hold the same state.
    rank0, rank1 = torch.load(tmp_path / "step0.pt"), torch.load(tmp_path / "step1.pt")
    for key in single_step:
        if key.startswith("value.") or key == "grad.latents":
            assert torch.equal(rank0[key], rank1[key]), f"{key} differs between the processes"
        if key.startswith("value.generator"):
            _adam_close(rank0[key], single_step[key], 1, key)
        else:
            _close_to_scale(rank0[key], single_step[key], 1e-5, key)
    steps = torch.load(tmp_path / "step0.pt")["grad.latents"].abs().sum(1).gt(0).sum()
    assert steps == BATCH  # only the rows of the global batch have a gradient

    # The whole run, resumed after 2 of 3 epochs: latents, losses and log as one process's run.
    run, ref = tmp_path / "ddp", tmp_path / "single"
    latents, losses = rundir.read_latents_table(run, [f"case_{i:03d}" for i in range(6)])
    _close_to_scale(torch.from_numpy(latents).float(), single.latents, 1e-5, "latents")
    _close_to_scale(torch.from_numpy(losses).float(), single.sample_loss, 1e-5, "sample losses")
    state = rundir.load_training_state(run)
    assert state["epoch"] == 3 and state["global_step"] == 6
    assert torch.equal(state["latent_optimizer"]["steps"], torch.full((6,), 3))
    one, two = load_file(str(ref / rundir.MODEL_FILE)), load_file(str(run / rundir.MODEL_FILE))
    assert one.keys() == two.keys()
    for key in one:
        _adam_close(two[key], one[key], state["global_step"], key)
    with torch.no_grad():
        trained = TrainedRun.load(run, device="cpu"), TrainedRun.load(ref, device="cpu")
        cases = read_nnunet_folder(sphere_dataset)
        items = SegmentationCases(cases, training_transforms(single_config().data))
        image = torch.stack([items[i]["image"] for i in range(6)])
        logits = [r.model(image, torch.arange(6)) for r in trained]
    _close_to_scale(logits[0], logits[1], 1e-4, "logits of every training case under its own latent")

    doc = json.loads((run / rundir.CONFIG_FILE).read_text())
    assert doc["world_size"] == 2
    assert json.loads((ref / rundir.CONFIG_FILE).read_text())["world_size"] == 1
    with open(run / rundir.LOG_FILE, newline="") as handle:
        log = list(csv.DictReader(handle))
    assert [row["world_size"] for row in log] == ["2", "2", "2"]
    for row, expected in zip(log, single.history):
        assert float(row["loss"]) == pytest.approx(expected["loss"], rel=1e-5)

    assert (tmp_path / "rank1.txt").read_text() == ""  # no progress bar, no message
    assert "training" in (tmp_path / "rank0.txt").read_text()  # rank 0's progress bar


@pytest.mark.parametrize("size, world, expected", [
    (5, 2, [(0, 3), (3, 5)]), (4, 2, [(0, 2), (2, 4)]), (1, 2, [(0, 1), (1, 1)]), (7, 3, [(0, 3), (3, 5), (5, 7)]),
])
def test_shares_cover_the_global_batch_in_order(size, world, expected):
    assert [shard_bounds(size, rank, world) for rank in range(world)] == expected


def test_context_from_torchrun_environment():
    assert DistributedContext.from_environment({}) == DistributedContext(0, 1, 0)
    context = DistributedContext.from_environment({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (context.rank, context.world_size, context.local_rank, context.is_main) == (3, 4, 1, False)
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        DistributedContext.from_environment({"WORLD_SIZE": "two"})
    with pytest.raises(ValueError, match="rank must lie in"):
        DistributedContext(2, 2, 0)
    with pytest.raises(ValueError, match="names one GPU, but 2 processes"):
        DistributedContext(0, 2, 0).device("cuda:1")
    assert DistributedContext(1, 2, 1).device("cpu") == torch.device("cpu")


@pytest.mark.slow  # two fresh Python processes import torch and MONAI (about 20 s on 2 cores)
def test_hypersort_train_under_torchrun_equals_one_process(sphere_dataset, tmp_path, monkeypatch):
    """The real launcher: ``torchrun --nproc-per-node 2 -m HyperSORTLib.cli train`` on two CPU processes."""
    from HyperSORTLib.cli import main

    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(single_config(epochs=2).to_dict()))
    monkeypatch.setenv("HYPERSORT_CACHE_DIR", str(tmp_path / "cache"))

    def arguments(out: Path) -> list[str]:
        return ["train", "--data", str(sphere_dataset), "--out", str(out), "--config", str(config_file)]

    assert main(arguments(tmp_path / "single") + ["--no-progress"]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYPERSORT_CACHE_DIR": str(tmp_path / "cache2")}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "--log-dir", str(tmp_path / "logs"), "--redirects", "3", "-m", "HyperSORTLib.cli",
                           *arguments(tmp_path / "ddp")], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    outputs = {path.parent.name + "/" + path.name: path.read_text() for path in (tmp_path / "logs").rglob("std*.log")}
    rank0 = "".join(text for name, text in outputs.items() if name.startswith("0/"))
    rank1 = "".join(text for name, text in outputs.items() if name.startswith("1/"))
    assert len(outputs) == 4, sorted(outputs)
    assert "in 2 processes" in rank0 and "training" in rank0  # its summary and its progress bar
    assert rank1 == "", rank1
    assert json.loads((tmp_path / "ddp" / rundir.CONFIG_FILE).read_text())["world_size"] == 2
    one = load_file(str(tmp_path / "single" / rundir.MODEL_FILE))
    two = load_file(str(tmp_path / "ddp" / rundir.MODEL_FILE))
    for key in one:
        _adam_close(two[key], one[key], 4, key)
    ids = [f"case_{i:03d}" for i in range(6)]
    latents = [torch.from_numpy(rundir.read_latents_table(tmp_path / run, ids)[0]) for run in ("single", "ddp")]
    _close_to_scale(latents[1], latents[0], 1e-5, "latents")
