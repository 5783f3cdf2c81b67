"""The drift-aware strategies: the error-based detector, the wrappers' losses and feature
prior by hand, and every strategy over DeepFM and DCNv2 on real MovieLens chunks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from adrank.config import TrainConfig
from adrank.data.batches import Batch, TensorData
from adrank.data.feature_map import FeatureMap, FieldInfo
from adrank.models.base import ModelOutput
from adrank.models.registry import build_model
from adrank.stream.ensembles import ErrorDriftDetector
from adrank.stream.protocol import StreamSettings, cut_chunks, load_stream
from adrank.stream.runner import run_stream
from adrank.stream.wrappers import FeaturePrior, UpdateWrapper, frozen_copy

SMALL = {
    "deepfm": {"embedding_dim": 4, "hidden_units": [16], "net_dropout": 0.0},
    "dcnv2": {"embedding_dim": 4, "num_cross_layers": 1, "parallel_dnn_hidden_units": [16],
              "stacked_dnn_hidden_units": [16]},
}  # fmt: skip


def test_error_drift_detector_flags_a_jump_and_restarts() -> None:
    detector = ErrorDriftDetector(threshold=2.0, min_history=3)
    flags = [detector.update(e) for e in (0.50, 0.51, 0.49, 0.50, 0.70, 0.71, 0.70, 0.69)]
    assert flags == [False, False, False, False, True, False, False, False]
    assert detector.history == [0.70, 0.71, 0.70, 0.69]  # the history restarted at the drift


def _tiny_map() -> FeatureMap:
    return FeatureMap(fields=(FieldInfo("a", "categorical", 4, 0, "a"),), labels=("click",))


def test_feature_prior_offsets_by_hand() -> None:
    fm = _tiny_map()
    ids = torch.tensor([2, 2, 2, 3])
    labels = torch.tensor([[1.0], [1.0], [0.0], [0.0]])
    prior = FeaturePrior(strength=2.0)
    prior.add(TensorData(Batch({"a": ids}, labels)), fm, 0)
    offsets = prior.offsets({"a": 4})["a"]
    p0 = (2 + 1) / (4 + 2)  # smoothed global rate 0.5

    def logit(p: float) -> float:
        return math.log(p / (1 - p))

    expected = [0.0, 0.0, logit((2 + 2 * p0) / (3 + 2)) - logit(p0), logit((0 + 1) / (1 + 2))]
    torch.testing.assert_close(offsets, torch.tensor(expected, dtype=torch.float32))


def test_confidence_ranking_and_model_prior_losses_by_hand() -> None:
    fm = _tiny_map()
    model = build_model("lr", fm)
    wrapper = UpdateWrapper(model, frozen_copy(model), prior_weight=0.5, ranking_weight=2.0)
    new = torch.tensor([1.0, -0.5])
    old = torch.tensor([0.2, 0.3])
    y = torch.tensor([1.0, 0.0])
    loss = wrapper.auxiliary_loss(ModelOutput(new, {"previous": old}), y)
    prior = torch.nn.functional.binary_cross_entropy_with_logits(new, torch.sigmoid(old))
    ranking = (math.log1p(math.exp(-(1.0 - 0.2))) + math.log1p(math.exp(-(0.3 + 0.5)))) / 2
    torch.testing.assert_close(loss, 0.5 * prior + 2.0 * torch.tensor(ranking))
    wrapper.train()
    assert not wrapper.previous.training and wrapper.model.training


@pytest.fixture(scope="module")
def chunks(data_dir: Path):
    schema, frame = load_stream("movielens_100k", data_dir)
    return schema, cut_chunks(frame.head(6_000), "timestamp", chunks=3)


@pytest.mark.parametrize("model", ["deepfm", "dcnv2"])
@pytest.mark.parametrize(
    "strategy", ["data_driven_prior", "confidence_ranking", "drift_ensemble", "adamoe"]
)
def test_strategy_runs(chunks, model: str, strategy: str) -> None:
    schema, parts = chunks
    config = TrainConfig(task="like", batch_size=256, num_threads=1, patience=1)
    records = run_stream(schema, parts, model, SMALL[model], config, strategy, None,
                         StreamSettings(max_epochs=1), 0)  # fmt: skip
    assert [r["chunk"] for r in records] == [1, 2]
    assert all(0.5 < r["auc"] < 1 and np.isfinite(r["logloss"]) for r in records)
    if strategy == "adamoe":  # two experts, each trained on 90 % of the chunk
        assert records[1]["compute"] == 2 * 1_800
        assert sum(records[1]["strategy_info"]["weights"]) == pytest.approx(1.0, abs=1e-3)
    if strategy == "drift_ensemble":
        assert records[1]["strategy_info"]["members"] >= 1
