"""DLRM (Naumov et al., "Deep Learning Recommendation Model for Personalization and
Recommendation Systems", 2019): a bottom MLP embeds the numeric fields, the result joins the
categorical embeddings, an interaction op ("dot": pairwise inner products, "cat":
concatenation) feeds a top MLP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from adrank.data.feature_map import FeatureMap
from adrank.models.base import CTRModel
from adrank.models.registry import register
from adrank.nn.embedding import FeatureEmbedding
from adrank.nn.interaction import InnerProductInteraction, require_pairs
from adrank.nn.mlp import MLPBlock, activation


@register("dlrm")
class DLRM(CTRModel):
    """E: (B, Fc, D) categorical embeddings; with numeric fields, d = act(MLP_bottom(x_num))
    (B, D) is appended as one more "field". Top MLP input:

    * ``cat``: flatten([E; d]) (B, (Fc+1)*D);
    * ``dot``: [<e_i, e_j>_{i<j}; d] (B, P + D), P over the Fc (+1) fields.

    Feature maps without numeric fields skip the bottom MLP. Shapes: features -> (B,).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        interaction_op: Literal["dot", "cat"] = "cat",
        bottom_mlp_units: Sequence[int] = (),
        bottom_mlp_activations: str = "relu",
        bottom_mlp_dropout: float = 0.0,
        top_mlp_units: Sequence[int] = (400, 400, 400),
        top_mlp_activations: str = "relu",
        top_mlp_dropout: float = 0.4,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(feature_map)
        if interaction_op not in ("dot", "cat"):
            raise ValueError(
                f"interaction_op={interaction_op!r} is not supported; use 'dot' or 'cat'"
            )
        self.interaction_op = interaction_op
        self.numeric_names = [f.name for f in feature_map.of_kind("numeric")]
        other = [f.name for f in feature_map.fields if f.kind != "numeric"]
        if not other:
            raise ValueError("DLRM needs at least one categorical or sequence field")
        self.embedding = FeatureEmbedding(feature_map, embedding_dim, fields=other)
        self.bottom_mlp: nn.Module | None = None
        num_fields = len(other)
        if self.numeric_names:
            self.bottom_mlp = nn.Sequential(
                MLPBlock(
                    len(self.numeric_names),
                    bottom_mlp_units,
                    bottom_mlp_activations,
                    dropout=bottom_mlp_dropout,
                    batch_norm=batch_norm,
                    output_dim=embedding_dim,
                ),
                activation(bottom_mlp_activations),
            )
            num_fields += 1
        if interaction_op == "dot":
            dense = ["<numeric fields>"] if self.numeric_names else []
            require_pairs("dlrm with interaction_op='dot'", [*other, *dense], "dot products")
            self.inner_product: InnerProductInteraction | None = InnerProductInteraction(num_fields)
            top_dim = self.inner_product.num_pairs + (embedding_dim if self.numeric_names else 0)
        else:
            self.inner_product = None
            top_dim = num_fields * embedding_dim
        self.top_mlp = MLPBlock(
            top_dim,
            top_mlp_units,
            top_mlp_activations,
            dropout=top_mlp_dropout,
            batch_norm=batch_norm,
            output_dim=1,
        )

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embedding(features)  # (B, Fc, D)
        dense = None
        if self.bottom_mlp is not None:
            x_num = torch.stack([features[n] for n in self.numeric_names], dim=1)  # (B, Fn)
            dense = self.bottom_mlp(x_num.to(emb.dtype))  # (B, D)
            emb = torch.cat([emb, dense.unsqueeze(1)], dim=1)  # (B, Fc+1, D)
        if self.inner_product is None:
            x = emb.flatten(1)
        else:
            x = self.inner_product(emb)  # (B, P)
            if dense is not None:
                x = torch.cat([x, dense], dim=-1)
        return self.top_mlp(x).squeeze(-1)
