"""LR: logistic regression over one-hot features (the CTR baseline)."""

from __future__ import annotations

import torch

from adrank.data.feature_map import FeatureMap
from adrank.models.base import CTRModel
from adrank.models.registry import register
from adrank.nn.interaction import LinearTerm


@register("lr")
class LR(CTRModel):
    """Logistic regression: logit = b + sum_f w_{x_f}. Shapes: features -> (B,)."""

    def __init__(self, feature_map: FeatureMap) -> None:
        super().__init__(feature_map)
        self.linear = LinearTerm(feature_map)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.linear(features)
