"""Gaussian-random-field label noise: field statistics, the warp, the closed-form marginal and the
soft-Dice threshold t*."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage
from scipy.special import ndtr

from HyperSORTLib.perturbation import (
    gaussian_field_deform,
    gaussian_random_field,
    marginal_probability,
    marginal_threshold,
)
from HyperSORTLib.perturbation import deformation
from HyperSORTLib.perturbation.marginal import soft_dice_of_threshold


def ball(shape, spacing, radius_mm) -> np.ndarray:
    centre = [(n - 1) / 2 * h for n, h in zip(shape, spacing)]
    grid = np.indices(shape, dtype=float)
    dist = np.sqrt(sum((grid[a] * spacing[a] - centre[a]) ** 2 for a in range(3)))
    return (dist <= radius_mm).astype(np.uint8)


def test_field_has_zero_mean_and_the_requested_std():
    shape, spacing, s = (40, 40, 24), (1.0, 1.0, 2.0), 3.0
    fields = np.stack([gaussian_random_field(shape, spacing, s, 6.0, seed=k) for k in range(12)])
    assert fields.shape == (12, 3, *shape)
    # About 270 independent values per component over 12 fields: the standard error of the
    # mean is ~0.06 s, of the standard deviation ~4 %.
    for component in range(3):
        values = fields[:, component]
        assert abs(values.mean()) < 0.2 * s
        assert values.std() == pytest.approx(s, rel=0.1)
    assert np.array_equal(fields[0], gaussian_random_field(shape, spacing, s, 6.0, seed=0))


@pytest.mark.parametrize("n, spacing, correlation", [(512, 0.8, 5.0), (300, 1.5, 20.0), (40, 2.0, 6.0), (64, 1.0, 8.0)])
def test_sampler_covariance_is_exactly_unit_variance_and_squared_exponential(n, spacing, correlation):
    # The field along one axis is W @ (kernel * white noise); its covariance is W R W^T exactly.
    n_nodes, sigma, weights = deformation._grf_axis(n, spacing, correlation)
    kernel = deformation._gaussian_kernel(sigma)
    autocorr = np.correlate(kernel, kernel, "full")
    centre = len(kernel) - 1
    lag = np.abs(np.subtract.outer(np.arange(n_nodes), np.arange(n_nodes)))
    cov_nodes = np.where(lag <= centre, autocorr[np.minimum(centre + lag, len(autocorr) - 1)], 0.0)
    cov = weights @ cov_nodes @ weights.T
    assert np.allclose(np.diag(cov), 1.0, atol=1e-12)  # std s at every voxel, edges included
    r = np.subtract.outer(np.arange(n), np.arange(n)) * spacing
    assert np.abs(cov - np.exp(-r**2 / (2 * correlation**2))).max() < 0.02
    assert n_nodes <= n


def test_empirical_correlation_at_one_correlation_length():
    shape, spacing, l = (48, 48, 32), (1.0, 1.0, 2.0), 8.0
    fields = np.stack([gaussian_random_field(shape, spacing, 3.0, l, seed=k) for k in range(20)])
    u = fields[:, 0]
    corr_i = (u[:, :-8] * u[:, 8:]).mean() / u.var()  # lag 8 voxels = l along i
    corr_k = (u[:, :, :, :-4] * u[:, :, :, 4:]).mean() / u.var()  # lag 4 voxels = l along k
    assert corr_i == pytest.approx(np.exp(-0.5), abs=0.07)
    assert corr_k == pytest.approx(np.exp(-0.5), abs=0.07)


@pytest.mark.parametrize("shape, spacing, s, l", [
    ((32, 30, 20), (1.0, 1.2, 2.0), 3.0, 10.0),
    ((40, 40, 16), (0.8, 0.8, 2.5), 0.8, 4.0),  # small displacement: only the foreground box is warped
    ((20, 18, 12), (2.0, 2.0, 3.0), 6.0, 1.0),  # correlation below the voxel size: nodes = voxels
])
def test_warp_equals_map_coordinates_with_the_sampled_field(shape, spacing, s, l):
    label = ball(shape, spacing, 0.3 * min(n * h for n, h in zip(shape, spacing)))
    label[ball(shape, spacing, 0.12 * min(n * h for n, h in zip(shape, spacing))) == 1] = 2
    for seed in (0, 1):
        field = gaussian_random_field(shape, spacing, s, l, seed)
        coords = np.indices(shape) + field / np.asarray(spacing)[:, None, None, None]
        expected = ndimage.map_coordinates(label, coords, order=0, mode="grid-constant", cval=0)
        out = gaussian_field_deform(label, spacing, s, l, seed)
        assert np.array_equal(out, expected) and out.dtype == label.dtype
    assert np.array_equal(gaussian_field_deform(label, spacing, 0.0, l, seed=0), label)
    assert not np.array_equal(gaussian_field_deform(label, spacing, s, l, 0),
                              gaussian_field_deform(label, spacing, s, l, 1))


def test_monte_carlo_average_matches_the_closed_form_marginal():
    shape, spacing, s = (24, 24, 14), (1.0, 1.0, 2.0), 2.0
    mask = ball(shape, spacing, 6.0)
    n = 300
    average = sum((gaussian_field_deform(mask, spacing, s, 6.0, seed=k) == 1).astype(float) for k in range(n)) / n
    # Per-voxel standard error <= 0.5 / sqrt(300) = 0.029. Tolerance: mean |error| <= 0.007 and
    # max |error| <= 0.11; a marginal with a 20 % wrong s already fails it (checked below).
    for discrete in (True, False):
        error = np.abs(average - marginal_probability(mask, s, spacing, discrete=discrete))
        assert error.mean() <= 0.007 and error.max() <= 0.11, (discrete, error.mean(), error.max())
        for wrong in (0.8 * s, 1.2 * s):
            off = np.abs(average - marginal_probability(mask, wrong, spacing, discrete=discrete))
            assert off.mean() > 0.007 or off.max() > 0.11


def test_discrete_marginal_of_a_plane_is_the_normal_cdf_of_the_rounded_shift():
    # One axis (a plane seen across it): voxels 0..29 labelled, spacing 1.5 mm, s = 3 mm.
    h, s = 1.5, 3.0
    mask = np.zeros(60, np.uint8)
    mask[:30] = 1
    p = marginal_probability(mask, s, (h,), discrete=True)
    i = np.arange(20, 40)
    # round(i + u / h) <= 29  <=>  u <= (29.5 - i) h
    assert np.allclose(p[20:40], ndtr((29.5 - i) * h / s), atol=1e-4)
    smooth = marginal_probability(mask, s, (h,))
    assert np.allclose(smooth[20:40], ndtr((29.5 - i) * h / s), atol=0.01)


def test_marginal_conserves_the_mask_volume_and_is_zero_far_away():
    spacing = (1.0, 1.5, 2.0)
    mask = ball((40, 30, 24), spacing, 7.0)
    for discrete in (False, True):
        p = marginal_probability(mask, 2.5, spacing, discrete=discrete)
        assert p.sum() == pytest.approx(mask.sum(), rel=1e-3)
        assert p.min() >= 0 and p.max() <= 1 and p[0, 0, 0] == 0
    assert np.array_equal(marginal_probability(mask, 0.0, spacing), mask.astype(float))
    assert not marginal_probability(np.zeros((4, 4, 4), bool), 1.0, (1, 1, 1)).any()


def brute_force_best_mask(p: np.ndarray) -> tuple[float, np.ndarray]:
    """Max soft Dice over every subset of voxels (small p only)."""
    best, best_mask = -1.0, None
    for bits in itertools.product((False, True), repeat=p.size):
        chosen = np.array(bits)
        dice = 2 * p[chosen].sum() / (chosen.sum() + p.sum())
        if dice > best + 1e-12:
            best, best_mask = dice, chosen
    return best, best_mask


@pytest.mark.parametrize("seed", range(4))
def test_threshold_matches_brute_force_soft_dice_maximisation(seed):
    rng = np.random.default_rng(seed)
    p = np.round(rng.beta(0.6, 0.8, size=11), 2)  # rounding makes ties
    t = marginal_threshold(p)
    best, best_mask = brute_force_best_mask(p)
    assert soft_dice_of_threshold(p, t) == pytest.approx(best, abs=1e-12)
    assert np.array_equal(p >= t, best_mask)
    # t* lies above half the optimal Dice, and the next lower probability does not.
    below = p[p < t]
    assert t > best / 2 and (below.size == 0 or below.max() <= best / 2 + 1e-12)


def test_threshold_of_a_noisy_marginal_is_below_one_half_and_beats_every_other_threshold():
    spacing = (1.0, 1.0, 1.0)
    p = marginal_probability(ball((30, 30, 30), spacing, 6.0), 3.0, spacing)
    t = marginal_threshold(p.reshape(10, -1))  # any shape
    candidates = np.unique(p[p > 0])
    dices = [soft_dice_of_threshold(p, c) for c in candidates]
    assert t == pytest.approx(candidates[int(np.argmax(dices))])
    assert t < 0.5 and (p >= t).sum() > (p >= 0.5).sum()  # the soft-Dice mask is the larger one
    assert marginal_threshold(np.zeros(5)) == 1.0


@pytest.mark.parametrize("bad, fragment", [
    (np.array([]), "at least one"),
    (np.array([0.2, 1.2]), r"\[0, 1\]"),
    (np.array([0.2, np.nan]), "finite"),
    (np.array(["a"]), "numbers"),
])
def test_threshold_rejects_bad_probabilities(bad, fragment):
    with pytest.raises(ValueError, match=fragment):
        marginal_threshold(bad)


@pytest.mark.parametrize("call, fragment", [
    (lambda: gaussian_random_field((4, 4), (1, 1, 1), 1.0, 2.0, 0), "shape"),
    (lambda: gaussian_random_field((4, 4, 4), (1, 1, 1), -1.0, 2.0, 0), "std_mm"),
    (lambda: gaussian_field_deform(np.zeros((4, 4, 4), np.uint8), (1, 1, 1), 1.0, 0.0, 0), "correlation_mm"),
    (lambda: gaussian_field_deform(np.zeros((4, 4, 4), np.uint8), (1, 1, 1), 1.0, 2.0, -3), "seed"),
    (lambda: marginal_probability(np.zeros((4, 4, 4)), 1.0, (1, 1, 1)), "boolean or integer"),
    (lambda: marginal_probability(np.zeros((4, 4, 4), bool), 1.0, (1, 1)), "spacing"),
])
def test_bad_noise_arguments_raise_value_error(call, fragment):
    with pytest.raises(ValueError, match=fragment):
        call()
