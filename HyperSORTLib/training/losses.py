"""Per-sample segmentation loss: soft Dice + cross-entropy, one value per sample.

A class absent from a sample's label has no soft Dice to speak of: the plain formula gives a loss
of 1 whatever the network predicts, and no gradient, so the Dice term never pushes a network to
leave out an organ that an annotator left out (only the cross-entropy, averaged over every voxel,
pushes, about organ volume / patch volume times as hard). With ``absent_class_volume`` > 0 such a
class instead costs ``P / (P + a N)``: ``P`` its predicted (soft) volume, ``N`` the voxels of the
patch, ``a`` the given fraction. That is the Dice-scale penalty false positives of an organ of
``a N`` voxels would meet, so "this annotator omits the spleen" is learnt about as quickly as
"this annotator draws the liver larger". ``0`` is the plain formula.

Per-sample values (not just the batch mean) are kept because each sample's own loss under its
own latent is one of the signals the latent-space analysis ranks samples by.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss


class DiceCELoss:
    """Soft Dice (softmax, one-hot labels) + cross-entropy, reduced per sample.

    Args:
        dice_weight: weight of the soft Dice term.
        ce_weight: weight of the cross-entropy term.
        include_background: whether the Dice averages over the background class.
        absent_class_volume: fraction of the patch that stands for the volume of a class absent
            from a sample's label (see the module docstring); 0 for the plain soft Dice.

    Example:
        >>> loss = DiceCELoss()
        >>> logits, labels = torch.zeros(2, 3, 4, 4, 4), torch.zeros(2, 1, 4, 4, 4, dtype=torch.long)
        >>> loss(logits, labels).total.shape
        torch.Size([2])
    """

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0, include_background: bool = False,
                 absent_class_volume: float = 0.0) -> None:
        if not 0.0 <= absent_class_volume < 1.0:
            raise ValueError(f"absent_class_volume must lie in [0, 1); found {absent_class_volume!r}")
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight
        self.include_background = include_background
        self.absent_class_volume = float(absent_class_volume)
        self.dice = DiceLoss(include_background=include_background, to_onehot_y=True, softmax=True,
                             reduction="none")

    @classmethod
    def from_config(cls, train: Any) -> "DiceCELoss":
        """The loss a run's ``TrainConfig`` trains with."""
        return cls(train.dice_weight, train.ce_weight, train.include_background, train.absent_class_volume)

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> "LossTerms":
        """``logits`` [B, K, ...] (any float dtype), ``labels`` [B, 1, ...] integer class ids."""
        logits, labels = logits.float(), labels.long()
        if labels.shape[1:] != (1, *logits.shape[2:]):
            raise ValueError(f"Labels of shape {tuple(labels.shape)} do not match logits "
                             f"{tuple(logits.shape)}; expected [B, 1, {', '.join(map(str, logits.shape[2:]))}].")
        dice = self.dice(logits, labels).flatten(1)  # [B, classes scored]
        if self.absent_class_volume > 0:
            dice = self._absent_classes(dice, logits, labels)
        dice = dice.mean(1)
        ce = F.cross_entropy(logits, labels[:, 0], reduction="none").flatten(1).mean(1)
        return LossTerms(dice=dice, ce=ce, total=self.dice_weight * dice + self.ce_weight * ce)

    def _absent_classes(self, dice: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The Dice loss with every class absent from a sample's label costing ``P / (P + a N)``."""
        first = 0 if self.include_background else 1
        batch, n_classes = logits.shape[:2]
        flat = labels.flatten(1)
        # Voxels per (sample, class) in one bincount, without a [B, voxels, classes] mask.
        keys = flat + n_classes * torch.arange(batch, device=flat.device)[:, None]
        counts = torch.bincount(keys.flatten(), minlength=batch * n_classes).view(batch, n_classes)
        present = counts[:, first:] > 0  # [B, classes scored]
        if bool(present.all()):
            return dice
        predicted = torch.softmax(logits, 1)[:, first:].flatten(2).sum(2)  # [B, classes scored]
        reference = self.absent_class_volume * flat.shape[1]
        return torch.where(present, dice, predicted / (predicted + reference))


class LossTerms:
    """Per-sample loss components, each a tensor [B]."""

    __slots__ = ("dice", "ce", "total")

    def __init__(self, dice: torch.Tensor, ce: torch.Tensor, total: torch.Tensor) -> None:
        self.dice, self.ce, self.total = dice, ce, total
