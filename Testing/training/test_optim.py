"""The trainers' Adam (:func:`HyperSORTLib.training.optim.adam`): fused on CPU, the same
algorithm as PyTorch's default Adam, and checkpoints of either implementation load into it."""

from __future__ import annotations

import torch

from HyperSORTLib.training.optim import adam


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))


def _train(net: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: range) -> None:
    for step in steps:
        generator = torch.Generator().manual_seed(step)
        x, y = torch.randn(8, 6, generator=generator), torch.randn(8, 3, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(net(x), y).backward()
        optimizer.step()


def test_fused_on_cpu_and_equal_to_the_default_adam():
    fused_net, default_net = _net(0), _net(0)
    fused = adam(fused_net.parameters(), lr=1e-2, betas=(0.8, 0.99))
    default = torch.optim.Adam(default_net.parameters(), lr=1e-2, betas=(0.8, 0.99))
    assert fused.defaults["fused"] is True and not default.defaults["fused"]
    _train(fused_net, fused, range(20))
    _train(default_net, default, range(20))
    moved = 0.0
    for a, b, start in zip(fused_net.parameters(), default_net.parameters(), _net(0).parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        moved = max(moved, (a - start).abs().max().item())
    assert moved > 0.05  # the comparison is of trained weights, not of the initial ones


def test_a_default_adam_checkpoint_resumes_in_the_fused_adam():
    """A run trained before the fused Adam (PyTorch's default implementation) resumes, and
    continues as if it had not stopped."""
    reference_net = _net(1)
    reference = torch.optim.Adam(reference_net.parameters(), lr=1e-2, betas=(0.9, 0.999))
    _train(reference_net, reference, range(10))

    stopped_net = _net(1)
    stopped = torch.optim.Adam(stopped_net.parameters(), lr=1e-2, betas=(0.9, 0.999))
    _train(stopped_net, stopped, range(5))
    saved = {"net": stopped_net.state_dict(), "optimizer": stopped.state_dict()}

    resumed_net = _net(2)  # other weights: everything must come from the checkpoint
    resumed_net.load_state_dict(saved["net"])
    resumed = adam(resumed_net.parameters(), lr=1e-2, betas=(0.9, 0.999))
    resumed.load_state_dict(saved["optimizer"])
    assert not resumed.param_groups[0]["fused"]  # the run goes on with the Adam it started with
    _train(resumed_net, resumed, range(5, 10))
    for a, b in zip(resumed_net.parameters(), reference_net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_parameters_off_the_fused_devices_get_the_default_adam():
    meta = torch.nn.Parameter(torch.empty(3, device="meta"))
    assert not adam([meta], lr=1e-3, betas=(0.9, 0.999)).defaults["fused"]
