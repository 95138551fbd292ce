"""The latent table: one learned vector per training sample, and its optimiser.

The reference method gives every latent its own Adam, so a latent moves only when its sample
is visited and its bias correction counts that sample's own visits. :class:`RowwiseAdam`
does exactly that for the whole table at once: moments and step counts are kept per row, and a
step updates only the rows of the current batch.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn

from HyperSORTLib.config import LATENT_SCALES


class LatentTable(nn.Module):
    """Latent vectors indexed by case id.

    Args:
        case_ids: one id per training sample, unique; row ``i`` belongs to ``case_ids[i]``.
        dim: latent dimension.
        init_std: standard deviation of the zero-mean normal initialisation.
        generator: optional random generator for reproducible initialisation.

    Example:
        >>> table = LatentTable(["a", "b", "c"], dim=2)
        >>> table(table.rows(["c", "a"])).shape
        torch.Size([2, 2])
    """

    def __init__(self, case_ids: Sequence[str], dim: int = 2, init_std: float = 0.05,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        ids = [str(c) for c in case_ids]
        if not ids:
            raise ValueError("LatentTable needs at least one case id, found none.")
        seen: set[str] = set()
        duplicates = sorted({c for c in ids if c in seen or seen.add(c)})
        if duplicates:
            raise ValueError(f"Case ids must be unique; duplicated: {', '.join(duplicates[:10])}.")
        if dim < 1:
            raise ValueError(f"Latent dimension must be >= 1, found {dim}.")
        self.case_ids: tuple[str, ...] = tuple(ids)
        self._index = {c: i for i, c in enumerate(ids)}
        self.weight = nn.Parameter(torch.randn(len(ids), dim, generator=generator) * init_std)

    @property
    def dim(self) -> int:
        return self.weight.shape[1]

    def __len__(self) -> int:
        return len(self.case_ids)

    def rows(self, case_ids: Iterable[str]) -> torch.Tensor:
        """Row indices of ``case_ids``; an unknown id raises ``KeyError`` naming it."""
        try:
            return torch.tensor([self._index[str(c)] for c in case_ids], dtype=torch.long)
        except KeyError as exc:
            raise KeyError(f"Case id {exc.args[0]!r} is not in the latent table "
                           f"({len(self)} cases, e.g. {', '.join(self.case_ids[:3])}).") from None

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.weight[rows.to(self.weight.device)]


class RowwiseAdam:
    """Adam with independent moments and step counts for every row of one parameter.

    ``step(rows)`` updates only ``rows``; it is the same as running one ``torch.optim.Adam``
    per row and stepping only the optimisers of the visited rows (no weight decay, no amsgrad).

    With ``scale="table"`` every row keeps its own moments but the step is normalised by one
    scale for the whole table (the root mean square of the bias-corrected second moments of the
    visited rows) instead of the row's own: a latent whose gradient is weaker than the others'
    moves proportionally less, where per-row Adam moves every latent about one learning rate per
    visit whatever the strength of the pull.

    Args:
        param: the [N, D] parameter (the latent table's ``weight``).
        lr: learning rate.
        betas: moment decay rates.
        eps: term added to the denominator.
        scale: "row" (the reference: each row and coordinate its own Adam) or "table".
    """

    def __init__(self, param: nn.Parameter, lr: float = 1e-3, betas: tuple[float, float] = (0.7, 0.9),
                 eps: float = 1e-8, scale: str = "row") -> None:
        if param.dim() != 2:
            raise ValueError(f"RowwiseAdam expects a 2-D parameter [rows, dim], found shape {tuple(param.shape)}.")
        if scale not in LATENT_SCALES:
            raise ValueError(f"RowwiseAdam scale must be one of {', '.join(LATENT_SCALES)}, found {scale!r}.")
        self.param = param
        self.scale = scale
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        self.exp_avg = torch.zeros_like(param, memory_format=torch.preserve_format).detach()
        self.exp_avg_sq = torch.zeros_like(self.exp_avg)
        self.steps = torch.zeros(param.shape[0], dtype=torch.long, device=param.device)

    def zero_grad(self) -> None:
        self.param.grad = None

    @torch.no_grad()
    def step(self, rows: torch.Tensor) -> None:
        """Apply one Adam update to each distinct row in ``rows`` using ``param.grad``."""
        if self.param.grad is None:
            return
        rows = torch.unique(rows.to(self.param.device))
        beta1, beta2 = self.betas
        grad = self.param.grad[rows].to(self.exp_avg.dtype)
        self.steps[rows] += 1
        steps = self.steps[rows].to(self.exp_avg.dtype).unsqueeze(1)
        m = self.exp_avg[rows].mul_(beta1).add_(grad, alpha=1 - beta1)
        v = self.exp_avg_sq[rows].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        self.exp_avg[rows] = m
        self.exp_avg_sq[rows] = v
        # Same arithmetic as torch.optim.Adam (non-fused): lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)
        bias1 = 1 - beta1 ** steps
        bias2 = 1 - beta2 ** steps
        if self.scale == "table":
            visited = self.steps > 0
            all_bias2 = 1 - beta2 ** self.steps[visited].to(self.exp_avg.dtype).unsqueeze(1)
            denom = (self.exp_avg_sq[visited] / all_bias2).mean().sqrt().add_(self.eps)
        else:
            denom = (v.sqrt() / bias2.sqrt()).add_(self.eps)
        self.param[rows] -= (self.lr / bias1) * m / denom

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"exp_avg": self.exp_avg.clone(), "exp_avg_sq": self.exp_avg_sq.clone(), "steps": self.steps.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for key in ("exp_avg", "exp_avg_sq", "steps"):
            current = getattr(self, key)
            value = state[key]
            if value.shape != current.shape:
                raise ValueError(f"Latent optimiser state '{key}' has shape {tuple(value.shape)}, "
                                 f"expected {tuple(current.shape)}.")
            current.copy_(value.to(current.device))
