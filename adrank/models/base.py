"""Base class for CTR models: a pure ``nn.Module`` with a documented auxiliary-loss hook.

Contract:
    * ``__init__(feature_map, *, <typed hyperparameters>)`` only builds layers;
    * ``forward(features) -> logits`` of shape (B,) (single task) or (B, T) (multi-task);
    * ``training_outputs(features)`` returns the logits plus any intermediate tensors the
      auxiliary loss needs (default: just the logits);
    * ``auxiliary_loss(outputs, labels)`` returns an extra loss term or ``None``. The trainer
      adds it to the main BCE loss. DCNv3's Tri-BCE is the canonical user.

Models never build optimizers, choose devices, read files or compute the main loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from adrank.data.feature_map import FeatureMap
from adrank.nn.embedding import FeatureEmbedding


@dataclass
class ModelOutput:
    """Logits (B,) or (B, T), plus named auxiliary tensors for :meth:`CTRModel.auxiliary_loss`."""

    logits: torch.Tensor
    aux: dict[str, torch.Tensor] = field(default_factory=dict)


def initialize_weights(model: nn.Module) -> None:
    """FuxiCTR's default init, which the BARS numbers were produced with: Xavier-normal
    weights and zero biases for every ``nn.Linear``/``nn.Conv1d``, then each module's own
    ``reset_custom_parameters()`` (e.g. gates that must start at 1). Embeddings keep their
    own init (normal, std 1e-4)."""
    for m in model.modules():
        if type(m) in (nn.Linear, nn.Conv1d):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for m in model.modules():
        reset = getattr(m, "reset_custom_parameters", None)
        if callable(reset):
            reset()


class CTRModel(nn.Module):
    """Base class; subclasses set ``self.embedding`` (or several FeatureEmbedding modules)."""

    #: number of label tasks the model predicts
    num_tasks: int = 1

    def __init__(self, feature_map: FeatureMap) -> None:
        super().__init__()
        self.feature_map = feature_map

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def training_outputs(self, features: dict[str, torch.Tensor]) -> ModelOutput:
        """Logits plus auxiliary tensors; override together with :meth:`auxiliary_loss`."""
        return ModelOutput(self(features))

    def auxiliary_loss(self, outputs: ModelOutput, labels: torch.Tensor) -> torch.Tensor | None:
        """Extra loss term added by the trainer (labels: float (B,) or (B, T)); default none."""
        return None

    def embedding_modules(self) -> list[FeatureEmbedding]:
        """Every FeatureEmbedding in the model (the trainer regularizes these)."""
        return [m for m in self.modules() if isinstance(m, FeatureEmbedding)]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
