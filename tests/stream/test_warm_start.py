"""``adrank train --init-from``: a run continues from another's weights, optimizer state
(per-row step counts for the tables) and processor; chains of warm starts load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adrank.artifact import load_artifact
from adrank.config import RunConfig
from adrank.pipeline import train_run
from adrank.stream.tables import table_rows
from adrank.stream.warm_start import GROWTH_FILE, WarmStart

OVERRIDES = [
    "params.hidden_units=[16]",
    "train.max_epochs=1",
    "train.num_threads=1",
    "train.task=like",
    "train.batch_size=4096",
]


def _config() -> RunConfig:
    from adrank.config import resolve_run_config

    return resolve_run_config("movielens_100k", "deepfm", None, OVERRIDES)


@pytest.fixture(scope="module")
def first_run(data_dir: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "first"
    train_run(_config(), out, data_dir=data_dir, cache_dir=cache_dir)
    return out


def test_warm_start_carries_weights_and_optimizer_state(
    first_run: Path, data_dir: Path, cache_dir: Path
) -> None:
    warm = WarmStart(first_run)
    warm.prepared = warm.prepare("movielens_100k", data_dir=data_dir, cache_dir=cache_dir)
    feature_map = warm.feature_map(warm.prepared.feature_map)
    from adrank.models.registry import build_model

    config = _config()
    model = build_model(config.model, feature_map, **config.params)
    warm.load_into(model)
    optimizer = warm.optimizer(model, 1e-3)
    old = warm.artifact.model
    old_params, new_params = dict(old.named_parameters()), dict(model.named_parameters())
    checkpoint = torch.load(first_run / "checkpoint.pt", weights_only=True)["optimizer"]
    old_steps = {int(torch.as_tensor(s["step"])) for s in checkpoint["state"].values()}
    assert len(old_steps) == 1  # plain Adam: one step count for every parameter
    (steps,) = old_steps
    for old_t, new_t in zip(table_rows(old), table_rows(model), strict=True):
        assert (old_t.param, old_t.table) == (new_t.param, new_t.table)
        assert new_t.rows >= old_t.rows
        before = old_params[old_t.param][old_t.offset : old_t.offset + old_t.rows]
        after = new_params[new_t.param][new_t.offset : new_t.offset + old_t.rows]
        assert torch.equal(before, after)
        state = optimizer.sparse.state[new_params[new_t.param]]
        rows = state["step"][new_t.offset : new_t.offset + old_t.rows]
        assert (rows == steps).all()
    for name, p in model.named_parameters():
        if p.dim() == 1:
            assert torch.equal(p, old_params[name]), name


def test_train_init_from_chains(
    first_run: Path, data_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    second = tmp_path / "second"
    train_run(_config(), second, data_dir=data_dir, cache_dir=cache_dir, init_from=first_run)
    assert (second / GROWTH_FILE).exists()
    art = load_artifact(second)
    assert (
        art.processor.vocab_["item_id"][:5]
        == load_artifact(first_run).processor.vocab_["item_id"][:5]
    )
    third = tmp_path / "third"  # a warm start from a warm-started run (RowAdam state)
    train_run(_config(), third, data_dir=data_dir, cache_dir=cache_dir, init_from=second)
    assert load_artifact(third).metrics["test"]["like_auc"] > 0.6


def test_init_from_refuses_another_architecture(
    first_run: Path, data_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    config = _config().with_overrides(["params.embedding_dim=4"])
    with pytest.raises(ValueError, match="embedding_dim"):
        train_run(
            config, tmp_path / "x", data_dir=data_dir, cache_dir=cache_dir, init_from=first_run
        )
