"""Base class for CTR models: a pure ``nn.Module`` with a documented auxiliary-loss hook.

Contract:
    * ``__init__(feature_map, *, <typed hyperparameters>)`` only builds layers;
    * ``forward(features) -> logits`` of shape (B,) (single task) or (B, K) (one column per
      name in ``outputs``);
    * ``outputs``: ``None`` for a single-task model (one logit for whichever task it is
      trained on, see :mod:`adrank.tasks`), else the output names it emits (``pctr``,
      ``pcvr``, ``pctcvr`` or task names); ``trained_outputs`` (default ``outputs``) are the
      outputs the loss is computed on (ESMM: ``pctr`` and ``pctcvr``);
    * ``training_outputs(features)`` returns the logits plus any intermediate tensors the
      auxiliary loss needs (default: just the logits);
    * ``auxiliary_loss(outputs, labels, batch)`` returns an extra loss term or ``None``. The
      trainer adds it to the tasks' loss. DCNv3's Tri-BCE is the canonical user.

Models never build optimizers, choose devices, read files or compute the main loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from adrank.data.batches import Batch
from adrank.data.feature_map import FeatureMap
from adrank.nn.embedding import FeatureEmbedding


@dataclass
class ModelOutput:
    """Logits (B,) or (B, K), plus named auxiliary tensors for :meth:`CTRModel.auxiliary_loss`."""

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

    #: output names of the logit columns; ``None``: one logit for the task it is trained on
    outputs: tuple[str, ...] | None = None
    #: outputs the loss is computed on (``None``: the same as ``outputs``)
    trained_outputs: tuple[str, ...] | None = None
    #: roles the schema must declare for this model (STAR, PEPNet: ``("domain",)``)
    required_roles: tuple[str, ...] = ()
    #: a multi-domain model (``adrank models`` lists it in that family)
    multi_domain: bool = False

    def __init__(self, feature_map: FeatureMap) -> None:
        super().__init__()
        self.feature_map = feature_map

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def training_outputs(self, features: dict[str, torch.Tensor]) -> ModelOutput:
        """Logits plus auxiliary tensors; override together with :meth:`auxiliary_loss`."""
        return ModelOutput(self(features))

    def auxiliary_loss(
        self, outputs: ModelOutput, labels: torch.Tensor, batch: Batch | None = None
    ) -> torch.Tensor | None:
        """Extra loss term added by the trainer; default none.

        ``labels`` are the targets of the trained outputs: float (B,) for one output, (B, K)
        for several; ``batch`` is the whole batch (roles, histories) for losses that need
        more than the labels."""
        return None

    def cuda_graph_blocker(self) -> str | None:
        """Why this model's training step cannot be recorded as one CUDA graph
        (``TrainConfig.cuda_graph``), or ``None`` when it can: a step that reads a device
        value on the host, or sizes a tensor by the data, cannot be recorded
        (``tests/train/test_recordable_steps.py`` checks every registered model)."""
        return None

    def embedding_modules(self) -> list[FeatureEmbedding]:
        """Every FeatureEmbedding in the model (the trainer regularizes these)."""
        return [m for m in self.modules() if isinstance(m, FeatureEmbedding)]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
