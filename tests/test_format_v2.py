"""Format v2: tasks, outputs and roles through schema, processor, batches, loss and metrics;
format-v1 run directories keep loading."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F

from adrank.artifact import load_artifact
from adrank.config import ConfigError, RunConfig, TrainConfig
from adrank.data.batches import InMemoryLoader, TensorData, _concat, table_to_batch
from adrank.data.processor import FeatureProcessor
from adrank.data.schema import CategoricalFeature, Schema, SchemaError, Task, infer_outputs
from adrank.models.registry import build_model
from adrank.tasks import (
    TaskError,
    derive_probabilities,
    objective_loss,
    output_objective,
    resolve_objectives,
)
from adrank.train.evaluation import Predictions, compute_metrics, slice_metrics
from adrank.train.sampling import correct_probabilities, downsample_negatives

FIXTURES = Path(__file__).parent / "fixtures"

FUNNEL = {
    "tasks": [
        {"name": "click", "label": "click"},
        {"name": "buy", "label": "buy", "given": "click"},
    ],
    "roles": {"group": "user", "domain": "site", "weight": "w", "passthrough": ["rid"]},
    "features": [{"name": "user", "type": "categorical"}, {"name": "item", "type": "categorical"}],
}


def funnel_frame(n: int = 60, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    click = (rng.random(n) < 0.5).astype(int)
    buy = click * (rng.random(n) < 0.5).astype(int)
    return pl.DataFrame(
        {
            "click": click,
            "buy": buy,
            "user": [f"u{i % 7}" for i in range(n)],
            "item": [f"i{i % 5}" for i in range(n)],
            "site": ["app" if i % 3 else "web" for i in range(n)],
            "w": rng.random(n) + 0.5,
            "rid": [f"r{i}" for i in range(n)],
        }
    )


def test_v1_run_directory_loads_and_scores_as_trained() -> None:
    from adrank.serve.predictor import Predictor

    art = load_artifact(FIXTURES / "v1_run")
    assert art.manifest["format_version"] == 1
    assert [(t.name, t.output) for t in art.feature_map.tasks] == [("click", "pctr")]
    rows = pl.read_csv(FIXTURES / "v1_run_test.csv")
    scores = Predictor.load(FIXTURES / "v1_run").predict(rows.drop("click"))
    expected = np.load(FIXTURES / "v1_run" / "test_predictions.npy")
    np.testing.assert_allclose(scores, expected, atol=1e-6)


def test_schema_v2_round_trip_and_outputs() -> None:
    schema = Schema.from_dict(FUNNEL)
    assert schema.labels == ("click", "buy")
    assert schema.group == "user"
    assert schema.roles["passthrough"] == ("rid",)
    assert infer_outputs(schema.tasks) == ["pctr", "pcvr"]
    assert Schema.from_dict(schema.to_dict()) == schema
    v1 = Schema.from_dict({"labels": ["y"], "group": "u", "features": FUNNEL["features"]})
    assert v1.tasks == (Task("y", "y"),) and v1.roles == {"group": "u"}
    assert infer_outputs([Task("a", "a"), Task("b", "b")]) == ["a", "b"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["roles"].update(bogus="x"), "unknown role 'bogus'"),
        (lambda d: d["tasks"][1].update(given="buy"), "cannot be given its own label"),
        (lambda d: d["tasks"][1].update(type="ordinal"), "type must be 'binary' or 'regression'"),
        (lambda d: d["tasks"][1].update(weight=-1), "'weight' must be a finite number"),
        (
            lambda d: [t.update(output="pctr") for t in d["tasks"]],
            "claimed by more than one task",
        ),
        (lambda d: d["roles"].update(weight="click"), "both as label and role"),
        (lambda d: d.update(labels=["click"]), "not both"),
    ],
)
def test_schema_v2_errors_name_the_problem(change, message: str) -> None:
    data = {
        k: (v.copy() if isinstance(v, dict) else [dict(t) for t in v]) for k, v in FUNNEL.items()
    }
    change(data)
    with pytest.raises(SchemaError, match=message):
        Schema.from_dict(data)


def test_processor_encodes_roles_and_refuses_bad_values() -> None:
    frame = funnel_frame()
    proc = FeatureProcessor(Schema.from_dict(FUNNEL)).fit(frame)
    out = proc.transform(frame)
    assert out["__domain__"].to_list()[:3] == [2, 1, 1]  # app (more frequent) = 1, web = 2
    assert out["__meta__rid"].to_list()[:2] == ["r0", "r1"]
    fm = proc.feature_map()
    assert fm.roles["domain"].values == ("app", "web")
    assert "passthrough" not in fm.roles  # text never reaches a model
    batch = table_to_batch(out.to_arrow(), fm)
    assert set(batch.roles) == {"group", "domain", "weight"}
    assert batch.roles["weight"].dtype == torch.float32
    unseen = proc.transform(frame.with_columns(pl.lit("tv").alias("site")))
    assert set(unseen["__domain__"].to_list()) == {0}
    with pytest.raises(SchemaError, match=r"role 'weight' \(column 'w'\).*row 4"):
        proc.transform(frame.with_columns(pl.when(pl.int_range(60) == 4).then(-1.0)
                                          .otherwise(pl.col("w")).alias("w")))  # fmt: skip
    with pytest.raises(SchemaError, match=r"column 'click' must hold a binary.*2 in row 2"):
        proc.transform(frame.with_columns(pl.when(pl.int_range(60) == 2).then(2)
                                          .otherwise(pl.col("click")).alias("click")))  # fmt: skip


def test_propensity_out_of_range_names_row_and_column() -> None:
    schema = Schema(
        features=(CategoricalFeature("x"),), tasks=(Task("y", "y"),), roles={"propensity": "p"}
    )
    frame = pl.DataFrame({"y": [0, 1, 0], "x": ["a", "b", "a"], "p": [0.5, 0.0, 0.2]})
    with pytest.raises(SchemaError, match=r"role 'propensity' \(column 'p'\) must be in \(0, 1\]"):
        FeatureProcessor(schema).fit_transform(frame)


def test_batch_roles_survive_loaders_and_concat() -> None:
    frame = funnel_frame()
    proc = FeatureProcessor(Schema.from_dict(FUNNEL)).fit(frame)
    data = TensorData(table_to_batch(proc.transform(frame).to_arrow(), proc.feature_map()))
    loader = InMemoryLoader(data, 16, shuffle=True, seed=3)
    batches = list(loader)
    whole = _concat(batches)
    assert set(whole.roles) == {"group", "domain", "weight"}
    # the shuffled rows still carry their own roles: weight pairs with the same item id
    order = torch.argsort(whole.roles["weight"])
    ref = torch.argsort(data.data.roles["weight"])
    assert torch.equal(whole.features["item"][order], data.data.features["item"][ref])


def test_masked_and_derived_objectives_match_hand_computed_losses() -> None:
    frame = funnel_frame()
    fm = FeatureProcessor(Schema.from_dict(FUNNEL)).fit(frame).feature_map()
    labels = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    logits = torch.tensor([[0.3, -0.2], [1.0, 0.5], [-0.7, 2.0], [0.1, -1.0]])
    cvr = output_objective(fm, "pcvr")
    loss = objective_loss(logits, ["pctr", "pcvr"], cvr, labels)
    expected = F.binary_cross_entropy_with_logits(logits[:2, 1], labels[:2, 1])
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    ctcvr = output_objective(fm, "pctcvr")
    loss = objective_loss(logits, ["pctr", "pcvr"], ctcvr, labels)
    p = torch.sigmoid(logits[:, 0]) * torch.sigmoid(logits[:, 1])
    expected = F.binary_cross_entropy(p, labels[:, 0] * labels[:, 1])
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    weight = torch.tensor([1.0, 3.0, 0.0, 2.0])
    ctr = output_objective(fm, "pctr")
    loss = objective_loss(logits, ["pctr", "pcvr"], ctr, labels, weight)
    per_row = F.binary_cross_entropy_with_logits(logits[:, 0], labels[:, 0], reduction="none")
    assert float(loss) == pytest.approx(float((per_row * weight).sum() / weight.sum()), rel=1e-6)


def test_single_task_model_on_multi_task_data_must_be_told_its_task() -> None:
    frame = funnel_frame()
    fm = FeatureProcessor(Schema.from_dict(FUNNEL)).fit(frame).feature_map()
    model = build_model("lr", fm)
    with pytest.raises(TaskError, match=r"tasks \['click', 'buy'\].*--set task=click"):
        resolve_objectives(model, fm)
    with pytest.raises(TaskError, match="unknown task 'bought'"):
        resolve_objectives(model, fm, "bought")
    (objective,) = resolve_objectives(model, fm, "buy")
    assert (objective.output, objective.mask) == ("pcvr", fm.label_index("click"))
    cfg = RunConfig(model="lr").with_overrides(["task=buy"])
    assert cfg.train.task == "buy"


def test_metrics_score_conversion_on_clicked_rows_and_ctcvr_on_all() -> None:
    frame = funnel_frame(200, seed=1)
    fm = FeatureProcessor(Schema.from_dict(FUNNEL)).fit(frame).feature_map()
    labels = frame.select("click", "buy").to_numpy().astype(np.float32)
    rng = np.random.default_rng(2)
    pctr = np.clip(labels[:, 0] * 0.4 + rng.random(200) * 0.6, 0.01, 0.99)
    pcvr = np.clip(labels[:, 1] * 0.3 + rng.random(200) * 0.7, 0.01, 0.99)
    domain = (np.arange(200) % 2 + 1).astype(np.int64)
    preds = Predictions(
        np.stack([pctr, pcvr], 1), labels, None, roles={"domain": domain}, outputs=["pctr", "pcvr"]
    )
    metrics = compute_metrics(preds, fm)
    from adrank.metrics import auc

    clicked = labels[:, 0] == 1
    assert metrics["click_auc"] == auc(labels[:, 0], pctr)
    assert metrics["buy_auc"] == auc(labels[clicked, 1], pcvr[clicked])
    assert metrics["pctcvr_auc"] == auc(labels[:, 0] * labels[:, 1], pctr * pcvr)
    assert metrics["auc"] == pytest.approx((metrics["click_auc"] + metrics["buy_auc"]) / 2)
    slices = slice_metrics(preds, fm, "domain")
    assert set(slices) == {"all", "app", "web"}  # ids 1, 2 -> the domain role's values
    assert slices["app"]["rows"] + slices["web"]["rows"] == 200
    even = domain == 1
    assert slices["app"]["click_auc"] == auc(labels[even, 0], pctr[even])
    # the conversion task is measured on clicked rows: its row count says so per slice
    assert slices["app"]["buy_rows"] == float((even & clicked).sum())
    assert slices["all"]["buy_rows"] == float(clicked.sum()) < slices["all"]["rows"]
    assert "click_rows" not in slices["app"]  # a task without `given` counts every row


def test_derivations_never_multiply_pctcvr_by_pctr() -> None:
    out = derive_probabilities({"pctr": np.array([0.5, 0.2]), "pctcvr": np.array([0.1, 0.3])})
    np.testing.assert_allclose(out["pcvr"], [0.2, 1.0])  # clipped: pctcvr > pctr
    assert "pctcvr" in out and np.array_equal(out["pctcvr"], [0.1, 0.3])


def test_negative_sampling_keeps_positives_and_correction_inverts_it() -> None:
    frame = funnel_frame(400, seed=4)
    proc = FeatureProcessor(Schema.from_dict(FUNNEL)).fit(frame)
    fm = proc.feature_map()
    data = TensorData(table_to_batch(proc.transform(frame).to_arrow(), fm))
    sampled = downsample_negatives(data, fm, "click", 0.25, seed=1)
    y, ys = data.data.labels[:, 0], sampled.data.labels[:, 0]
    assert int(ys.sum()) == int(y.sum())
    assert 0.1 < float((ys == 0).sum() / (y == 0).sum()) < 0.4
    # a base rate of 10% seen at rate 0.25 is q = 0.1 / (0.1 + 0.9 * 0.25); correction undoes it
    q = 0.1 / (0.1 + 0.9 * 0.25)
    assert float(correct_probabilities(np.array([q]), 0.25)[0]) == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="negative_sampling_rate"):
        TrainConfig(negative_sampling_rate=0.0)


def test_named_monitor_and_weighted_mean() -> None:
    from adrank.config import monitor_direction, monitor_value

    assert monitor_direction("pctcvr_auc") and not monitor_direction("click_logloss")
    with pytest.raises(ConfigError, match="mixes"):
        monitor_direction({"click_auc": 1, "click_logloss": 1})
    logs = {"val_click_auc": 0.8, "val_pctcvr_auc": 0.6}
    assert monitor_value(logs, {"click_auc": 1, "pctcvr_auc": 3}) == pytest.approx(0.65)
    assert math.isclose(monitor_value(logs, "click_auc"), 0.8)


def test_v1_fixture_is_unchanged_by_loading(tmp_path: Path) -> None:
    """Loading never rewrites an old run directory (it stays loadable by old versions)."""
    copy = tmp_path / "run"
    shutil.copytree(FIXTURES / "v1_run", copy)
    before = {p.name: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    load_artifact(copy)
    after = {p.name: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    assert before == after


def test_columns_named_like_internal_names_and_undefined_gauc() -> None:
    """A feature called ``count`` or ``value`` fits; a gAUC no group can define is NaN, not
    an error that stops training on a tiny split."""
    schema = Schema(
        features=(CategoricalFeature("count"), CategoricalFeature("value")),
        tasks=(Task("y", "y"),),
        roles={"group": "g", "domain": "count"},
    )
    frame = pl.DataFrame(
        {"y": [0, 1, 1, 0], "count": ["a", "b", "a", "b"], "value": ["x", "y", "x", "y"],
         "g": ["u1", "u2", "u3", "u4"]}
    )  # fmt: skip
    proc = FeatureProcessor(schema).fit(frame)
    out = proc.transform(frame)
    assert out["count"].to_list() == [2, 3, 2, 3]
    fm = proc.feature_map()
    preds = Predictions(
        np.array([0.2, 0.7, 0.6, 0.4]), frame.select("y").to_numpy().astype(np.float32),
        out["__group__"].to_numpy(), outputs=["pctr"],
    )  # fmt: skip
    metrics = compute_metrics(preds, fm)
    assert metrics["auc"] == 1.0 and math.isnan(metrics["gauc"])
