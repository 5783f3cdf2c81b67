"""Task towers: one MLP with a single output logit per task (ShareBottom, ESMM, MMoE, PLE).

Notation: B batch, I input width, K tasks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from adrank.nn.mlp import MLPBlock


class TaskTowers(nn.Module):
    """K towers ``MLP_k -> Linear(., 1)``.

    ``forward`` takes one (B, I) tensor that every tower reads, or a list of K tensors (tower
    k reads the k-th), and returns the K logits as (B, K).
    """

    def __init__(
        self,
        input_dim: int,
        num_tasks: int,
        hidden_units: Sequence[int] = (),
        hidden_activations: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if num_tasks < 1:
            raise ValueError(f"TaskTowers needs num_tasks >= 1, got {num_tasks}")
        self.towers = nn.ModuleList(
            MLPBlock(input_dim, hidden_units, hidden_activations, dropout, batch_norm, output_dim=1)
            for _ in range(num_tasks)
        )

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        inputs = x if isinstance(x, list) else [x] * len(self.towers)
        if len(inputs) != len(self.towers):
            raise ValueError(f"{len(self.towers)} towers but {len(inputs)} inputs")
        return torch.cat([tower(t) for tower, t in zip(self.towers, inputs, strict=True)], dim=1)
