"""Edge cases of the position methods and the synthetic position logs (tiny data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from adrank.config import TrainConfig
from adrank.data.batches import Batch, TensorData
from adrank.data.prepare import PreparedData, prepare_frames
from adrank.data.schema import Schema
from adrank.debias import PositionDataError, build_position_method, build_position_model
from adrank.debias.synthetic import PositionLogSpec, position_log_schema, simulate_position_logs
from adrank.train.trainer import Trainer

FIELDS = ("user", "item")


def logs(rows: int = 400, seed: int = 0) -> dict[str, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    users, items = rng.integers(0, 10, rows), rng.integers(0, 12, rows)
    logit = rng.normal(0, 1, 10)[users] + rng.normal(0, 1, 12)[items]
    frame = pl.DataFrame({"user": users.astype(str), "item": items.astype(str)})
    spec = PositionLogSpec(list_size=5, temperature=1.0, seed=seed)
    return simulate_position_logs({"train": frame}, {"train": logit}, spec, group_column="user")


def cfg(method: str, **kw) -> TrainConfig:
    base = dict(position_method=method, position_max=5, max_epochs=1, batch_size=64, progress=False)
    return TrainConfig(**(base | kw))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    out = tmp_path_factory.mktemp("edge") / "prepared"
    return prepare_frames(position_log_schema(FIELDS), logs(), out)


def with_positions(data: TensorData, positions: torch.Tensor) -> TensorData:
    batch = data.data
    roles = {**batch.roles, "position": positions}
    return TensorData(Batch(batch.features, batch.labels, roles=roles))


@pytest.mark.parametrize("method", ["pal", "dla", "kd", "feature"])
@pytest.mark.parametrize("bad", [0, -3])
def test_positions_below_one_are_refused_not_merged_into_the_top_slot(method, bad, prepared):
    """Positions count from 1 (the top slot); 0-based or negative positions used to be
    clipped silently to 1, merging two slots into the one whose examination PAL/DLA fix
    at 1."""
    fm = prepared.feature_map
    train = TensorData.from_parquet(prepared.splits["train"], fm)
    positions = train.data.roles["position"].clone()
    positions[3] = bad
    train = with_positions(train, positions)
    config = cfg(method)
    model = build_position_model("lr", fm, {}, config)
    position = build_position_method(config, model, model_name="lr", params={})
    with pytest.raises(PositionDataError, match=rf"'position'.*{bad}.*count from 1"):
        Trainer(model, config, position=position).fit(train)


def test_non_finite_positions_are_refused(prepared):
    fm = prepared.feature_map
    train = TensorData.from_parquet(prepared.splits["train"], fm)
    positions = train.data.roles["position"].float()
    positions[5] = float("nan")
    train = with_positions(train, positions)
    config = cfg("pal")
    model = build_position_model("lr", fm, {}, config)
    with pytest.raises(PositionDataError, match=r"'position'.*nan"):
        Trainer(model, config, position=build_position_method(config, model)).fit(train)


def test_positions_above_position_max_are_clipped_as_documented(prepared):
    fm = prepared.feature_map
    train = TensorData.from_parquet(prepared.splits["train"], fm)
    config = cfg("pal", position_max=3)
    model = build_position_model("lr", fm, {}, config)
    method = build_position_method(config, model)
    assert method is not None
    ids = method.positions(train.data)
    assert int(ids.min()) == 1 and int(ids.max()) == 3
    raw = train.data.roles["position"]
    assert torch.equal(ids[raw >= 3], torch.full_like(ids[raw >= 3], 3))


def multitask_prepared(tmp_path: Path) -> PreparedData:
    frames = {
        k: v.with_columns((pl.col("click") * (pl.col("user").cast(pl.Int64) % 2)).alias("buy"))
        for k, v in logs().items()
    }
    schema = Schema.from_dict(
        {
            "features": [{"name": f, "type": "categorical"} for f in FIELDS],
            "tasks": [
                {"name": "click", "label": "click"},
                {"name": "conversion", "label": "buy", "given": "click"},
            ],
            "roles": {"position": "position"},
        }
    )
    return prepare_frames(schema, frames, tmp_path / "p")


@pytest.mark.parametrize("model_name", ["esmm", "mmoe"])
def test_multi_task_model_with_a_position_method_names_the_way_out(model_name, tmp_path):
    """The error used to advise `set train.task`, which a multi-task model refuses."""
    prep = multitask_prepared(tmp_path)
    config = cfg("pal")
    model = build_position_model(model_name, prep.feature_map, {}, config)
    with pytest.raises(ValueError, match=r"multi-task model.*single-task model") as info:
        build_position_method(config, model, model_name=model_name)
    assert "set train.task)" not in str(info.value)


@pytest.mark.parametrize("method", ["pal", "kd", "dla", "feature"])
def test_conditional_task_with_a_position_method_is_refused(method, tmp_path):
    """A task learned only where its `given` label is 1 (conversion given click) used to be
    trained by the position loss on every impression, its mask ignored."""
    prep = multitask_prepared(tmp_path)
    config = cfg(method, task="conversion")
    model = build_position_model("lr", prep.feature_map, {}, config)
    with pytest.raises(ValueError, match=r"'conversion'.*'click' = 1"):
        build_position_method(config, model, model_name="lr", params={})


def test_click_task_of_multi_task_data_still_trains(tmp_path):
    prep = multitask_prepared(tmp_path)
    config = cfg("pal", task="click")
    model = build_position_model("lr", prep.feature_map, {}, config)
    method = build_position_method(config, model, model_name="lr", params={})
    train = TensorData.from_parquet(prep.splits["train"], prep.feature_map)
    Trainer(model, config, position=method).fit(train)


def test_split_shorter_than_one_list_is_a_clear_error():
    frame = pl.DataFrame({"user": ["a", "b", "c"]})
    spec = PositionLogSpec(list_size=5, seed=0)
    with pytest.raises(ValueError, match=r"split 'valid' has 3 rows.*list_size=5"):
        simulate_position_logs(
            {"train": pl.DataFrame({"user": ["a"] * 10}), "valid": frame},
            {"train": np.zeros(10), "valid": np.zeros(3)},
            spec,
        )


def test_null_group_values_form_their_own_group():
    frame = pl.DataFrame({"user": ["a", None, "b", "a", None] * 4})
    spec = PositionLogSpec(list_size=5, seed=0)
    out = simulate_position_logs({"t": frame}, {"t": np.zeros(20)}, spec, group_column="user")
    assert out["t"].height == 20
    assert out["t"]["user"].null_count() == 8


def test_stated_click_model_holds():
    """click = Bernoulli(examination[position]) x Bernoulli(relevance): the click rate by
    position equals the mean of examination x relevance there."""
    rng = np.random.default_rng(1)
    n = 50_000
    frame = pl.DataFrame({"g": rng.integers(0, 50, n).astype(str)})
    spec = PositionLogSpec(list_size=5, temperature=1.0, seed=3)
    out = simulate_position_logs({"t": frame}, {"t": rng.normal(0, 1.5, n)}, spec, "g")["t"]
    curve = spec.examination_curve()
    for k in range(1, 6):
        rows = out.filter(pl.col("position") == k)
        expected = float((rows["relevance"] * curve[k - 1]).mean())
        assert abs(float(rows["click"].mean()) - expected) < 0.02
        assert abs(float(rows["click_unbiased"].mean()) - float(rows["relevance"].mean())) < 0.02


@pytest.mark.parametrize("distill", ["vanilla", "trilateral"])
def test_distillation_refuses_a_conditional_task_before_loading_the_teacher(distill, tmp_path):
    from adrank.debias.distill import build_distill_method

    prep = multitask_prepared(tmp_path)
    config = TrainConfig(
        distill=distill, kd_teacher_run=str(tmp_path / "no-teacher"), task="conversion"
    )
    model = build_position_model("lr", prep.feature_map, {}, config)
    with pytest.raises(ValueError, match=r"distill=.*'conversion'.*'click' = 1"):
        build_distill_method(config, model)


def test_task_errors_under_the_feature_method_name_the_users_model() -> None:
    """position_method=feature wraps the model; errors about its task name the model the
    user chose (``lr``), not the wrapper class."""
    from adrank.data.feature_map import FeatureMap, FieldInfo, TaskInfo
    from adrank.tasks import TaskError, model_outputs

    two_tasks = FeatureMap(
        (FieldInfo("user", "categorical", vocab_size=10),),
        labels=("a", "b"),
        tasks=(TaskInfo("a", "a", output="a"), TaskInfo("b", "b", output="b")),
    )
    model = build_position_model("lr", two_tasks, {}, cfg("feature"))
    with pytest.raises(TaskError, match=r"single-task model 'lr' must be told"):
        model_outputs(model, two_tasks, None)
