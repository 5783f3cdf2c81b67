"""ESMM (Ma et al., "Entire Space Multi-Task Model: An Effective Approach for Estimating
Post-Click Conversion Rate", SIGIR 2018): a CTR tower and a CVR tower over shared
embeddings, trained on all impressions through pCTR and pCTCVR = pCTR x pCVR."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from adrank.data.feature_map import FeatureMap
from adrank.models.multitask import MultiTaskModel
from adrank.models.registry import register
from adrank.nn.embedding import FeatureEmbedding
from adrank.nn.towers import TaskTowers


@register("esmm")
class ESMM(MultiTaskModel):
    """logits = [CTR_tower(x), CVR_tower(x)], x = flatten(E), E: (B, F, D).
    Shapes: features -> (B, 2), columns ``("pctr", "pcvr")``.

    The loss sees ``pctr`` (click label, every impression) and ``pctcvr = pctr * pcvr``
    (click x conversion label, every impression; derived by :mod:`adrank.tasks` in log
    space). The CVR tower has no loss of its own: it learns only through ``pctcvr``, on the
    entire impression space, which is ESMM's answer to sample selection bias and sparse
    conversion labels. Needs a click/conversion dataset (a task with ``given: <click>``).
    Default tower widths are the paper's (360, 200, 80).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        tower_hidden_units: Sequence[int] = (360, 200, 80),
        hidden_activations: str = "relu",
        net_dropout: float = 0.2,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(feature_map, ("pctr", "pcvr"), trained_outputs=("pctr", "pctcvr"))
        self.embedding = FeatureEmbedding(feature_map, embedding_dim)
        self.towers = TaskTowers(
            feature_map.num_fields * embedding_dim,
            2,
            tower_hidden_units,
            hidden_activations,
            net_dropout,
            batch_norm,
        )

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embedding(features)  # (B, F, D)
        return self.towers(emb.flatten(1))  # (B, 2): pCTR and pCVR logits
