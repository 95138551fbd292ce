"""Joint training of the weight generator and the latent table.

One step: look up the batch's latents, generate one UNet per sample, run them all in one
batched pass, and minimise soft Dice + cross-entropy + L1(z). The generator has its own Adam;
the latents have one Adam per row (:class:`~HyperSORTLib.model.latent.RowwiseAdam`), so a
latent moves only when its sample is in the batch.

The sample order of epoch ``e`` depends only on ``(seed, e)``, and a checkpoint holds the
complete optimisation state, so a run resumed from its last checkpoint ends exactly where an
uninterrupted run would (bit for bit on CPU).

Under ``torchrun`` the same global batches are split across the processes
(:mod:`HyperSORTLib.training.distributed`): the result equals a single-process run with the same
``batch_size`` to float tolerance, and only rank 0 writes the run directory and shows progress.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from HyperSORTLib import rundir
from HyperSORTLib.config import RunConfig, config_hash_fields
from HyperSORTLib.model.functional import choose_forward
from HyperSORTLib.model.hypersort import HyperSORTModel
from HyperSORTLib.model.latent import RowwiseAdam
from HyperSORTLib.training.distributed import (DistributedContext, all_reduce_sum, barrier, init_process_group,
                                                shard_bounds, sum_allreduce_hook)
from HyperSORTLib.training.losses import DiceCELoss
from HyperSORTLib.training.optim import adam


class EpochBatchSampler(Sampler[list[int]]):
    """Shuffled batches whose order depends only on ``(seed, epoch)``; the last batch may be short."""

    def __init__(self, num_samples: int, batch_size: int, seed: int) -> None:
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.num_samples, generator=rng).tolist()
        for start in range(0, self.num_samples, self.batch_size):
            yield order[start:start + self.batch_size]

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)


class Callback:
    """Hooks called by :class:`Trainer`; override the ones you need."""

    def on_train_start(self, trainer: "Trainer") -> None:
        """Before the first epoch of this call to ``fit`` (also after a resume)."""

    def on_epoch_end(self, trainer: "Trainer", stats: dict[str, Any]) -> None:
        """After each epoch, with that epoch's statistics (``trainer.epoch`` is completed epochs)."""

    def on_train_end(self, trainer: "Trainer") -> None:
        """After the last epoch."""


class CheckpointCallback(Callback):
    """Write the resumable checkpoint, the weights, the latent table and the log.

    Saves every ``checkpoint_every`` epochs and once at the end, unless that epoch is already
    saved (the last epoch of a run, or a finished run that is only reopened).
    """

    def __init__(self) -> None:
        self.saved_epoch: int | None = None

    def on_train_start(self, trainer: "Trainer") -> None:
        self.saved_epoch = trainer.epoch if trainer.epoch > 0 else None  # a resumed checkpoint is on disk

    def on_epoch_end(self, trainer: "Trainer", stats: dict[str, Any]) -> None:
        if trainer.epoch % trainer.config.train.checkpoint_every == 0:
            self._save(trainer)

    def on_train_end(self, trainer: "Trainer") -> None:
        self._save(trainer)

    def _save(self, trainer: "Trainer") -> None:
        if self.saved_epoch != trainer.epoch:
            trainer.save()
            self.saved_epoch = trainer.epoch


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns."""

    run_dir: Path
    epochs: int
    history: list[dict[str, Any]] = field(default_factory=list)
    latents: torch.Tensor | None = None
    sample_loss: torch.Tensor | None = None
    resumed_from: int | None = None


class Trainer:
    """Train a :class:`HyperSORTModel` on a dataset, writing a resumable run directory.

    Args:
        config: the run configuration.
        dataset: items ``{"image": [C, X, Y, Z], "label": [1, X, Y, Z], "index": row}``;
            ``case_ids[i]`` names item ``i``.
        case_ids: one id per dataset item, in order.
        run_dir: where the run is written; an existing checkpoint there is resumed.
        callbacks: extra hooks (a :class:`CheckpointCallback` is always added first).
        progress: show a progress bar with loss and speed.
        data_source: where the cases came from (``{"path", "format", ...}``), recorded in
            ``config.json`` so ``hypersort analyze`` can reload them.
        accept_data_change: on resume, accept a dataset whose files under the run's case ids
            differ from the recorded fingerprint, or that lives elsewhere; the change is recorded
            in ``config.json`` (``data_changes``). Without it such a resume is an error.
        distributed: this process's place in a data-parallel run; ``None`` reads it from the
            ``torchrun`` environment (one process without it). With several processes each
            loads and trains its share of every global batch, callbacks run on every process,
            and only rank 0 writes files and shows a progress bar.

    Example:
        >>> trainer = Trainer(cfg, dataset, dataset.case_list.case_ids, "runs/demo")  # doctest: +SKIP
        >>> result = trainer.fit()  # doctest: +SKIP
    """

    def __init__(self, config: RunConfig, dataset: Dataset, case_ids: Sequence[str], run_dir: str | Path,
                 callbacks: Sequence[Callback] = (), progress: bool = True,
                 data_source: dict[str, Any] | None = None, accept_data_change: bool = False,
                 distributed: DistributedContext | None = None) -> None:
        if len(case_ids) != len(dataset):
            raise ValueError(f"{len(case_ids)} case ids for a dataset of {len(dataset)} items.")
        self.config = config
        self.dataset = dataset
        self.case_ids = tuple(case_ids)
        self.run_dir = Path(run_dir)
        self.callbacks: list[Callback] = [CheckpointCallback(), *callbacks]
        self.dist = DistributedContext.from_environment() if distributed is None else distributed
        self.progress = progress and self.dist.is_main
        self.data_source = dict(data_source or {})
        self.accept_data_change = accept_data_change
        case_list = getattr(dataset, "case_list", None)
        self.data_fingerprint = rundir.data_fingerprint(case_list) if case_list is not None else {}
        train = config.train
        self.device = self.dist.device(train.device)
        self._build_model()
        if isinstance(self.model, HyperSORTModel):
            self.model.forward_strategy = choose_forward(train.forward, self.device, config.model.unet.channels)
        self._generator: torch.nn.Module | None = None  # what the step generates weights with
        if self.dist.is_distributed:
            self._setup_distributed()
        self.sampler = EpochBatchSampler(len(dataset), train.batch_size, train.seed)
        self.epoch = 0
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self.sample_loss = torch.full((len(dataset),), float("nan"))
        self.amp_dtype = self._amp_dtype()

    # Hooks for trainers of other models on the same data, checkpoints and resume checks
    # (the robust-training baselines): the model, its optimisers and loss, and the method
    # recorded in config.json.
    def _build_model(self) -> None:
        train = self.config.train
        self.model = HyperSORTModel(self.config.model, self.case_ids, train.latent_init_std,
                                    train.seed).to(self.device)
        self.hyper_optimizer = adam(self.model.generator.parameters(), lr=train.lr, betas=train.betas)
        self.latent_optimizer = RowwiseAdam(self.model.latents.weight, lr=train.effective_latent_lr,
                                            betas=train.latent_betas, scale=train.latent_scale)
        self.loss_fn = DiceCELoss.from_config(train)

    def _setup_distributed(self) -> None:
        """Wrap the generator for a data-parallel run (gradients summed over processes)."""
        from torch.nn.parallel import DistributedDataParallel

        init_process_group(self.dist)
        ids = [self.device.index] if self.device.type == "cuda" else None
        ddp = DistributedDataParallel(self.model.generator, device_ids=ids, broadcast_buffers=False)
        ddp.register_comm_hook(None, sum_allreduce_hook)
        self._generator = ddp

    def method_record(self) -> dict[str, Any] | None:
        """What ``config.json`` records as the training method (``None``: HyperSORT)."""
        return None

    def _amp_dtype(self) -> torch.dtype | None:
        if not (self.config.train.amp and self.device.type == "cuda"):
            return None
        # bfloat16 needs no loss scaling; older GPUs without it train in full precision.
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": "hypersort-checkpoint",
            "epoch": self.epoch,
            "global_step": self.global_step,
            "model": {k: v.detach().cpu() for k, v in self.model.learned_state().items()},
            "hyper_optimizer": self.hyper_optimizer.state_dict(),
            "latent_optimizer": {k: v.cpu() for k, v in self.latent_optimizer.state_dict().items()},
            "sample_loss": self.sample_loss.clone(),
            "history": list(self.history),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_learned_state(state["model"], source=str(self.run_dir / rundir.CHECKPOINT_FILE))
        self.hyper_optimizer.load_state_dict(state["hyper_optimizer"])
        self.latent_optimizer.load_state_dict(state["latent_optimizer"])
        self.sample_loss = state["sample_loss"].clone()
        self.history = list(state["history"])
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])

    def save(self) -> None:
        """Write the checkpoint and the files derived from it (each atomically); in a distributed
        run rank 0 writes and every process waits until it has."""
        if self.dist.is_main:
            self._write_files()
        barrier(self.dist)

    def _write_files(self) -> None:
        rundir.save_model_weights(self.run_dir, self.model.learned_state(), self.epoch)
        rundir.write_latents_csv(self.run_dir, self.case_ids, self.model.latents.weight.detach().cpu(),
                               self.sample_loss)
        rundir.write_train_log(self.run_dir, self.history)
        rundir.save_training_state(self.run_dir, self.state_dict())

    def _resume(self) -> int | None:
        state = rundir.load_training_state(self.run_dir)
        if state is None:
            return None
        saved_config, saved_ids, doc = rundir.read_run_config(self.run_dir)
        if list(saved_ids) != list(self.case_ids):
            raise rundir.RunDirectoryError(
                f"{self.run_dir} holds a run on a different case list ({len(saved_ids)} cases); "
                f"choose a new output folder or delete that run.")
        saved_method = rundir.run_method(doc)
        method = self.method_record() or {"name": rundir.METHOD_HYPERSORT}
        if saved_method != method:
            raise rundir.RunDirectoryError(
                f"{self.run_dir} holds a run of another training method ({saved_method}, not {method}); "
                f"choose a new output folder or delete that run.")
        old, new = config_hash_fields(saved_config), config_hash_fields(self.config)
        if old != new:
            diffs = _dict_diff(old, new)
            raise rundir.RunDirectoryError(
                f"{self.run_dir} holds a run with a different configuration ({'; '.join(diffs[:5])}); "
                f"only epochs, checkpoint_every, num_workers, device, amp and forward may change on resume. "
                f"Choose a new output folder or delete that run.")
        self._check_data(doc)
        if int(doc.get("world_size", 1)) != self.dist.world_size and self.dist.is_main:
            self._write_config(rundir.read_run_config(self.run_dir)[2])  # _check_data may have rewritten it
        self.load_state_dict(state)
        return self.epoch

    def _write_config(self, doc: dict[str, Any] | None = None, data_changes: Sequence[dict[str, Any]] | None = None,
                      ) -> None:
        """Write ``config.json`` (rank 0 only), keeping the creation time and data record of ``doc``."""
        if not self.dist.is_main:
            return
        doc = doc or {}
        rundir.write_run_config(self.run_dir, self.config, self.case_ids, self.data_source or doc.get("data_source"),
                                self.data_fingerprint or doc.get("data_fingerprint"),
                                doc.get("data_changes", []) if data_changes is None else data_changes,
                                created=doc.get("created"), method=self.method_record(),
                                world_size=self.dist.world_size, software=doc.get("software"))

    def _check_data(self, doc: dict[str, Any]) -> None:
        """Refuse (or, when accepted, record) a resume on other files or another dataset folder."""
        config_path = self.run_dir / rundir.CONFIG_FILE
        changes = rundir.fingerprint_changes(doc.get("data_fingerprint") or {}, self.data_fingerprint)
        old_path = (doc.get("data_source") or {}).get("path")
        new_path = self.data_source.get("path")
        moved = bool(old_path and new_path and Path(old_path).resolve() != Path(new_path).resolve())
        if not changes and not moved:
            return
        what = []
        if moved:
            what.append(f"it was trained on {old_path}, not {new_path}")
        if changes:
            what.append(f"{len(changes)} case(s) have other files: {rundir.describe_changes(changes)}")
        if not self.accept_data_change:
            raise rundir.RunDirectoryError(
                f"Cannot resume {self.run_dir} ({config_path}): {'; '.join(what)}. Pass --accept-data-change to "
                f"continue on this data (recorded in {rundir.CONFIG_FILE}), or choose a new output folder.")
        record = {"time": rundir.utc_now(), "from": old_path, "to": new_path, "changed_cases": len(changes),
                  "examples": changes[:10]}
        self._write_config(doc, [*doc.get("data_changes", []), record])

    # ----------------------------------------------------------------------------- training
    def train_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """One optimisation step on a batch; returns its per-sample loss terms (detached).

        In a distributed run ``batch`` is this process's share of a global batch (see
        :meth:`_epoch_batches`) and the terms returned are the global batch's.
        """
        if self.dist.is_distributed:
            return self._distributed_step(batch)
        rows, terms, l1 = self._forward_terms(batch)
        loss = (terms.total + self.config.train.l1_weight * l1).mean()
        self.hyper_optimizer.zero_grad(set_to_none=True)
        self.latent_optimizer.zero_grad()
        loss.backward()
        self.hyper_optimizer.step()
        if self.latents_learn:
            self.latent_optimizer.step(rows)
        self.global_step += 1
        return {"rows": rows, "total": terms.total.detach().cpu(), "dice": terms.dice.detach().cpu(),
                "ce": terms.ce.detach().cpu(), "l1": l1.detach().cpu()}

    @property
    def latents_learn(self) -> bool:
        """Whether this epoch updates the latents (not during ``train.latent_warmup_epochs``)."""
        return self.epoch >= self.config.train.latent_warmup_epochs

    def _forward_terms(self, batch: dict[str, Any],
                       generator: torch.nn.Module | None = None) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """The batch's rows, its per-sample loss terms under the generated UNets, and the L1 norm of
        its latents (``generator``: the DDP-wrapped generator of a distributed run)."""
        rows = torch.as_tensor(batch["index"], dtype=torch.long)
        image = batch["image"].to(self.device, non_blocking=True)
        label = batch["label"].to(self.device, non_blocking=True).long()
        autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype
                    else contextlib.nullcontext())
        with autocast:
            z = self.model.latents(rows)
            logits = self.model.forward_latents(image, z, generator=generator)
        return rows, self.loss_fn(logits, label), z.float().abs().sum(dim=1)

    def _distributed_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """This process's share of a global step; the latent rows and loss terms of the whole
        global batch are summed over processes so that every process applies the same update."""
        global_rows = torch.as_tensor(batch["global_index"], dtype=torch.long)
        size = len(global_rows)
        start, stop = shard_bounds(size, self.dist.rank, self.dist.world_size)
        rows, terms, l1 = self._forward_terms(batch, self._generator)
        # This share of the global mean; an empty share runs one stand-in sample at weight 0 so
        # that every process takes part in the gradient reduction.
        weight = 0.0 if start == stop else 1.0 / size
        loss = ((terms.total + self.config.train.l1_weight * l1) * weight).sum()
        self.hyper_optimizer.zero_grad(set_to_none=True)
        self.latent_optimizer.zero_grad()
        loss.backward()  # DDP sums the generator's gradients over processes
        table = self.model.latents.weight
        dim = table.shape[1]
        shared = torch.zeros(size, dim + 4, device=table.device, dtype=torch.float32)
        if stop > start:
            shared[start:stop, :dim] = table.grad[rows.to(table.device)].float()
            shared[start:stop, dim:] = torch.stack([terms.total, terms.dice, terms.ce, l1], 1).detach().float()
        all_reduce_sum(shared)
        grad = torch.zeros_like(table)
        grad[global_rows.to(table.device)] = shared[:, :dim].to(table.dtype)
        table.grad = grad
        self.hyper_optimizer.step()
        if self.latents_learn:
            self.latent_optimizer.step(global_rows)
        self.global_step += 1
        terms_out = shared[:, dim:].cpu()
        return {"rows": global_rows, "total": terms_out[:, 0], "dice": terms_out[:, 1], "ce": terms_out[:, 2],
                "l1": terms_out[:, 3]}

    def _epoch_batches(self, loader: DataLoader) -> Iterator[dict[str, Any]]:
        """The loader's batches; in a distributed run each with its global batch's rows (``global_index``)."""
        if not self.dist.is_distributed:
            yield from loader
            return
        for global_rows, batch in zip(self.sampler, loader):
            batch["global_index"] = global_rows
            yield batch

    def _loader(self) -> DataLoader:
        workers = self.config.train.num_workers
        keyed = getattr(self.dataset, "accepts_epoch_keys", False)
        batches: Sampler = self.sampler
        if self.dist.is_distributed:
            batches = _ShareOfBatches(self.sampler, self.dist)
        if keyed:
            batches = _EpochKeyedBatches(batches, self.sampler, self.config.train.seed)
        return DataLoader(self.dataset, batch_sampler=batches,
                          num_workers=workers, collate_fn=_collate, pin_memory=self.device.type == "cuda",
                          persistent_workers=workers > 0)

    def fit(self) -> TrainResult:
        """Train until ``config.train.epochs``, resuming from the run directory's checkpoint."""
        if self.dist.is_main:
            rundir.ensure_writable(self.run_dir)  # a read-only folder fails now, not after the first epoch
        barrier(self.dist)
        resumed_from = self._resume()
        if resumed_from is None:
            self._write_config()
        barrier(self.dist)  # config.json is written before any process trains
        total_epochs = self.config.train.epochs
        self.model.train()
        for callback in self.callbacks:
            callback.on_train_start(self)
        loader = self._loader()
        steps = len(self.sampler)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total_epochs * steps, initial=min(self.epoch, total_epochs) * steps, unit="step",
                       desc="training", dynamic_ncols=True)
        try:
            while self.epoch < total_epochs:
                stats = self._run_epoch(loader, bar)
                self.history.append(stats)
                for callback in self.callbacks:
                    callback.on_epoch_end(self, stats)
        finally:
            if bar is not None:
                bar.close()
        for callback in self.callbacks:
            callback.on_train_end(self)
        return TrainResult(self.run_dir, self.epoch, list(self.history), self.model.latents.weight.detach().cpu(),
                           self.sample_loss.clone(), resumed_from)

    def _run_epoch(self, loader: DataLoader, bar: Any) -> dict[str, Any]:
        self.sampler.set_epoch(self.epoch)
        start = time.perf_counter()
        sums = {"total": 0.0, "dice": 0.0, "ce": 0.0, "l1": 0.0}
        seen = 0
        for batch in self._epoch_batches(loader):
            out = self.train_step(batch)
            self.sample_loss[out["rows"]] = out["total"]
            count = len(out["rows"])
            seen += count
            for key in sums:
                sums[key] += float(out[key].sum())
            if bar is not None:
                elapsed = time.perf_counter() - start
                bar.set_postfix(epoch=self.epoch + 1, loss=f"{sums['total'] / seen:.4f}",
                                samples_s=f"{seen / max(elapsed, 1e-9):.2f}")
                bar.update(1)
        self.epoch += 1
        seconds = time.perf_counter() - start
        return {"epoch": self.epoch, "loss": sums["total"] / seen, "dice_loss": sums["dice"] / seen,
                "ce_loss": sums["ce"] / seen, "latent_l1": sums["l1"] / seen, "seconds": round(seconds, 3),
                "samples_per_s": round(seen / max(seconds, 1e-9), 3), "world_size": self.dist.world_size}


class _ShareOfBatches(Sampler[list[int]]):
    """This process's contiguous share of every batch of an :class:`EpochBatchSampler`.

    An empty share (a global batch smaller than the number of processes) is the batch's first
    sample, which the step weighs 0 (see :meth:`Trainer._distributed_step`).
    """

    def __init__(self, sampler: EpochBatchSampler, context: DistributedContext) -> None:
        self.sampler, self.context = sampler, context

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.sampler:
            start, stop = shard_bounds(len(batch), self.context.rank, self.context.world_size)
            yield batch[start:stop] if stop > start else batch[:1]

    def __len__(self) -> int:
        return len(self.sampler)


class _EpochKeyedBatches(Sampler[list[tuple[int, int, int]]]):
    """The batches of an :class:`EpochBatchSampler` (or of a process's share of them) as item keys
    ``(index, epoch, seed)``.

    Datasets that place patches at random (``PreprocessedCases``) draw from these three only,
    so the patches of epoch ``e`` are the same whether or not the run was interrupted before it,
    and whichever worker process serves them. Used for datasets whose ``accepts_epoch_keys``
    attribute is true; others receive plain indices.
    """

    def __init__(self, batches: Sampler[list[int]], sampler: EpochBatchSampler, seed: int) -> None:
        self.batches, self.sampler, self.seed = batches, sampler, seed

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        epoch = self.sampler.epoch
        for batch in self.batches:
            yield [(i, epoch, self.seed) for i in batch]

    def __len__(self) -> int:
        return len(self.batches)


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "image": torch.stack([it["image"] for it in items]),
        "label": torch.stack([it["label"] for it in items]),
        "index": [it["index"] for it in items],
        "case_id": [it["case_id"] for it in items],
    }


def _dict_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += _dict_diff(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    return [] if old == new else [f"{prefix}: was {old!r}, now {new!r}"]
