"""Multi-task models (ShareBottom, ESMM, MMoE, PLE, AITM): outputs against the dataset's
tasks, gradients, export parity and short real trainings on a synthetic click/conversion
funnel."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adrank.config import TrainConfig
from adrank.data.batches import Batch, InMemoryLoader, TensorData
from adrank.data.feature_map import FeatureMap, FieldInfo, TaskInfo
from adrank.models import build_model, get_model_class
from adrank.models.multitask import MultiTaskModel
from adrank.serve.export import EXPORT_FILES, example_inputs, export_model, load_exported, parity
from adrank.tasks import TaskError, objective_loss, resolve_objectives
from adrank.train import Trainer
from adrank.train.losses import training_loss

MULTITASK = ["sharebottom", "esmm", "mmoe", "ple", "aitm"]
PER_TASK = ["sharebottom", "mmoe", "ple"]  # outputs follow the dataset's tasks
FIELDS = (
    FieldInfo("user", "categorical", vocab_size=30),
    FieldInfo("item", "categorical", vocab_size=20),
    FieldInfo("c0", "categorical", vocab_size=8),
    FieldInfo("n0", "numeric"),
)
#: small widths so that the trainings below take a second or two on one CPU thread
SMALL: dict[str, dict] = {
    "sharebottom": {"bottom_hidden_units": [32], "tower_hidden_units": [16]},
    "esmm": {"tower_hidden_units": [32, 16]},
    "mmoe": {"num_experts": 3, "expert_hidden_units": [32], "tower_hidden_units": [16]},
    "ple": {"expert_hidden_units": [32], "tower_hidden_units": [16]},
    "aitm": {"tower_hidden_units": [32, 16]},
}
EXPECTED_OUTPUTS = {
    "sharebottom": (("pctr", "pcvr"), None),
    "esmm": (("pctr", "pcvr"), ("pctr", "pctcvr")),
    "mmoe": (("pctr", "pcvr"), None),
    "ple": (("pctr", "pcvr"), None),
    "aitm": (("pctr", "pctcvr"), None),
}


def funnel_map(fields: tuple[FieldInfo, ...] = FIELDS) -> FeatureMap:
    """Tasks ``click`` (-> pctr) and ``conversion`` given ``click`` (-> pcvr)."""
    return FeatureMap(
        fields,
        labels=("click", "conversion"),
        tasks=(
            TaskInfo("click", "click", output="pctr"),
            TaskInfo("conversion", "conversion", given="click", output="pcvr"),
        ),
    )


def unrelated_tasks_map() -> FeatureMap:
    return FeatureMap(
        FIELDS,
        labels=("a", "b"),
        tasks=(TaskInfo("a", "a", output="a"), TaskInfo("b", "b", output="b")),
    )


def single_task_map() -> FeatureMap:
    return FeatureMap(FIELDS, labels=("click",))


def funnel_data(n: int, seed: int) -> TensorData:
    """Clicks from a user + item logit; conversions only on clicks, from an item + c0 logit."""
    gen = torch.Generator().manual_seed(seed)
    features = {
        f.name: torch.randint(2, f.vocab_size, (n,), generator=gen)
        for f in FIELDS
        if f.kind == "categorical"
    }
    features["n0"] = torch.randn(n, generator=gen)
    weights = torch.Generator().manual_seed(99)
    w_user, w_item = torch.randn(30, generator=weights) * 1.5, torch.randn(20, generator=weights)
    v_item, v_c0 = torch.randn(20, generator=weights) * 1.5, torch.randn(8, generator=weights)
    click_logit = w_user[features["user"]] + w_item[features["item"]] + 0.5 * features["n0"]
    click = (torch.rand(n, generator=gen) < torch.sigmoid(click_logit)).float()
    conv_logit = v_item[features["item"]] + v_c0[features["c0"]] - 0.5
    conversion = click * (torch.rand(n, generator=gen) < torch.sigmoid(conv_logit)).float()
    return TensorData(Batch(features, torch.stack([click, conversion], dim=1)))


def build(name: str, fmap: FeatureMap | None = None, seed: int = 0, **params) -> MultiTaskModel:
    torch.manual_seed(seed)
    model = build_model(name, fmap or funnel_map(), **{**SMALL[name], **params})
    assert isinstance(model, MultiTaskModel)
    return model


def test_multitask_models_are_registered() -> None:
    for name in MULTITASK:
        assert issubclass(get_model_class(name), MultiTaskModel)
    assert not issubclass(get_model_class("dnn"), MultiTaskModel)


@pytest.mark.parametrize("name", MULTITASK)
def test_outputs_shapes_and_objectives(name: str) -> None:
    fmap = funnel_map()
    model = build(name, fmap).eval()
    outputs, trained = EXPECTED_OUTPUTS[name]
    assert model.outputs == outputs and model.trained_outputs == trained
    logits = model(funnel_data(16, seed=0).data.features)
    assert logits.shape == (16, 2) and torch.isfinite(logits).all()
    objectives = {o.output: o for o in resolve_objectives(model, fmap)}
    assert list(objectives) == list(trained or outputs)
    if "pcvr" in objectives:  # conversion trained on clicked rows only
        assert objectives["pcvr"].mask == fmap.label_index("click")
    if "pctcvr" in objectives:  # on all impressions, label click x conversion
        assert objectives["pctcvr"].mask is None
        assert objectives["pctcvr"].label_product == (0, 1)


@pytest.mark.parametrize("name", PER_TASK)
def test_conversion_target_pctcvr_learns_conversion_on_all_impressions(name: str) -> None:
    model = build(name, conversion_target="pctcvr")
    assert model.outputs == ("pctr", "pctcvr")
    objectives = resolve_objectives(model, model.feature_map)
    assert [o.mask for o in objectives] == [None, None]
    with pytest.raises(ValueError, match="conversion_target"):
        build(name, conversion_target="pconv")


@pytest.mark.parametrize("name", PER_TASK)
def test_unrelated_tasks_emit_their_own_outputs(name: str) -> None:
    fmap = unrelated_tasks_map()
    model = build(name, fmap)
    assert model.outputs == ("a", "b")
    assert model(funnel_data(8, seed=1).data.features).shape == (8, 2)
    with pytest.raises(TaskError, match="conversion_target='pctcvr' needs a click/conversion"):
        build(name, fmap, conversion_target="pctcvr")


@pytest.mark.parametrize("name", ["esmm", "aitm"])
def test_funnel_models_refuse_data_without_a_conversion_task(name: str) -> None:
    output = EXPECTED_OUTPUTS[name][0][1]
    with pytest.raises(TaskError) as single:
        build(name, single_task_map())
    message = str(single.value)
    assert message.startswith(f"{name} emits ['pctr', '{output}']")
    assert "no conversion task" in message and "given: click" in message
    hint = r"no task with output 'pctr'.* pctr is the output of the click task.*output: pctr"
    with pytest.raises(TaskError, match=hint):
        build(name, unrelated_tasks_map())


@pytest.mark.parametrize("name", PER_TASK)
def test_per_task_models_refuse_a_single_task_dataset(name: str) -> None:
    with pytest.raises(TaskError, match=rf"{name} is a multi-task model .* one task \['click'\]"):
        build(name, single_task_map())


@pytest.mark.parametrize("name", MULTITASK)
def test_training_loss_reaches_every_parameter(name: str) -> None:
    model = build(name).train()
    batch = funnel_data(128, seed=2).data
    loss = training_loss(model, model.training_outputs(batch.features), batch, TrainConfig())
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, f"{name}: {pname}"


def test_esmm_cvr_tower_learns_only_through_pctcvr() -> None:
    model = build("esmm").train()
    batch = funnel_data(128, seed=3).data
    ctr_objective, ctcvr_objective = resolve_objectives(model, model.feature_map)
    cvr_tower = list(model.towers.towers[1].parameters())
    outputs = list(model.outputs)
    for objective, reaches_cvr in [(ctr_objective, False), (ctcvr_objective, True)]:
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        logits = model(batch.features)
        objective_loss(logits, outputs, objective, batch.labels).backward()
        got = [p.grad is not None and float(p.grad.abs().sum()) > 0 for p in cvr_tower]
        assert all(got) if reaches_cvr else not any(got), objective.output


def test_ple_gates_follow_the_paper() -> None:
    """Task gates: own + shared experts; the shared gate of every level but the last: all
    experts of the level, so the next level's shared stream carries task 1's experts to task
    0 (a shared gate over the shared experts only would not)."""
    model = build("ple", num_levels=3, num_specific_experts=2, num_shared_experts=3).eval()
    gates = [([g.num_experts for g in lv.task_gates], lv.shared_gate) for lv in model.levels]
    assert [g for g, _ in gates] == [[5, 5]] * 3
    assert [None if s is None else s.num_experts for _, s in gates] == [7, 7, None]
    features = funnel_data(8, seed=4).data.features
    before = model(features)
    with torch.no_grad():  # task 1's first-level experts reach task 0 via the shared stream
        for p in model.levels[0].task_experts[1].parameters():
            p.add_(0.5)
    assert not torch.allclose(model(features)[:, 0], before[:, 0])
    single = build("ple", num_levels=1).eval()  # one level: no path from task 1 to task 0
    before = single(features)
    with torch.no_grad():
        for p in single.levels[0].task_experts[1].parameters():
            p.add_(0.5)
    torch.testing.assert_close(single(features)[:, 0], before[:, 0])


def test_aitm_calibrator_penalizes_pctcvr_above_pctr() -> None:
    model = build("aitm", calibrator_weight=0.5)
    logits = torch.tensor([[0.0, 1.0], [2.0, -1.0], [-1.0, -1.0]])  # only row 0 violates
    out = model.training_outputs(funnel_data(3, seed=0).data.features)
    out.logits = logits
    expected = 0.5 * (torch.sigmoid(torch.tensor(1.0)) - 0.5) / 3
    torch.testing.assert_close(model.auxiliary_loss(out, torch.zeros(3, 2)), expected)
    assert build("aitm", calibrator_weight=0.0).auxiliary_loss(out, torch.zeros(3, 2)) is None


@pytest.mark.parametrize("name", MULTITASK)
def test_export_parity_for_multi_output_models(name: str, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    fields = (
        *FIELDS,
        FieldInfo("hist", "sequence", vocab_size=20, max_len=4, embedding_group="item"),
    )
    fmap = funnel_map(fields)
    model = build(name, fmap).eval()
    with torch.no_grad():  # weights off their init so that outputs vary
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    rows = example_inputs(fmap, 300, seed=1)  # another batch size than the traced one
    with torch.no_grad():
        eager = model(rows)
    assert eager.shape == (300, 2)
    for fmt in ("torchscript", "onnx"):
        path = export_model(model, fmap, fmt, tmp_path / EXPORT_FILES[fmt])
        scorer = load_exported(path, fmt, fmap.names)
        assert scorer(rows).shape == (300, 2)
        assert parity(model, scorer, rows) <= 1e-5, (name, fmt)


@pytest.mark.parametrize("name", MULTITASK)
def test_trainer_fits_a_synthetic_funnel(name: str) -> None:
    config = TrainConfig(batch_size=128, learning_rate=3e-3, max_epochs=4, patience=4,
                         monitor={"click_auc": 0.5, "pctcvr_auc": 0.5}, progress=False,
                         num_threads=1, seed=5)  # fmt: skip
    trainer = Trainer(build(name), config)
    result = trainer.fit(funnel_data(3000, seed=10), funnel_data(1000, seed=11))
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    valid = result.best_valid
    for key in ("click_auc", "conversion_auc", "pctcvr_auc", "auc"):
        assert key in valid, sorted(valid)
    assert valid["click_auc"] > 0.7 and valid["pctcvr_auc"] > 0.7, valid
    predictions = trainer.predictions(InMemoryLoader(funnel_data(50, seed=12), 32))
    assert predictions.probs.shape == (50, 2) and predictions.outputs == list(trainer.outputs)
    probs = predictions.by_output()
    assert set(probs) >= {"pctr", "pcvr", "pctcvr"}
    assert (probs["pctcvr"] <= probs["pctr"] + 1e-6).all() or name == "aitm"
