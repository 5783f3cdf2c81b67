"""DCN-V2 (Wang et al., "DCN V2: Improved Deep & Cross Network and Practical Lessons for
Web-scale Learning to Rank Systems", WWW 2021): full-matrix (or mixture of low-rank experts)
cross network, combined with MLPs in a stacked and/or parallel structure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from adrank.data.feature_map import FeatureMap
from adrank.models.base import CTRModel
from adrank.models.registry import register
from adrank.nn.cross import CrossNetV2
from adrank.nn.embedding import FeatureEmbedding
from adrank.nn.mlp import MLPBlock

Structure = Literal["crossnet_only", "stacked", "parallel", "stacked_parallel"]
_STRUCTURES = ("crossnet_only", "stacked", "parallel", "stacked_parallel")


@register("dcnv2")
class DCNv2(CTRModel):
    """x_0 = flatten(E): (B, F*D); c = CrossNetV2(x_0). Output layer input by structure:

    * ``crossnet_only``: c;
    * ``stacked``: MLP_s(c);
    * ``parallel``: [c; MLP_p(x_0)];
    * ``stacked_parallel``: [MLP_s(c); MLP_p(x_0)].

    ``use_low_rank_mixture`` swaps the full-rank cross layers for ``num_experts`` gated
    experts of rank ``low_rank``. Shapes: features -> (B,).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        model_structure: Structure = "parallel",
        num_cross_layers: int = 4,
        use_low_rank_mixture: bool = False,
        low_rank: int = 32,
        num_experts: int = 4,
        stacked_dnn_hidden_units: Sequence[int] = (500, 500, 500),
        parallel_dnn_hidden_units: Sequence[int] = (400, 400, 400),
        dnn_activations: str = "relu",
        net_dropout: float = 0.4,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(feature_map)
        if model_structure not in _STRUCTURES:
            raise ValueError(
                f"model_structure={model_structure!r} is not supported; expected one of "
                f"{list(_STRUCTURES)}"
            )
        self.model_structure = model_structure
        self.embedding = FeatureEmbedding(feature_map, embedding_dim)
        input_dim = feature_map.num_fields * embedding_dim
        self.crossnet = CrossNetV2(
            input_dim,
            num_cross_layers,
            low_rank=low_rank if use_low_rank_mixture else None,
            num_experts=num_experts,
        )

        def mlp(units: Sequence[int], name: str) -> MLPBlock:
            if not units:
                raise ValueError(f"model_structure={model_structure!r} needs non-empty {name}")
            return MLPBlock(
                input_dim, units, dnn_activations, dropout=net_dropout, batch_norm=batch_norm
            )

        stacked = model_structure in ("stacked", "stacked_parallel")
        parallel = model_structure in ("parallel", "stacked_parallel")
        self.stacked_dnn = (
            mlp(stacked_dnn_hidden_units, "stacked_dnn_hidden_units") if stacked else None
        )
        self.parallel_dnn = (
            mlp(parallel_dnn_hidden_units, "parallel_dnn_hidden_units") if parallel else None
        )
        final_dim = self.stacked_dnn.output_dim if self.stacked_dnn is not None else input_dim
        if self.parallel_dnn is not None:
            final_dim += self.parallel_dnn.output_dim
        self.fc = nn.Linear(final_dim, 1)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        x0 = self.embedding(features).flatten(1)  # (B, F*D)
        out = self.crossnet(x0)
        if self.stacked_dnn is not None:
            out = self.stacked_dnn(out)
        if self.parallel_dnn is not None:
            out = torch.cat([out, self.parallel_dnn(x0)], dim=-1)
        return self.fc(out).squeeze(-1)
