"""Position-aware training (adrank.debias.position) on small semi-synthetic list logs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from adrank.config import ConfigError, RunConfig, TrainConfig
from adrank.data.batches import InMemoryLoader, TensorData
from adrank.data.prepare import PreparedData, prepare_frames
from adrank.data.schema import CategoricalFeature, Schema, SchemaError, Task
from adrank.debias import (
    PositionDataError,
    PositionFeatureModel,
    build_position_method,
    build_position_model,
)
from adrank.debias.position import ips_bce
from adrank.debias.synthetic import PositionLogSpec, position_log_schema, simulate_position_logs
from adrank.models.registry import build_model
from adrank.pipeline import train_run
from adrank.serve.predictor import Predictor
from adrank.train.callbacks import Callback
from adrank.train.trainer import Trainer

FIELDS = ("user", "item")
EXAMINATION = (1.0, 0.6, 0.4, 0.3, 0.2)


def list_logs(rows: int, seed: int, strength: float = 0.5) -> dict[str, pl.DataFrame]:
    """Semi-synthetic logs with lists of 5: relevance logit = user effect + item effect."""
    rng = np.random.default_rng(100 + seed)
    users, items = rng.integers(0, 30, rows), rng.integers(0, 40, rows)
    user_effect, item_effect = rng.normal(0, 1.2, 30), rng.normal(0, 1.2, 40)
    logit = user_effect[users] + item_effect[items]
    frame = pl.DataFrame({"user": users.astype(str), "item": items.astype(str)})
    cut = int(rows * 0.8)
    frames = {"train": frame[:cut], "test": frame[cut:]}
    logits = {"train": logit[:cut], "test": logit[cut:]}
    spec = PositionLogSpec(
        list_size=5, temperature=1.0, policy_strength=strength, examination=EXAMINATION, seed=seed
    )
    return simulate_position_logs(frames, logits, spec, group_column="user")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    logs = list_logs(4000, seed=0)
    out = tmp_path_factory.mktemp("position") / "prepared"
    return prepare_frames(position_log_schema(FIELDS), logs, out)


def config(method: str, **kw) -> TrainConfig:
    base = dict(
        batch_size=256, max_epochs=1, progress=False, position_method=method, position_max=5
    )
    return TrainConfig(**(base | kw))


def params_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module, part: str) -> bool:
    after = module.state_dict()
    return any(not torch.equal(before[k], after[k]) for k in before if part in k)


def train_steps(method: str, prepared: PreparedData, steps: int = 5, **kw):
    fm = prepared.feature_map
    cfg = config(method, **kw)
    torch.manual_seed(0)
    model = build_position_model("dnn", fm, {"hidden_units": [8]}, cfg)
    position = build_position_method(cfg, model, model_name="dnn", params={"hidden_units": [8]})
    trainer = Trainer(model, cfg, position=position)
    before_model = params_of(model)
    before_position = params_of(position) if position is not None else {}
    data = TensorData.from_parquet(prepared.splits["train"], fm)
    for i, batch in enumerate(InMemoryLoader(data, 256, shuffle=True, seed=0)):
        if i == steps:
            break
        loss = trainer.train_step(batch)
        assert math.isfinite(float(loss))
    return model, position, before_model, before_position


@pytest.mark.parametrize("method", ["none", "ips"])
def test_plain_methods_train_the_model(method, prepared):
    model, position, before, _ = train_steps(method, prepared)
    assert changed(before, model, "")
    assert (position is None) == (method == "none")


def test_feature_method_learns_a_position_embedding(prepared):
    model, _, before, _ = train_steps("feature", prepared)
    assert isinstance(model, PositionFeatureModel)
    plain = build_model("dnn", prepared.feature_map, hidden_units=[8])
    table = before["inner.embedding.fused.weight"]
    assert len(table) == len(plain.state_dict()["embedding.fused.weight"]) + 6  # ids 0..5
    after = model.state_dict()["inner.embedding.fused.weight"]
    assert not torch.equal(table[-5:], after[-5:])  # the rows of positions 1..5 learned


@pytest.mark.parametrize("method", ["pal", "dla"])
def test_tower_methods_train_tower_and_model(method, prepared):
    model, position, before, before_tower = train_steps(method, prepared)
    assert changed(before, model, "")
    assert changed(before_tower, position, "tower")
    curve = position.examination_curve()
    assert curve.shape == (5,) and curve[0] == 1.0 and np.all((curve > 0) & (curve <= 1))
    assert_plain(model, prepared)


def assert_plain(model: torch.nn.Module, prepared: PreparedData) -> None:
    """``model`` has exactly the weights of the position-free registered model."""
    plain = build_model("dnn", prepared.feature_map, hidden_units=[8]).state_dict()
    state = model.state_dict()
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in plain.items()}


def test_kd_trains_teacher_and_position_free_student(prepared):
    model, position, before, before_teacher = train_steps("kd", prepared)
    assert changed(before, model, "")
    assert changed(before_teacher, position, "teacher")
    assert_plain(model, prepared)
    teacher_table = position.teacher.state_dict()["inner.embedding.fused.weight"]
    assert len(teacher_table) == len(model.state_dict()["embedding.fused.weight"]) + 6


def test_ips_loss_clips_small_propensities():
    logits = torch.tensor([0.3, -1.0, 2.0])
    clicks = torch.tensor([1.0, 0.0, 1.0])
    propensity = torch.tensor([0.5, 0.2, 0.01]).clamp(min=0.05)
    loss = ips_bce(logits, clicks, propensity)
    p = torch.sigmoid(logits)
    w = clicks / torch.tensor([0.5, 0.2, 0.05])  # 0.01 is clipped to 0.05: weight 20, not 100
    expected = -(w * torch.log(p) + (1 - w) * torch.log(1 - p))
    torch.testing.assert_close(loss, expected)
    assert float(w[2]) == pytest.approx(20.0)


def test_ips_method_applies_the_clip(prepared):
    fm = prepared.feature_map
    cfg = config("ips", ips_clip=0.5)
    model = build_position_model("lr", fm, {}, cfg)
    position = build_position_method(cfg, model)
    batch = next(iter(InMemoryLoader(TensorData.from_parquet(prepared.splits["train"], fm), 64)))
    logits = torch.zeros(len(batch))
    clicks = batch.labels[:, 0]
    clipped = batch.roles["examination"].clamp(min=0.5)
    expected = ips_bce(logits, clicks, clipped).mean()
    torch.testing.assert_close(position.loss(logits, clicks, batch), expected)
    assert float(batch.roles["examination"].min()) < 0.5  # the clip was exercised


def test_dla_recovers_a_known_examination_curve(tmp_path):
    # the logging policy puts relevant rows on top, so the per-slot CTRs overstate the decay
    logs = list_logs(30_000, seed=1, strength=0.9)
    prep = prepare_frames(position_log_schema(FIELDS), logs, tmp_path / "prepared")
    fm = prep.feature_map
    cfg = TrainConfig(
        batch_size=512,
        max_epochs=10,
        patience=10,
        learning_rate=0.02,
        progress=False,
        position_method="dla",
        position_max=5,
        position_lr_scale=1.0,  # learning_rate is already high for this small problem
        seed=3,
    )
    model = build_position_model("lr", fm, {}, cfg)  # the true relevance is logistic-additive
    position = build_position_method(cfg, model)
    train = TensorData.from_parquet(prep.splits["train"], fm)
    Trainer(model, cfg, position=position).fit(train)
    curve = position.examination_curve()
    np.testing.assert_allclose(curve, EXAMINATION, atol=0.06)
    frame = logs["train"]
    ctr = frame.group_by("position").agg(pl.col("click").mean()).sort("position")["click"]
    naive = ctr.to_numpy() / ctr[0]
    assert np.abs(curve - EXAMINATION).max() < np.abs(naive - EXAMINATION).max()


def test_generator_is_deterministic_by_seed():
    a, b, c = list_logs(500, seed=4), list_logs(500, seed=4), list_logs(500, seed=5)
    assert a["train"].equals(b["train"]) and a["test"].equals(b["test"])
    assert not a["train"].equals(c["train"])
    frame = a["train"]
    assert frame.height % 5 == 0 and frame["request_id"].n_unique() == frame.height // 5
    slots = frame.group_by("request_id").agg(pl.col("position").sort())["position"]
    assert all(list(s) == [1, 2, 3, 4, 5] for s in slots)
    assert set(frame["examination"].unique()) == set(EXAMINATION)


def test_position_method_without_position_column_is_a_clear_error(tmp_path):
    frame = pl.DataFrame({"user": ["a", "b"] * 20, "click": [0, 1] * 20})
    schema = Schema(features=(CategoricalFeature("user"),), tasks=(Task("click", "click"),))
    prep = prepare_frames(schema, {"train": frame}, tmp_path / "p")
    cfg = config("pal")
    model = build_position_model("lr", prep.feature_map, {}, cfg)
    with pytest.raises(PositionDataError, match=r"position_method='pal' needs a 'position'"):
        build_position_method(cfg, model)
    with pytest.raises(PositionDataError, match=r"'ips' needs a 'examination'"):
        build_position_method(config("ips"), model)


@pytest.mark.parametrize("bad", [0.0, 1.5, -0.2])
def test_examination_out_of_range_names_row_and_column(tmp_path, bad):
    logs = list_logs(200, seed=0)["train"]
    values = logs["examination"].to_list()
    values[7] = bad
    logs = logs.with_columns(pl.Series("examination", values))
    with pytest.raises(SchemaError, match=r"column 'examination'.* in \(0, 1\].*row 7"):
        prepare_frames(position_log_schema(FIELDS), {"train": logs}, tmp_path / "p")


def test_bad_position_settings_are_config_errors():
    with pytest.raises(ConfigError, match="position_method must be one of"):
        TrainConfig(position_method="magic")
    with pytest.raises(ConfigError, match="position_serving"):
        TrainConfig(position_max=3, position_serving=4)
    with pytest.raises(ConfigError, match="ips_clip"):
        TrainConfig(ips_clip=0.0)


@pytest.mark.parametrize("method", ["pal", "kd", "dla", "feature"])
def test_served_model_needs_no_position(method, prepared, tmp_path: Path):
    cfg = RunConfig(model="dnn", params={"hidden_units": [8]}, train=config(method, max_epochs=2))
    run = train_run(cfg, tmp_path / "run", prepared=prepared)
    predictor = Predictor.load(run.run_dir)
    logs = pl.read_parquet(prepared.directory / "test.parquet")  # processed: positions dropped
    raw = list_logs(4000, seed=0)["test"]
    records = raw.select(FIELDS).to_dicts()  # no position, list id or examination
    scores = predictor.predict(records)
    saved = np.load(run.run_dir / "test_predictions.npy").reshape(-1)
    assert len(logs) == len(records)
    np.testing.assert_allclose(scores, saved, rtol=1e-5, atol=1e-6)
    if method == "feature":  # served at the fixed position 1
        assert isinstance(predictor.model, PositionFeatureModel)
        assert predictor.model.serving_position == 1
    else:  # towers and teachers are not exported: the plain registered model is
        state = torch.load(run.run_dir / "model.pt", weights_only=True)
        plain = build_model("dnn", prepared.feature_map, hidden_units=[8]).state_dict()
        assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in plain.items()}


class _StopAfterFirstEpoch(Callback):
    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict) -> None:
        if epoch == 1:
            raise KeyboardInterrupt


@pytest.mark.parametrize("method", ["pal", "kd"])
def test_resume_restores_the_method_state(method, prepared, tmp_path):
    fm = prepared.feature_map
    cfg = config(method, max_epochs=2, patience=5, deterministic=True)
    train = TensorData.from_parquet(prepared.splits["train"], fm)

    def make(seed: int):
        torch.manual_seed(seed)
        model = build_position_model("dnn", fm, {"hidden_units": [8]}, cfg)
        method_ = build_position_method(cfg, model, model_name="dnn", params={"hidden_units": [8]})
        return model, method_

    full_model, full_method = make(0)
    Trainer(full_model, cfg, tmp_path / "full", position=full_method).fit(train, train)
    model, method_ = make(0)
    with pytest.raises(KeyboardInterrupt):
        Trainer(model, cfg, tmp_path / "cut", [_StopAfterFirstEpoch()], position=method_).fit(
            train, train
        )
    model, method_ = make(99)  # a different init: everything comes from the checkpoint
    Trainer(model, cfg, tmp_path / "cut", position=method_).fit(train, train, resume=True)
    for name, value in full_method.state_dict().items():
        torch.testing.assert_close(method_.state_dict()[name], value, msg=name)
    for name, value in full_model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, msg=name)


def test_kd_teacher_built_by_the_trainer_has_the_students_hyperparameters(prepared):
    """A Trainer given only ``position_method='kd'`` built the teacher with default
    hyperparameters (400x400x400 for a DNN), whatever the student's were; docs/debiasing.md
    says the teacher is the student's architecture."""
    model = build_model("dnn", prepared.feature_map, hidden_units=[16, 8], embedding_dim=4)
    trainer = Trainer(model, config("kd"))
    teacher = trainer.position.teacher.inner
    widths = [m.out_features for m in teacher.modules() if isinstance(m, torch.nn.Linear)]
    student = [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == student == [16, 8, 1]
    assert teacher.state_dict()["embedding.fused.weight"].shape[1] == 4
