"""Latent table semantics: a latent moves only when visited, with its own Adam state."""

from __future__ import annotations

import pytest
import torch

from HyperSORTLib.model import LatentTable, RowwiseAdam


def test_rowwise_adam_equals_one_torch_adam_per_latent():
    torch.manual_seed(0)
    table = LatentTable(["a", "b", "c", "d"], dim=2, init_std=0.3)
    reference = [torch.nn.Parameter(table.weight[i].detach().clone()) for i in range(4)]
    ref_opts = [torch.optim.Adam([p], lr=1e-2, betas=(0.7, 0.9)) for p in reference]
    opt = RowwiseAdam(table.weight, lr=1e-2, betas=(0.7, 0.9))
    target = torch.randn(4, 2)
    visits = [[0, 1], [2], [0, 3], [0], [1, 2, 3], [3]]
    for rows in visits:
        rows_t = torch.tensor(rows)
        opt.zero_grad()
        (table(rows_t) - target[rows_t]).pow(3).abs().sum().backward()
        opt.step(rows_t)
        for r in rows:
            ref_opts[r].zero_grad()
            (reference[r] - target[r]).pow(3).abs().sum().backward()
            ref_opts[r].step()
    for i in range(4):
        torch.testing.assert_close(table.weight[i], reference[i].detach(), rtol=1e-6, atol=1e-7)
    assert opt.steps.tolist() == [3, 2, 2, 3]


def test_unvisited_latents_do_not_move_even_with_gradient():
    table = LatentTable(["a", "b", "c"], dim=2)
    before = table.weight.detach().clone()
    opt = RowwiseAdam(table.weight, lr=0.1)
    table.weight.sum().backward()  # every row has a gradient...
    opt.step(torch.tensor([1]))  # ...but only row 1 was in the batch
    after = table.weight.detach()
    torch.testing.assert_close(after[[0, 2]], before[[0, 2]], rtol=0, atol=0)
    assert not torch.equal(after[1], before[1])
    assert opt.exp_avg[[0, 2]].abs().sum() == 0


def test_repeated_row_in_batch_is_one_step():
    table = LatentTable(["a", "b"], dim=1)
    opt = RowwiseAdam(table.weight)
    table(torch.tensor([0, 0])).sum().backward()
    opt.step(torch.tensor([0, 0]))
    assert opt.steps.tolist() == [1, 0]


def test_latent_table_lookup_and_errors():
    table = LatentTable(["x", "y", "z"], dim=3, init_std=0.05, generator=torch.Generator().manual_seed(0))
    assert table.rows(["z", "x"]).tolist() == [2, 0]
    assert table(table.rows(["y"])).shape == (1, 3)
    assert 0.005 < float(table.weight.detach().std()) < 0.2
    with pytest.raises(KeyError, match="'w' is not in the latent table"):
        table.rows(["w"])
    with pytest.raises(ValueError, match="unique; duplicated: x"):
        LatentTable(["x", "y", "x"])
    with pytest.raises(ValueError, match="at least one"):
        LatentTable([])


def test_state_round_trip_and_shape_check():
    table = LatentTable(["a", "b"], dim=2)
    opt = RowwiseAdam(table.weight)
    table.weight.sum().backward()
    opt.step(torch.tensor([0]))
    other = RowwiseAdam(LatentTable(["a", "b"], dim=2).weight)
    other.load_state_dict(opt.state_dict())
    assert other.steps.tolist() == [1, 0]
    with pytest.raises(ValueError, match="exp_avg"):
        RowwiseAdam(LatentTable(["a", "b", "c"], dim=2).weight).load_state_dict(opt.state_dict())


@pytest.mark.parametrize("scale", ["row", "table"])
def test_table_scale_moves_a_weakly_pulled_latent_less(scale):
    """Per-row Adam moves a latent about one learning rate per visit whatever its pull; with one
    scale for the table a latent pulled 10x more weakly moves about 10x less."""
    table = LatentTable(["strong", "weak"], dim=1, init_std=0.0)
    opt = RowwiseAdam(table.weight, lr=0.01, scale=scale)
    pull = torch.tensor([[1.0], [0.1]])
    for _ in range(5):
        opt.zero_grad()
        (table.weight * pull).sum().backward()
        opt.step(torch.tensor([0, 1]))
    travel = -table.weight.detach()[:, 0]
    if scale == "row":
        torch.testing.assert_close(travel[0], travel[1])
        assert 0.04 < float(travel[0]) < 0.06
    else:
        torch.testing.assert_close(travel[1] / travel[0], torch.tensor(0.1))
        assert float(travel[0]) > 0.05  # the strong pull moves faster than one learning rate per visit


def test_latent_scale_is_checked():
    with pytest.raises(ValueError, match="scale must be one of row, table, found 'col'"):
        RowwiseAdam(LatentTable(["a"], dim=1).weight, scale="col")
