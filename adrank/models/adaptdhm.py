"""AdaptDHM: adaptive distribution hierarchical model (Li et al., "AdaptDHM: Adaptive
Distribution Hierarchical Model for Multi-Domain CTR Prediction", arXiv 2211.12105, 2022).

Instead of trusting the domain labels, AdaptDHM routes each sample to one of
``num_clusters`` learned *distributions*:

* **routing** (no gradient): the L2-normalised flattened embedding ``x`` is compared with
  ``K`` unit-norm cluster centres by dot product, ``r = softmax(x C^T / temperature)``
  (B, K); in training this repeats ``routing_iterations`` times, each time moving every
  centre toward the mean of its soft members,
  ``C_k <- normalise(beta * C_k + (1 - beta) * sum_i r_ik x_i / sum_i r_ik)``; the sample
  goes to ``argmax r``. The centres are a buffer (saved with the model, not trained by SGD);
* **hierarchy**: a shared bottom MLP feeds one tower per cluster, whose layers are the
  shared layer times the cluster's own (the star topology of
  :class:`~adrank.nn.domain.StarMLP`, clusters as slots).

Two departures from the paper, whose update adds the batch *sum* ``r^T x`` at temperature
1: with batches of thousands that sum swamps ``beta * C``, so after one step every centre
was the batch mean (pairwise cosine 1.0), every row of a large batch went to one cluster,
and a row scored alone went to another by float rounding (9 % of movielens_100k_domains
test rows, scores off by up to 0.13). The mean keeps ``beta`` meaningful; at temperature 1
soft assignments over unit vectors are near uniform and the centres still merge, while
0.1 (the default; not tuned) keeps them apart (cosines 0.48-0.88, clusters used 29-38 %).

Domain labels are not needed; a schema's domain column is just another feature here, so an
unknown domain needs no fallback (it routes by its features like any other sample).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from adrank.data.feature_map import FeatureMap
from adrank.models.base import CTRModel
from adrank.models.registry import register
from adrank.nn.domain import StarMLP
from adrank.nn.embedding import FeatureEmbedding
from adrank.nn.mlp import MLPBlock


class DistributionRouter(nn.Module):
    """Hard routing to the nearest of ``num_clusters`` EMA-updated centres.

    Shapes: x (B, D) -> cluster ids (B,) int64.
    """

    def __init__(
        self,
        dim: int,
        num_clusters: int,
        beta: float,
        iterations: int,
        temperature: float = 0.1,
    ) -> None:
        super().__init__()
        if num_clusters < 1:
            raise ValueError(f"num_clusters must be >= 1, got {num_clusters}")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.beta = beta
        self.iterations = iterations
        self.temperature = temperature
        generator = torch.Generator().manual_seed(0)
        centres = F.normalize(torch.randn(num_clusters, dim, generator=generator), dim=1)
        self.register_buffer("centres", centres)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            # in the centres' dtype (float32 unless the model was converted): a float64
            # model failed here with a dtype mismatch
            x = F.normalize(x.detach().to(self.centres.dtype), dim=1)
            if self.training:
                centres = self.centres
                for _ in range(self.iterations):
                    r = torch.softmax(x @ centres.T / self.temperature, dim=1)  # (B, K)
                    mass = r.sum(0)  # (K,)
                    # each centre moves toward the mean of its soft members; a centre with
                    # none (mass 0) stays where it is
                    members = (r.T @ x) / mass.clamp_min(1e-12).unsqueeze(1)
                    moved = self.beta * centres + (1 - self.beta) * members
                    centres = torch.where(
                        (mass > 0).unsqueeze(1), F.normalize(moved, dim=1), centres
                    )
                self.centres.copy_(centres)
            return torch.argmax(x @ self.centres.T, dim=1)


@register("adaptdhm")
class AdaptDHM(CTRModel):
    """x = flatten(E); h = shared_bottom(x); k = route(x); logit = StarTower_k(h).

    Shapes: E (B, F, D); features -> (B,).
    """

    multi_domain = True

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        bottom_hidden_units: Sequence[int] = (256,),
        tower_hidden_units: Sequence[int] = (128, 64),
        num_clusters: int = 3,
        beta: float = 0.9,
        routing_iterations: int = 3,
        net_dropout: float = 0.1,
        temperature: float = 0.1,
    ) -> None:
        super().__init__(feature_map)
        self.embedding = FeatureEmbedding(feature_map, embedding_dim)
        width = feature_map.num_fields * embedding_dim
        self.router = DistributionRouter(width, num_clusters, beta, routing_iterations, temperature)
        self.bottom = MLPBlock(width, bottom_hidden_units, dropout=net_dropout)
        self.towers = StarMLP(
            self.bottom.output_dim, list(tower_hidden_units), num_clusters, net_dropout
        )

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.embedding(features).flatten(1)  # (B, F*D)
        cluster = self.router(x)  # (B,)
        return self.towers(self.bottom(x), cluster)
