"""The defining mechanism of each baseline, on tiny tensors with exact answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from HyperSORTLib.baselines import mcpm, pint
from HyperSORTLib.inference.decode import marginal_threshold_logits
from HyperSORTLib.model.unet import UNet3D
from HyperSORTLib.perturbation.marginal import marginal_threshold


# ----------------------------------------------------------------------------------------- MCPM
def _tiny_problem():
    torch.manual_seed(0)
    unet = UNet3D(num_classes=2, channels=(2, 4), convs_per_level=1).double()
    mask = mcpm.MaskNet(hidden=3, init_weight=0.7).double()
    with torch.no_grad():  # away from the zero initialisation, so every parameter has a gradient
        for p in mask.parameters():
            p.add_(0.3 * torch.randn_like(p))
    image = torch.randn(2, 1, 4, 4, 4, dtype=torch.float64)
    labels = (torch.rand(2, 1, 4, 4, 4) > 0.6).long()
    meta_image = torch.randn(1, 1, 4, 4, 4, dtype=torch.float64)
    meta_labels = (torch.rand(1, 1, 4, 4, 4) > 0.5).long()
    return unet, mask, (image, labels, meta_image, meta_labels), lambda lo, la: mcpm.voxel_ce(lo, la).flatten(1).mean(1)


def test_mcpm_meta_gradient_matches_finite_differences():
    """The look-ahead meta-gradient with respect to every mask-network parameter, against
    central differences of the meta loss in float64."""
    unet, mask, batch, loss_fn = _tiny_problem()

    def meta() -> torch.Tensor:
        return mcpm.lookahead_meta_loss(unet, mask, *batch, virtual_lr=0.5, meta_loss=loss_fn)

    params = list(mask.parameters())
    analytic = torch.autograd.grad(meta(), params)
    eps = 1e-6
    for param, grad in zip(params, analytic):
        flat = param.data.view(-1)
        numeric = torch.empty_like(flat)
        for i in range(flat.numel()):
            old = float(flat[i])
            flat[i] = old + eps  # param.data: outside autograd; the look-ahead itself needs grad mode
            up = float(meta().detach())
            flat[i] = old - eps
            down = float(meta().detach())
            flat[i] = old
            numeric[i] = (up - down) / (2 * eps)
        torch.testing.assert_close(grad.view(-1), numeric, rtol=1e-4, atol=1e-9)
    assert any(float(g.abs().max()) > 1e-6 for g in analytic), "the meta-gradient should not vanish"


def test_mcpm_meta_step_moves_the_mask_network_and_not_the_unet():
    unet, mask, batch, loss_fn = _tiny_problem()
    before_unet = {k: v.clone() for k, v in unet.state_dict().items()}
    before_mask = [p.detach().clone() for p in mask.parameters()]
    optimizer = torch.optim.SGD(mask.parameters(), lr=1.0)
    mcpm.meta_step(unet, mask, optimizer, *batch, virtual_lr=0.5, meta_loss=loss_fn)
    assert all(p.grad is None for p in unet.parameters())
    for key, value in unet.state_dict().items():
        assert torch.equal(value, before_unet[key]), key
    assert any(not torch.equal(a, p) for a, p in zip(before_mask, mask.parameters()))


def test_mask_network_starts_at_its_initial_weight_and_weights_the_loss():
    mask = mcpm.MaskNet(hidden=4, init_weight=0.9)
    loss_map = torch.rand(2, 1, 5, 5, 5) * 3
    torch.testing.assert_close(mask(loss_map), torch.full_like(loss_map, 0.9))
    logits = torch.randn(2, 3, 5, 5, 5)
    labels = torch.randint(0, 3, (2, 1, 5, 5, 5))
    expected = 0.9 * mcpm.voxel_ce(logits, labels).flatten(1).mean(1)
    torch.testing.assert_close(mcpm.weighted_ce(logits, labels, mask), expected)


# ----------------------------------------------------------------------------------------- PINT
def test_ema_update_is_the_exponential_moving_average():
    student, teacher = torch.nn.Conv3d(1, 2, 3), torch.nn.Conv3d(1, 2, 3)
    t0 = [p.detach().clone() for p in teacher.parameters()]
    pint.ema_update(teacher, student, 0.9)
    for t, old, s in zip(teacher.parameters(), t0, student.parameters()):
        torch.testing.assert_close(t, 0.9 * old + 0.1 * s.detach())
    pint.ema_update(teacher, student, 0.0)
    for t, s in zip(teacher.parameters(), student.parameters()):
        assert torch.equal(t, s)


def test_normalised_entropy_is_zero_when_certain_and_one_when_uniform():
    certain = torch.zeros(1, 3, 2, 2, 2)
    certain[:, 1] = 1
    assert float(pint.normalised_entropy(certain).max()) == pytest.approx(0.0, abs=1e-9)
    uniform = torch.full((1, 3, 2, 2, 2), 1 / 3)
    torch.testing.assert_close(pint.normalised_entropy(uniform), torch.ones(1, 2, 2, 2))


def test_teacher_prediction_averages_over_perturbations():
    teacher = torch.nn.Conv3d(1, 2, 1)
    image = torch.randn(1, 1, 3, 3, 3)
    pseudo, u = pint.teacher_prediction(teacher, image, 3, 0.0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(pseudo, torch.softmax(teacher(image), 1).detach())
    torch.testing.assert_close(u, pint.normalised_entropy(pseudo))
    noisy, _ = pint.teacher_prediction(teacher, image, 3, 1.0, torch.Generator().manual_seed(0))
    assert not torch.allclose(noisy, pseudo)


def _loss_parts(logits, labels, pseudo):
    ce = torch.nn.functional.cross_entropy(logits, labels[:, 0], reduction="none")
    mse = ((torch.softmax(logits, 1) - pseudo) ** 2).sum(1)
    return ce, mse


def test_pint_loss_trusts_the_label_where_certain_and_the_teacher_where_uncertain():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 3, 3, 4)
    labels = torch.randint(0, 2, (2, 1, 3, 3, 4))
    pseudo = torch.softmax(torch.randn(2, 2, 3, 3, 4), 1)
    ce, mse = _loss_parts(logits, labels, pseudo)
    zero, one = torch.zeros(2, 3, 3, 4), torch.ones(2, 3, 3, 4)
    torch.testing.assert_close(pint.pint_loss(logits, labels, pseudo, zero, (1, 0)), ce.flatten(1).mean(1))
    torch.testing.assert_close(pint.pint_loss(logits, labels, pseudo, one, (1, 0)), mse.flatten(1).mean(1))
    # slice level with uniform uncertainty u: every slice weighs its CE by 1 - u
    half = torch.full((2, 3, 3, 4), 0.25)
    torch.testing.assert_close(pint.pint_loss(logits, labels, pseudo, half, (0, 1)),
                               (0.75 * ce + 0.25 * mse).flatten(1).mean(1))


def test_pint_voxel_weight_on_the_label_decreases_with_uncertainty():
    """d loss / d CE_v is a_v = 1 - u_v (voxel level): more uncertain voxels follow the label less."""
    torch.manual_seed(1)
    logits = torch.randn(1, 2, 2, 2, 2, requires_grad=True)
    labels = torch.randint(0, 2, (1, 1, 2, 2, 2))
    pseudo = torch.softmax(logits.detach(), 1)  # MSE term and its gradient vanish at the teacher
    u = torch.linspace(0, 1, 8).view(1, 2, 2, 2)
    loss = pint.pint_loss(logits, labels, pseudo, u, (1, 0)).sum()
    (grad,) = torch.autograd.grad(loss, logits)
    ce_grad = torch.autograd.grad(_loss_parts(logits, labels, pseudo)[0].mean(), logits)[0]
    torch.testing.assert_close(grad, ce_grad * (1 - u)[:, None])


def test_pint_slice_level_keeps_uncertain_voxels_of_a_confident_slice():
    logits = torch.zeros(1, 2, 4, 4, 2)
    labels = torch.ones(1, 1, 4, 4, 2, dtype=torch.long)
    pseudo = torch.zeros(1, 2, 4, 4, 2)
    pseudo[:, 0] = 1  # the teacher disagrees with the label everywhere
    u = torch.zeros(1, 4, 4, 2)
    u[0, 0, 0, 0] = 1.0  # one uncertain boundary voxel in the confident slice 0
    u[0, :, :, 1] = 1.0  # slice 1 is uncertain throughout
    ce, mse = _loss_parts(logits, labels, pseudo)
    slice_loss = float(pint.pint_loss(logits, labels, pseudo, u, (0, 1)))
    trust0 = 1 - 1 / 16
    expected = (trust0 * ce[..., 0].mean() + (1 - trust0) * mse[..., 0].mean() + mse[..., 1].mean()) / 2
    assert slice_loss == pytest.approx(float(expected), rel=1e-6)


# ----------------------------------------------------------------------------------------- t*
def test_marginal_threshold_logits_threshold_each_image_at_its_own_t_star():
    rng = np.random.default_rng(0)
    p = np.stack([rng.beta(0.5, 2, (6, 6, 6)), rng.beta(2, 0.5, (6, 6, 6))])  # two images, different t*
    p = np.clip(p, 1e-4, 1 - 1e-4)
    logits = torch.as_tensor(np.stack([np.log(1 - p), np.log(p)], axis=1), dtype=torch.float32)
    labels = marginal_threshold_logits(logits).argmax(1).numpy()
    thresholds = []
    for b in range(2):
        probs = torch.softmax(logits[b], 0)[1].double().numpy()
        t = marginal_threshold(probs)
        thresholds.append(t)
        np.testing.assert_array_equal(labels[b], (probs >= t).astype(labels.dtype))
    assert abs(thresholds[0] - thresholds[1]) > 0.05
    assert 0 < thresholds[0] < 0.5 and not math.isclose(thresholds[0], 0.5)
