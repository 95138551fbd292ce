"""Training a robust-training baseline: one UNet, HyperSORT's data, budget, checkpoints and checks.

:class:`BaselineTrainer` is a :class:`~HyperSORTLib.training.trainer.Trainer` whose model is a
:class:`~HyperSORTLib.model.plain.PlainUNetModel`: the epoch loop, the sample order of each
epoch, the patches, the run directory, the resume checks (case list, configuration, data
fingerprint, method) and the callbacks are the trainer's own, so a baseline and HyperSORT given
the same :class:`~HyperSORTLib.config.RunConfig` see the same batches in the same order. Only
the step differs, per method:

* ``unet``: soft Dice + cross-entropy (the configuration's weights);
* ``ce-threshold``: cross-entropy alone; at inference each image's probabilities are
  thresholded at its soft-Dice threshold t* (the run records the decision);
* ``mcpm``: mask-weighted cross-entropy, the mask network trained on a clean meta set
  (:mod:`HyperSORTLib.baselines.mcpm`);
* ``pint``: the EMA-teacher loss of :mod:`HyperSORTLib.baselines.pint` after
  ``warmup_epochs`` of cross-entropy.

The per-sample loss recorded in ``latents.csv`` is the step's training objective; for ``unet``
it is the Dice + CE loss that the small-loss ranking reads.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

from HyperSORTLib import rundir
from HyperSORTLib.baselines import mcpm, pint
from HyperSORTLib.baselines.config import BaselineConfig
from HyperSORTLib.config import RunConfig
from HyperSORTLib.model.plain import PlainUNetModel
from HyperSORTLib.training.losses import DiceCELoss
from HyperSORTLib.training.optim import adam
from HyperSORTLib.training.trainer import Callback, Trainer, _collate


class BaselineTrainer(Trainer):
    """Train one baseline into a resumable run directory that ``hypersort segment`` reads.

    Args:
        config: the run configuration shared with HyperSORT (``model.hyper`` is unused but for
            the latent dimension of the constant table).
        dataset, case_ids, run_dir, callbacks, progress, data_source, accept_data_change: as
            for :class:`~HyperSORTLib.training.trainer.Trainer`.
        baseline: the method and its settings.
        meta_dataset: the clean meta set of ``mcpm`` (items like ``dataset``'s); required for it.
        meta_case_ids: ids of the meta cases, recorded in ``config.json``.

    Example:
        >>> trainer = BaselineTrainer(cfg, dataset, ids, "runs/pint", BaselineConfig("pint"))  # doctest: +SKIP
        >>> trainer.fit().history[-1]["loss"]  # doctest: +SKIP
    """

    def __init__(self, config: RunConfig, dataset: Dataset, case_ids: Sequence[str], run_dir: str | Path,
                 baseline: BaselineConfig = BaselineConfig(), meta_dataset: Dataset | None = None,
                 meta_case_ids: Sequence[str] = (), callbacks: Sequence[Callback] = (), progress: bool = True,
                 data_source: dict[str, Any] | None = None, accept_data_change: bool = False) -> None:
        if baseline.method == "mcpm" and (meta_dataset is None or len(meta_dataset) == 0):
            raise ValueError("The mcpm baseline needs a clean meta set (--meta-data); none was given.")
        self.baseline = baseline
        self.meta_dataset = meta_dataset if baseline.method == "mcpm" else None
        self.meta_case_ids = tuple(meta_case_ids) if self.meta_dataset is not None else ()
        if self.meta_dataset is not None and self.meta_case_ids and len(self.meta_case_ids) != len(meta_dataset):
            raise ValueError(f"{len(self.meta_case_ids)} meta case ids for a meta set of {len(meta_dataset)} items.")
        super().__init__(config, dataset, case_ids, run_dir, callbacks, progress, data_source, accept_data_change)

    # ----------------------------------------------------------------------------- model
    def _build_model(self) -> None:
        train = self.config.train
        self.model = PlainUNetModel(self.config.model, self.case_ids, train.seed,
                                    self.baseline.decision).to(self.device)
        self.optimizer = adam(self.model.unet.parameters(), lr=train.lr, betas=train.betas)
        self.loss_fn = DiceCELoss.from_config(train)
        self.mask_net = self.mask_optimizer = self.teacher = None
        if self.baseline.method == "mcpm":
            settings = self.baseline.mcpm
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(train.seed + 2)
                self.mask_net = mcpm.MaskNet(settings.mask_hidden, settings.mask_init_weight).to(self.device)
            self.mask_optimizer = adam(self.mask_net.parameters(), lr=settings.mask_lr, betas=(0.9, 0.999))
        elif self.baseline.method == "pint":
            self.teacher = copy.deepcopy(self.model.unet).requires_grad_(False)

    def _setup_distributed(self) -> None:
        raise ValueError(f"The {self.baseline.method} baseline trains in one process, but {self.dist.world_size} "
                         f"were started (torchrun); run hypersort baseline without torchrun.")

    def method_record(self) -> dict[str, Any]:
        record = self.baseline.record()
        if self.meta_dataset is not None:
            case_list = getattr(self.meta_dataset, "case_list", None)
            record["meta_cases"] = list(self.meta_case_ids)
            record["meta_fingerprint"] = rundir.data_fingerprint(case_list) if case_list is not None else {}
        return record

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        state = {
            "format": "hypersort-baseline-checkpoint",
            "epoch": self.epoch,
            "global_step": self.global_step,
            "model": {k: v.detach().cpu() for k, v in self.model.learned_state().items()},
            "optimizer": self.optimizer.state_dict(),
            "sample_loss": self.sample_loss.clone(),
            "history": list(self.history),
        }
        if self.mask_net is not None:
            state["mask_net"] = {k: v.detach().cpu() for k, v in self.mask_net.state_dict().items()}
            state["mask_optimizer"] = self.mask_optimizer.state_dict()
        if self.teacher is not None:
            state["teacher"] = {k: v.detach().cpu() for k, v in self.teacher.state_dict().items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        source = str(self.run_dir / rundir.CHECKPOINT_FILE)
        if state.get("format") != "hypersort-baseline-checkpoint":
            raise rundir.RunDirectoryError(f"{source} is not a baseline checkpoint (format {state.get('format')!r}).")
        self.model.load_learned_state(state["model"], source=source)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.mask_net is not None:
            self.mask_net.load_state_dict(state["mask_net"])
            self.mask_optimizer.load_state_dict(state["mask_optimizer"])
        if self.teacher is not None:
            self.teacher.load_state_dict(state["teacher"])
        self.sample_loss = state["sample_loss"].clone()
        self.history = list(state["history"])
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])

    # ----------------------------------------------------------------------------- step
    def _autocast(self) -> Any:
        return (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype
                else contextlib.nullcontext())

    def train_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        rows = torch.as_tensor(batch["index"], dtype=torch.long)
        image = batch["image"].to(self.device, non_blocking=True)
        label = batch["label"].to(self.device, non_blocking=True).long()
        method = self.baseline.method
        if method == "mcpm":
            meta_image, meta_label = self._meta_batch(len(rows))
            mcpm.meta_step(self.model.unet, self.mask_net, self.mask_optimizer, image, label, meta_image,
                           meta_label, self.baseline.mcpm.virtual_lr, self._meta_loss)
        with self._autocast():
            logits = self.model.unet(image)
        terms = self.loss_fn(logits, label)
        if method == "unet":
            objective = terms.total
        elif method == "ce-threshold":
            objective = terms.ce
        elif method == "mcpm":
            objective = mcpm.weighted_ce(logits, label, self.mask_net)
        else:
            objective = self._pint_objective(image, logits, label, terms.ce)
        self.optimizer.zero_grad(set_to_none=True)
        objective.mean().backward()
        self.optimizer.step()
        if self.teacher is not None:
            pint.ema_update(self.teacher, self.model.unet, pint.ema_decay_at(self.global_step,
                                                                             self.baseline.pint.ema_decay))
        self.global_step += 1
        return {"rows": rows, "total": objective.detach().cpu(), "dice": terms.dice.detach().cpu(),
                "ce": terms.ce.detach().cpu(), "l1": torch.zeros(len(rows))}

    def _meta_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(logits, labels).total

    def _meta_batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The meta cases of this step: consecutive ones, cycling, from the step number (resumable)."""
        count = len(self.meta_dataset)
        keyed = getattr(self.meta_dataset, "accepts_epoch_keys", False)
        items = []
        for j in range(size):
            index = (self.global_step * size + j) % count
            key = (index, self.global_step, self.config.train.seed) if keyed else index
            items.append(self.meta_dataset[key])
        batch = _collate(items)
        return batch["image"].to(self.device), batch["label"].to(self.device).long()

    def _pint_objective(self, image: torch.Tensor, logits: torch.Tensor, label: torch.Tensor,
                        ce: torch.Tensor) -> torch.Tensor:
        settings = self.baseline.pint
        if self.epoch < settings.warmup_epochs:
            return ce
        generator = torch.Generator().manual_seed(self.config.train.seed * 1_000_003 + self.global_step)
        with self._autocast():
            pseudo, uncertainty = pint.teacher_prediction(self.teacher, image, settings.perturbations,
                                                          settings.noise_std, generator)
        return pint.pint_loss(logits, label, pseudo, uncertainty, (settings.voxel_weight, settings.slice_weight))
