"""Knowledge distillation (adrank.debias.distill): vanilla and trilateral KD from a frozen
teacher run, on small synthetic click data (user x item effects)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from adrank.config import ConfigError, RunConfig, TrainConfig
from adrank.data.batches import InMemoryLoader, TensorData
from adrank.data.prepare import PreparedData, prepare_frames
from adrank.data.schema import CategoricalFeature, Schema
from adrank.debias.distill import (
    DistillError,
    TrilateralKD,
    VanillaKD,
    build_distill_method,
    kd_loss_per_row,
)
from adrank.models.registry import build_model
from adrank.pipeline import train_run
from adrank.serve.predictor import Predictor
from adrank.train.callbacks import Callback
from adrank.train.trainer import Trainer

SCHEMA = Schema(
    labels=("click",), features=(CategoricalFeature("user"), CategoricalFeature("item"))
)
STUDENT = {"hidden_units": [8]}


def click_frames(rows: int, seed: int, users: int = 30) -> dict[str, pl.DataFrame]:
    """Synthetic clicks: logit = user effect + item effect (labelled synthetic)."""
    rng = np.random.default_rng(seed)
    user, item = rng.integers(0, users, rows), rng.integers(0, 40, rows)
    logit = rng.normal(0, 1.2, users)[user] + rng.normal(0, 1.2, 40)[item]
    click = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    frame = pl.DataFrame({"user": user.astype(str), "item": item.astype(str), "click": click})
    a, b = int(rows * 0.7), int(rows * 0.85)
    return {"train": frame[:a], "valid": frame[a:b], "test": frame[b:]}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    out = tmp_path_factory.mktemp("distill") / "prepared"
    return prepare_frames(SCHEMA, click_frames(3000, seed=0), out)


@pytest.fixture(scope="module")
def teacher_run(prepared: PreparedData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = RunConfig(
        model="deepfm",
        params={"hidden_units": [16]},
        train=TrainConfig(batch_size=256, max_epochs=2, progress=False),
    )
    return train_run(cfg, tmp_path_factory.mktemp("teacher") / "run", prepared=prepared).run_dir


def kd_config(method: str, teacher: Path, **kw) -> TrainConfig:
    base = dict(
        batch_size=256,
        max_epochs=1,
        progress=False,
        distill=method,
        kd_teacher_run=str(teacher),
        distill_alpha=0.5,
    )
    return TrainConfig(**(base | kw))


def student(prepared: PreparedData, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("dnn", prepared.feature_map, **STUDENT)


def splits(prepared: PreparedData) -> tuple[TensorData, TensorData]:
    fm = prepared.feature_map
    return (
        TensorData.from_parquet(prepared.splits["train"], fm),
        TensorData.from_parquet(prepared.splits["valid"], fm),
    )


def test_vanilla_kd_loss_by_hand():
    z_s, z_t, y = torch.tensor([0.3, -1.2]), torch.tensor([2.0, -0.5]), torch.tensor([1.0, 0.0])

    def bce(z: float, target: float) -> float:
        p = 1 / (1 + math.exp(-z))
        return -(target * math.log(p) + (1 - target) * math.log(1 - p))

    for alpha, temp in ((0.3, 1.0), (0.7, 2.0)):
        got = kd_loss_per_row(z_s, z_t, y, alpha, temp)
        for i in range(2):
            soft = 1 / (1 + math.exp(-z_t[i].item() / temp))
            hard_part = (1 - alpha) * bce(z_s[i].item(), y[i].item())
            soft_part = alpha * temp**2 * bce(z_s[i].item() / temp, soft)
            assert got[i].item() == pytest.approx(hard_part + soft_part, rel=1e-6)
    # alpha = 0 is plain BCE; a per-row alpha tensor mixes row by row
    plain = torch.nn.functional.binary_cross_entropy_with_logits(z_s, y, reduction="none")
    torch.testing.assert_close(kd_loss_per_row(z_s, z_t, y, 0.0, 3.0), plain)
    mixed = kd_loss_per_row(z_s, z_t, y, torch.tensor([0.0, 1.0]), 1.0)
    assert mixed[0].item() == pytest.approx(plain[0].item())
    assert mixed[1].item() == pytest.approx(bce(-1.2, 1 / (1 + math.exp(0.5))), rel=1e-6)


def test_trilateral_ratios_in_unit_interval_and_loss_finite(prepared, teacher_run):
    cfg = kd_config("trilateral", teacher_run, max_epochs=2, distill_meta_lr=0.05)
    model = student(prepared)
    trainer = Trainer(model, cfg)
    method = trainer.position
    assert isinstance(method, TrilateralKD)
    ratio_before = {k: v.clone() for k, v in method.ratio.state_dict().items()}
    train, valid = splits(prepared)
    result = trainer.fit(train, valid)
    assert all(math.isfinite(h["train_loss"]) for h in result.history)
    assert int(method.steps) == 2 * math.ceil(len(train) / 256)
    # the outer (validation) steps moved the ratio network
    after = method.ratio.state_dict()
    assert any(not torch.equal(ratio_before[k], after[k]) for k in after)
    batch = next(iter(InMemoryLoader(train, 512, shuffle=False)))
    logits = model(batch.features)
    target = batch.labels[:, 0].float()
    alpha = method.alpha(logits, method.teacher_logits(batch), target)
    assert alpha.shape == (512,)
    assert float(alpha.min()) >= 0.0 and float(alpha.max()) <= 1.0
    assert float(alpha.std()) > 0  # per-sample, not one ratio
    # the teacher's class means are probabilities, the positives' above the negatives'
    mean = method.class_mean()
    assert 0 < float(mean[0]) < float(mean[1]) < 1


@pytest.mark.parametrize("method", ["vanilla", "trilateral"])
def test_teacher_stays_frozen(method, prepared, teacher_run):
    cfg = kd_config(method, teacher_run)
    model = student(prepared)
    trainer = Trainer(model, cfg)
    teacher = trainer.position.teacher
    before = {k: v.clone() for k, v in teacher.state_dict().items()}  # BN statistics too
    student_before = {k: v.clone() for k, v in model.state_dict().items()}
    train, valid = splits(prepared)
    trainer.fit(train, valid)
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    for name, value in teacher.state_dict().items():
        torch.testing.assert_close(value, before[name], msg=name)
    assert any(not torch.equal(student_before[k], v) for k, v in model.state_dict().items())
    optimized = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not optimized & {id(p) for p in teacher.parameters()}


def test_vanilla_alpha_zero_equals_plain_training(prepared, teacher_run):
    """With distill_alpha=0 the teacher has no say: the same losses as no distillation (the
    weights agree up to Adam's amplification of float rounding in near-zero gradients)."""
    train, valid = splits(prepared)
    plain = student(prepared)
    cfg = TrainConfig(batch_size=256, max_epochs=2, progress=False)
    want = Trainer(plain, cfg).fit(train, valid)
    kd = student(prepared)
    got = Trainer(kd, kd_config("vanilla", teacher_run, distill_alpha=0.0, max_epochs=2))
    got = got.fit(train, valid)
    for a, b in zip(want.history, got.history, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["val_logloss"] == pytest.approx(a["val_logloss"], rel=1e-2)


@pytest.mark.parametrize("method", ["vanilla", "trilateral"])
def test_served_student_needs_no_teacher(method, prepared, teacher_run, tmp_path):
    teacher_copy = tmp_path / "teacher"
    shutil.copytree(teacher_run, teacher_copy)
    train = kd_config(method, teacher_copy, max_epochs=2)
    cfg = RunConfig(model="dnn", params=STUDENT, train=train)
    run = train_run(cfg, tmp_path / "student", prepared=prepared)
    shutil.rmtree(teacher_copy)  # the teacher is gone: serving must not need it
    predictor = Predictor.load(run.run_dir)
    records = click_frames(3000, seed=0)["test"].select("user", "item").to_dicts()
    scores = predictor.predict(records)
    saved = np.load(run.run_dir / "test_predictions.npy").reshape(-1)
    np.testing.assert_allclose(scores, saved, rtol=1e-5, atol=1e-6)
    state = torch.load(run.run_dir / "model.pt", weights_only=True)
    plain = build_model("dnn", prepared.feature_map, **STUDENT).state_dict()
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in plain.items()}


class _StopAfterFirstEpoch(Callback):
    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict) -> None:
        if epoch == 1:
            raise KeyboardInterrupt


def test_resume_restores_the_distillation_state(prepared, teacher_run, tmp_path):
    cfg = kd_config("trilateral", teacher_run, max_epochs=2, patience=5, deterministic=True)
    train, valid = splits(prepared)
    full = student(prepared)
    full_trainer = Trainer(full, cfg, tmp_path / "full")
    full_trainer.fit(train, valid)
    cut = student(prepared)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cut, cfg, tmp_path / "cut", [_StopAfterFirstEpoch()]).fit(train, valid)
    resumed = student(prepared, seed=99)  # a different init: everything from the checkpoint
    trainer = Trainer(resumed, cfg, tmp_path / "cut")
    trainer.fit(train, valid, resume=True)
    want, got = full_trainer.position, trainer.position
    assert int(got.steps) == int(want.steps)
    for name, value in want.state_dict().items():
        if name.endswith("_extra_state"):
            continue
        torch.testing.assert_close(got.state_dict()[name], value, msg=name)
    adam_want = want.meta_optimizer.state_dict()["state"]
    adam_got = got.meta_optimizer.state_dict()["state"]
    for key, value in adam_want.items():
        torch.testing.assert_close(adam_got[key]["exp_avg"], value["exp_avg"])
    for name, value in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, msg=name)


def test_missing_teacher_run_is_a_clear_error(prepared, tmp_path):
    missing = tmp_path / "no_such_run"
    with pytest.raises(DistillError, match=r"kd_teacher_run=.*no_such_run"):
        build_distill_method(kd_config("vanilla", missing), student(prepared))
    with pytest.raises(ConfigError, match="kd_teacher_run"):
        TrainConfig(distill="trilateral")
    with pytest.raises(ConfigError, match="one at a time"):
        TrainConfig(distill="vanilla", kd_teacher_run="x", position_method="ips")
    with pytest.raises(ConfigError, match="distill_alpha"):
        TrainConfig(distill="vanilla", kd_teacher_run="x", distill_alpha=1.5)


def test_teacher_on_other_data_is_a_clear_error(prepared, teacher_run, tmp_path):
    other = prepare_frames(SCHEMA, click_frames(3000, seed=1, users=12), tmp_path / "other")
    model = build_model("dnn", other.feature_map, **STUDENT)
    with pytest.raises(DistillError, match=r"other data than the student.*'user'"):
        build_distill_method(kd_config("vanilla", teacher_run), model)
    assert isinstance(
        build_distill_method(kd_config("vanilla", teacher_run), student(prepared)), VanillaKD
    )


def test_trilateral_without_validation_data_is_a_clear_error(prepared, teacher_run):
    train, _ = splits(prepared)
    trainer = Trainer(student(prepared), kd_config("trilateral", teacher_run))
    with pytest.raises(DistillError, match="needs validation data"):
        trainer.fit(train)
