"""An embedding table initialised from pretrained vectors (the schema's ``pretrained``
fields, see :mod:`adrank.data.pretrained`).

The vectors (V, d) are either a buffer (``freeze=True``: never updated, saved in the
state dict so serving uses the same table) or a parameter (fine-tuned). When ``d`` differs
from the model's embedding dim D, a learned linear projection without bias maps them to D,
so zero rows (padding, OOV, ids without a vector) stay zero.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class PretrainedTable(nn.Module):
    """Lookup ids (any shape) -> (..., output_dim) through pretrained vectors.

    Args:
        vectors: (V, d) float array, row ``i`` the vector of id ``i``.
        output_dim: D, the width the model wants.
        freeze: keep the vectors fixed (a buffer) instead of fine-tuning them.
    """

    def __init__(self, vectors: Any, output_dim: int, freeze: bool) -> None:
        super().__init__()
        initial = torch.as_tensor(np.asarray(vectors, dtype=np.float32)).clone()
        if initial.dim() != 2:
            raise ValueError(f"pretrained vectors must be (V, d), got {tuple(initial.shape)}")
        self.freeze = freeze
        self._initial = initial  # a plain attribute: reset_parameters restores it
        if freeze:
            self.register_buffer("weight", initial.clone())
        else:
            self.weight = nn.Parameter(initial.clone())
        dim = initial.shape[1]
        self.projection: nn.Module = (
            nn.Identity() if dim == output_dim else nn.Linear(dim, output_dim, bias=False)
        )

    @property
    def num_embeddings(self) -> int:
        return int(self.weight.shape[0])

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.copy_(self._initial.to(self.weight.device))
        if isinstance(self.projection, nn.Linear):
            self.projection.reset_parameters()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.projection(F.embedding(ids, self.weight))
