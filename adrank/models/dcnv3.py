"""DCNv3 (Li et al., "DCNv3: Towards Next Generation Deep Cross Network for CTR
Prediction", 2024): a Linear Cross Network (LCN) and an Exponential Cross Network (ECN),
both with Self-Mask, each producing its own logit; trained with the Tri-BCE loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from adrank.data.batches import Batch
from adrank.data.feature_map import FeatureMap
from adrank.models.base import CTRModel, ModelOutput
from adrank.models.registry import register
from adrank.nn.cross import ExponentialCrossNetwork, LinearCrossNetwork
from adrank.nn.embedding import FeatureEmbedding


@register("dcnv3")
class DCNv3(CTRModel):
    """logit = (LCN(x) + ECN(x)) / 2 with per-head inputs x: (B, H, F*D).

    The embedding has width ``embedding_dim * num_heads`` per field; it is split into H heads
    of D, and within each head the first halves of all fields come before the second halves
    (so the Self-Mask's masked half pairs with the second half of every field).

    Tri-BCE (:meth:`auxiliary_loss`): the trainer's BCE on the mean logit plus
    ``w_s * BCE(lcn) + w_d * BCE(ecn)`` with ``w = max(0, BCE(sub) - BCE(mean))``, treated as
    constants (detached). ``detach_loss_weights=False`` keeps them in the graph as the
    authors' code does; their gradient then also pushes the mean logit's BCE *up*, and on
    Frappe (3 seeds, same dropout) it scored 0.9845 +- 0.0018 against 0.9851 +- 0.0010
    detached.

    Shapes: features -> (B,).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        num_deep_cross_layers: int = 4,
        num_shallow_cross_layers: int = 4,
        deep_net_dropout: float = 0.1,
        shallow_net_dropout: float = 0.3,
        layer_norm: bool = True,
        batch_norm: bool = True,
        num_heads: int = 1,
        detach_loss_weights: bool = True,
    ) -> None:
        super().__init__(feature_map)
        if num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {num_heads}")
        self.num_heads = num_heads
        self.detach_loss_weights = detach_loss_weights
        self.embedding = FeatureEmbedding(feature_map, embedding_dim * num_heads)
        input_dim = feature_map.num_fields * embedding_dim
        common = {"layer_norm": layer_norm, "batch_norm": batch_norm, "num_heads": num_heads}
        self.ecn = ExponentialCrossNetwork(
            input_dim, num_deep_cross_layers, dropout=deep_net_dropout, **common
        )
        self.lcn = LinearCrossNetwork(
            input_dim, num_shallow_cross_layers, dropout=shallow_net_dropout, **common
        )

    def _heads(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embedding(features)  # (B, F, H*D)
        batch, fields, _ = emb.shape
        heads = emb.reshape(batch, fields, self.num_heads, -1).transpose(1, 2)  # (B, H, F, D)
        first, second = torch.tensor_split(heads, 2, dim=-1)  # (B, H, F, D/2) each
        return torch.cat([first.flatten(2), second.flatten(2)], dim=-1)  # (B, H, F*D)

    def training_outputs(self, features: dict[str, torch.Tensor]) -> ModelOutput:
        x = self._heads(features)
        ecn_logit = self.ecn(x).mean(dim=1)  # (B,)
        lcn_logit = self.lcn(x).mean(dim=1)  # (B,)
        logits = 0.5 * (ecn_logit + lcn_logit)
        return ModelOutput(logits, aux={"lcn_logit": lcn_logit, "ecn_logit": ecn_logit})

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.training_outputs(features).logits

    def auxiliary_loss(
        self, outputs: ModelOutput, labels: torch.Tensor, batch: Batch | None = None
    ) -> torch.Tensor:
        """Tri-BCE extra terms (labels: float (B,)); the main BCE is added by the trainer."""
        labels = labels.reshape(outputs.logits.shape).to(outputs.logits.dtype)
        main = F.binary_cross_entropy_with_logits(outputs.logits, labels)
        extra = torch.zeros((), device=main.device, dtype=main.dtype)
        for name in ("lcn_logit", "ecn_logit"):
            sub = F.binary_cross_entropy_with_logits(outputs.aux[name], labels)
            weight = (sub - main).clamp_min(0.0)
            extra = extra + (weight.detach() if self.detach_loss_weights else weight) * sub
        return extra
