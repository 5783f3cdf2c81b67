"""A model and its optimizer that follow a growing vocabulary (:class:`GrowingModel`).

The model's tables are sized by the growth state's capacity
(:meth:`~adrank.stream.vocab.VocabularyGrowth.capacity`); the optimizer is Adam for the
dense parameters and :class:`~adrank.train.row_adam.RowAdam` (per-row step counts, lazy)
for the tables. :meth:`GrowingModel.apply` takes a chunk's
:class:`~adrank.stream.vocab.GrowthStep`: when a table outgrew its rows the model is
rebuilt bigger with every id's row and optimizer state carried over, then the rows of the
admitted ids are re-initialised with fresh optimizer state.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from adrank.data.feature_map import FeatureMap
from adrank.models.base import CTRModel
from adrank.models.registry import build_model
from adrank.stream.tables import (
    capacity_feature_map,
    grow_model,
    grow_optimizer_state,
    reset_rows,
    table_rows,
)
from adrank.stream.vocab import GrowthStep
from adrank.train.optim import SparseDenseAdam, build_optimizer

logger = logging.getLogger(__name__)

__all__ = ["GrowingModel"]


class GrowingModel:
    """``model`` (built from the registry) + ``optimizer`` over tables of ``capacity`` rows.

    Args:
        model_name, params: the registry model and its hyperparameters.
        feature_map: the processor's feature map (vocabulary sizes are replaced by capacity).
        capacity: rows per table (see :meth:`VocabularyGrowth.capacity`).
        learning_rate: Adam's learning rate.
        seed: seeds the initialisation of the model and of re-initialised rows.
    """

    def __init__(
        self,
        model_name: str,
        params: dict[str, Any],
        feature_map: FeatureMap,
        capacity: dict[str, int],
        learning_rate: float,
        seed: int = 0,
    ) -> None:
        self.model_name = model_name
        self.params = dict(params)
        self.learning_rate = learning_rate
        self.generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.feature_map = capacity_feature_map(feature_map, capacity)
        self.model = build_model(model_name, self.feature_map, **self.params)
        self.optimizer = self._optimizer(self.model)
        self.grown = 0

    def _optimizer(self, model: CTRModel) -> SparseDenseAdam:
        device = next(model.parameters()).device
        optimizer = build_optimizer(
            model, self.learning_rate, device, sparse_embeddings=True, row_steps=True
        )
        assert isinstance(optimizer, SparseDenseAdam)
        return optimizer

    def rows(self) -> dict[str, int]:
        """Current rows per table."""
        return {t.table: t.rows for t in table_rows(self.model)}

    def apply(self, step: GrowthStep, feature_map: FeatureMap, capacity: dict[str, int]) -> None:
        """Follow one chunk's growth: grow the tables that need more rows than they have
        (keeping every row and its optimizer state), then reset the admitted ids' rows."""
        rows = self.rows()
        if any(capacity.get(t, 0) > n for t, n in rows.items()):
            self._grow(feature_map, capacity)
        for table, ids in step.admitted.items():
            reset_rows(self.model, self.optimizer, table, torch.as_tensor(ids), self.generator)

    def _grow(self, feature_map: FeatureMap, capacity: dict[str, int]) -> None:
        old_model, old_optimizer = self.model, self.optimizer
        new_map = capacity_feature_map(feature_map, capacity)
        device = next(old_model.parameters()).device
        new_model = build_model(self.model_name, new_map, **self.params).to(device)
        maps = grow_model(old_model, new_model)
        new_model.train(old_model.training)
        new_optimizer = self._optimizer(new_model)
        for group in new_optimizer.param_groups:  # keep a decayed learning rate
            group["lr"] = old_optimizer.param_groups[0]["lr"]
        grow_optimizer_state(old_optimizer, old_model, new_optimizer, new_model, maps)
        self.model, self.optimizer, self.feature_map = new_model, new_optimizer, new_map
        self.grown += 1
        logger.info("tables grown to %s", self.rows())
