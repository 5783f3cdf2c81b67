"""An embedding table initialised from pretrained vectors (the schema's ``pretrained``
fields, see :mod:`adrank.data.pretrained`).

The vectors (V, d) are either a buffer (``freeze=True``: never updated, saved in the
state dict so serving uses the same table) or a parameter (fine-tuned). When ``d`` differs
from the model's embedding dim D, a learned linear projection without bias maps them to D,
so zero rows (padding, OOV, ids without a vector) stay zero. The projection starts at the
scale of the learned embeddings (normal, std ``init_std``, 1e-4 by default), so the vectors
do not swamp the other fields at the start of training; it keeps that init through
:func:`~adrank.models.base.initialize_weights` (``reset_custom_parameters``).
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
        init_std: std of the projection's normal init.
    """

    def __init__(self, vectors: Any, output_dim: int, freeze: bool, init_std: float = 1e-4) -> None:
        super().__init__()
        self.init_std = init_std
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
        self.reset_custom_parameters()

    def reset_custom_parameters(self) -> None:
        if isinstance(self.projection, nn.Linear):
            nn.init.normal_(self.projection.weight, std=self.init_std)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.projection(F.embedding(ids, self.weight))
