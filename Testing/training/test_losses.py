"""The per-sample Dice + CE loss, and its treatment of classes absent from a sample's label."""

from __future__ import annotations

import pytest
import torch

from HyperSORTLib.config import TrainConfig
from HyperSORTLib.training.losses import DiceCELoss


def _case(spleen: bool) -> torch.Tensor:
    label = torch.zeros(1, 1, 12, 12, 12, dtype=torch.long)
    label[0, 0, 1:6, 1:6, 1:6] = 1  # liver
    if spleen:
        label[0, 0, 7:10, 7:10, 7:10] = 2
    return label


def _logits_predicting_both() -> torch.Tensor:
    logits = torch.full((1, 3, 12, 12, 12), -1.0)
    logits[:, 0] = 1.0
    logits[0, 1, 1:6, 1:6, 1:6] = 2.0
    logits[0, 2, 7:10, 7:10, 7:10] = 2.0
    return logits


def test_plain_soft_dice_gives_an_absent_class_no_gradient():
    logits = _logits_predicting_both().requires_grad_()
    DiceCELoss(ce_weight=0.0)(logits, _case(spleen=False)).total.sum().backward()
    spleen_grad = logits.grad[0, 2, 7:10, 7:10, 7:10]
    assert float(spleen_grad.max()) <= 0.0  # nothing pushes the spleen logits down there
    quiet = _logits_predicting_both()
    quiet[0, 2] = -6.0  # and not drawing the omitted spleen does not lower the Dice loss
    assert float(DiceCELoss(ce_weight=0.0)(quiet, _case(spleen=False)).dice) == pytest.approx(
        float(DiceCELoss(ce_weight=0.0)(_logits_predicting_both(), _case(spleen=False)).dice), abs=0.02)


def test_absent_class_volume_penalises_drawing_an_omitted_class():
    loss = DiceCELoss(ce_weight=0.0, absent_class_volume=0.01)
    logits = _logits_predicting_both().requires_grad_()
    terms = loss(logits, _case(spleen=False))
    predicted = torch.softmax(logits, 1)[0, 2].sum()
    liver_only = DiceCELoss(ce_weight=0.0)(logits, _case(spleen=False))
    # The spleen term is P / (P + a N); the liver term is MONAI's soft Dice, unchanged.
    expected_spleen = predicted / (predicted + 0.01 * 12 ** 3)
    liver_dice = 2 * liver_only.dice - 1.0  # plain mean of (liver, spleen = 1)
    assert float(terms.dice.detach()) == pytest.approx(float((liver_dice + expected_spleen).detach() / 2), rel=1e-5)
    terms.total.sum().backward()
    spleen_grad = logits.grad[0, 2, 7:10, 7:10, 7:10]
    assert float(spleen_grad.min()) > 1e-5  # descending lowers the spleen logits there
    # Not drawing the omitted class is cheaper than drawing it.
    quiet = _logits_predicting_both()
    quiet[0, 2] = -6.0
    assert float(loss(quiet, _case(spleen=False)).dice) < float(terms.dice.detach()) - 0.3


def test_absent_class_volume_leaves_present_classes_alone():
    logits = torch.randn(2, 3, 12, 12, 12)
    labels = torch.cat([_case(True), _case(True)])
    plain = DiceCELoss()(logits, labels).total
    assert torch.equal(DiceCELoss(absent_class_volume=0.01)(logits, labels).total, plain)


def test_the_loss_follows_the_run_configuration():
    loss = DiceCELoss.from_config(TrainConfig(dice_weight=0.5, ce_weight=2.0, absent_class_volume=0.02))
    assert (loss.dice_weight, loss.ce_weight, loss.absent_class_volume) == (0.5, 2.0, 0.02)
    with pytest.raises(ValueError, match="absent_class_volume"):
        DiceCELoss(absent_class_volume=1.5)
