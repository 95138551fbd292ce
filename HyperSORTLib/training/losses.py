"""Per-sample segmentation loss: soft Dice + cross-entropy, one value per sample.

Per-sample values (not just the batch mean) are kept because each sample's own loss under its
own latent is one of the signals the latent-space analysis ranks samples by.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss


class DiceCELoss:
    """Soft Dice (softmax, one-hot labels) + cross-entropy, reduced per sample.

    Args:
        dice_weight: weight of the soft Dice term.
        ce_weight: weight of the cross-entropy term.
        include_background: whether the Dice averages over the background class.

    Example:
        >>> loss = DiceCELoss()
        >>> logits, labels = torch.zeros(2, 3, 4, 4, 4), torch.zeros(2, 1, 4, 4, 4, dtype=torch.long)
        >>> loss(logits, labels).total.shape
        torch.Size([2])
    """

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0, include_background: bool = False) -> None:
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight
        self.dice = DiceLoss(include_background=include_background, to_onehot_y=True, softmax=True,
                             reduction="none")

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> "LossTerms":
        """``logits`` [B, K, ...] (any float dtype), ``labels`` [B, 1, ...] integer class ids."""
        logits, labels = logits.float(), labels.long()
        if labels.shape[1:] != (1, *logits.shape[2:]):
            raise ValueError(f"Labels of shape {tuple(labels.shape)} do not match logits "
                             f"{tuple(logits.shape)}; expected [B, 1, {', '.join(map(str, logits.shape[2:]))}].")
        dice = self.dice(logits, labels).flatten(1).mean(1)
        ce = F.cross_entropy(logits, labels[:, 0], reduction="none").flatten(1).mean(1)
        return LossTerms(dice=dice, ce=ce, total=self.dice_weight * dice + self.ce_weight * ce)


class LossTerms:
    """Per-sample loss components, each a tensor [B]."""

    __slots__ = ("dice", "ce", "total")

    def __init__(self, dice: torch.Tensor, ce: torch.Tensor, total: torch.Tensor) -> None:
        self.dice, self.ce, self.total = dice, ce, total
