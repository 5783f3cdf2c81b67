"""STAR: star-topology adaptive recommender for multi-domain CTR prediction (Sheng et al.,
"One Model to Serve All: Star Topology Adaptive Recommender for Multi-Domain CTR
Prediction", CIKM 2021).

Three parts, on the concatenated field embeddings:

* **partitioned normalisation** (:class:`~adrank.nn.domain.PartitionedNorm`): per-domain
  statistics and ``gamma * gamma_d``, ``beta + beta_d``;
* **star-topology FCN** (:class:`~adrank.nn.domain.StarMLP`): each layer's weight is the
  shared weight times the domain's own (elementwise), its bias their sum;
* **auxiliary network**: a small MLP on the domain embedding and the field embeddings,
  whose logit is added to the FCN's, so domain differences reach the output directly.

The domain comes from the schema's ``domain`` role (a categorical feature too; see
:mod:`adrank.nn.domain`). The OOV slot is the fallback for unknown domains, trained by
domain dropout (``domain_dropout``); the shared weights alone are never a trained path.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from adrank.data.feature_map import FeatureMap
from adrank.models.base import CTRModel
from adrank.models.registry import register
from adrank.nn.domain import DomainInput, PartitionedNorm, StarMLP
from adrank.nn.embedding import FeatureEmbedding
from adrank.nn.mlp import MLPBlock


@register("star")
class STAR(CTRModel):
    """logit = StarFCN_d(PN_d(flatten(E))) + Aux([e_d, flatten(E)]).

    Shapes: E (B, F, D); e_d (B, D); features -> (B,).
    """

    multi_domain = True
    required_roles = ("domain",)

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        hidden_units: Sequence[int] = (256, 128, 64),
        aux_hidden_units: Sequence[int] = (64,),
        net_dropout: float = 0.1,
        domain_dropout: float = 0.1,
        partitioned_norm: bool = True,
    ) -> None:
        super().__init__(feature_map)
        self.domain = DomainInput(feature_map, domain_dropout)
        slots = self.domain.num_slots
        self.embedding = FeatureEmbedding(feature_map, embedding_dim)
        width = feature_map.num_fields * embedding_dim
        self.norm = PartitionedNorm(width, slots) if partitioned_norm else None
        self.fcn = StarMLP(width, list(hidden_units), slots, net_dropout)
        self.domain_embedding = nn.Embedding(slots, embedding_dim)
        self.aux = MLPBlock(
            width + embedding_dim, aux_hidden_units, dropout=net_dropout, output_dim=1
        )

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        features, slot = self.domain(features)  # slot: (B,)
        flat = self.embedding(features).flatten(1)  # (B, F*D)
        x = flat if self.norm is None else self.norm(flat, slot)
        main = self.fcn(x, slot)  # (B,)
        aux_in = torch.cat([self.domain_embedding(slot), flat], dim=1)  # (B, D + F*D)
        return main + self.aux(aux_in).squeeze(-1)
