"""Invariances every registered model keeps, probed on tiny synthetic inputs.

* **Batch invariance** in evaluation: a row's prediction does not depend on the other rows
  of its batch or on the batch size (one row at a time, all together, shuffled,
  duplicated), and a history padded to a longer length (a batch whose longest history is
  longer) scores the same. Checked in float64, where the only batch-size effect left is
  summation order (~1e-15), so a leak of another row shows far above the tolerance.
* **Degenerate but valid feature maps** (one categorical field, only numeric fields, a
  vocabulary holding only padding and OOV, a history with nothing else, a batch of one
  row): each model either trains and predicts finite numbers, or refuses at build time
  with a ValueError that names the model and what it needs, never a shape error in forward.
* **Determinism**: one seed, one model (parameters and buffers) and one output; buffers left
  out of the state dict are derived from the feature map, so a reload predicts the same.
* **Out-of-range hyperparameters** that still crashed in forward or built a NaN/constant
  model are refused at build time, naming the hyperparameter.

Histories, padding and the user-once API are in ``test_sequence_models.py``; the
registry-wide contract in ``test_models.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from test_models import (
    MODELS,
    SEQUENCE_MODELS,
    funnel_tasks,
    history_fields,
    is_multitask,
    is_sequence,
    learnable_batch,
    model_feature_map,
    random_features,
    total_loss,
)

from adrank.data.feature_map import FeatureMap, FieldInfo, RoleInfo
from adrank.models import CTRModel, build_model
from adrank.models.registry import model_params

#: sequence models with a retrieval stage: given a top_k below the history length
TOP_K_MODELS = {"sim", "eta", "twin"}
ROWS = 10


def build(name: str, fmap: FeatureMap, seed: int = 0, **params: Any) -> CTRModel:
    torch.manual_seed(seed)
    return build_model(name, fmap, **params)


def moved_off_init(model: CTRModel, seed: int = 1) -> CTRModel:
    """Every parameter and embedding row moved off its init (padding rows stay zero), so
    every part of the model shapes its output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.2)
        for emb in model.embedding_modules():
            emb.fused.weight.normal_(0.0, 0.5, generator=gen)
            for offset in emb._offsets.values():
                emb.fused.weight[offset].zero_()
    return model


def as_float64(features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: v.double() if v.is_floating_point() else v for n, v in features.items()}


def rows(features: dict[str, torch.Tensor], index: Any) -> dict[str, torch.Tensor]:
    return {n: v[index] for n, v in features.items()}


@pytest.mark.parametrize("name", MODELS)
def test_eval_prediction_does_not_depend_on_the_rest_of_the_batch(name: str) -> None:
    fmap = model_feature_map(name, with_numeric=True)
    model = moved_off_init(build(name, fmap)).eval().double()
    features = as_float64(random_features(fmap, ROWS, seed=3))
    perm = torch.randperm(ROWS, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        together = model(features)
        alone = torch.cat([model(rows(features, slice(i, i + 1))) for i in range(ROWS)])
        shuffled = torch.empty_like(together)
        shuffled[perm] = model(rows(features, perm))
        doubled = model({n: torch.cat([v, v.flip(0)]) for n, v in features.items()})[:ROWS]
    assert torch.isfinite(together).all()
    for other in (alone, shuffled, doubled):
        torch.testing.assert_close(other, together, rtol=0, atol=1e-9)


def long_history_map() -> FeatureMap:
    """user/item/c0/n0, an unaligned sequence ``tags`` (pooled) and a history of 12 items
    with their c0 aligned."""
    fields = (
        FieldInfo("user", "categorical", vocab_size=30),
        FieldInfo("item", "categorical", vocab_size=40),
        FieldInfo("c0", "categorical", vocab_size=6),
        FieldInfo("n0", "numeric"),
        FieldInfo("tags", "sequence", max_len=4, vocab_size=7),
        *history_fields("item", "c0", max_len=12),
    )
    return FeatureMap(fields, labels=("click",))


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_history_padding_to_the_batch_maximum_changes_no_score(name: str) -> None:
    """Histories left-padded to 12 or trimmed to the batch's longest (3) score alike, row
    by row and together; retrieval models keep fewer (top_k=3) than the history holds."""
    fmap = long_history_map()
    params = {"top_k": 3} if name in TOP_K_MODELS else {}
    model = moved_off_init(build(name, fmap, **params)).eval().double()
    features = as_float64(random_features(fmap, ROWS, seed=4))
    for field in ("hist_item", "hist_c0"):
        features[field][:, :9] = 0  # at most 3 real behaviours
    features["hist_item"][0] = 0  # and one user without any
    features["hist_c0"][0] = 0
    trimmed = {n: v[:, 9:] if n.startswith("hist_") else v for n, v in features.items()}
    with torch.no_grad():
        full = model(features)
        short = model(trimmed)
        alone = torch.cat([model(rows(trimmed, slice(i, i + 1))) for i in range(ROWS)])
    assert torch.isfinite(full).all()
    torch.testing.assert_close(short, full, rtol=0, atol=1e-9)
    torch.testing.assert_close(alone, full, rtol=0, atol=1e-9)


def test_adaptdhm_runs_in_float64() -> None:
    """The router cast its input to float32 whatever the model's dtype: a float64 model
    failed with a dtype mismatch in its first forward, in training and in evaluation."""
    fmap = model_feature_map("adaptdhm", with_numeric=True)
    model = build("adaptdhm", fmap).double()
    features = as_float64(random_features(fmap, ROWS, seed=0))
    assert torch.isfinite(model.train()(features)).all()
    with torch.no_grad():
        assert torch.isfinite(model.eval()(features)).all()
    assert model.router.centres.dtype == torch.float64


def test_adaptdhm_routing_after_training_does_not_depend_on_the_batch() -> None:
    """The paper's update added the *sum* r^T x over the batch to beta * C: after one step
    every centre was the normalised batch mean, and evaluation routed by float rounding (a
    row's cluster, and its score, depended on its batch). Each centre now moves toward the
    mean of its soft members, with assignments sharpened by a temperature."""
    fmap = model_feature_map("adaptdhm", with_numeric=True)
    model = build("adaptdhm", fmap)
    features, labels = learnable_batch(fmap)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        total_loss(model, features, labels).backward()
        optimizer.step()
    centres = model.router.centres
    similarity = centres @ centres.T
    off_diagonal = similarity[~torch.eye(len(centres), dtype=torch.bool)]
    assert off_diagonal.max() < 0.999, "the cluster centres collapsed onto one another"
    model.eval()
    test = random_features(fmap, 64, seed=3)
    with torch.no_grad():
        x = model.embedding(test).flatten(1)
        together = model.router(x)
        alone = torch.cat([model.router(x[i : i + 1]) for i in range(64)])
    assert torch.equal(alone, together)
    assert len(torch.unique(together)) > 1, "every row went to one cluster"


@pytest.mark.parametrize("temperature", [0.0, -0.1])
def test_adaptdhm_refuses_a_temperature_that_is_not_positive(temperature: float) -> None:
    fmap = model_feature_map("adaptdhm", with_numeric=True)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        build("adaptdhm", fmap, temperature=temperature)


# -- degenerate but valid feature maps --------------------------------------------------


def one_categorical() -> list[FieldInfo]:
    return [FieldInfo("c0", "categorical", vocab_size=5)]


def numeric_only() -> list[FieldInfo]:
    return [FieldInfo("n0", "numeric"), FieldInfo("n1", "numeric")]


def one_numeric() -> list[FieldInfo]:
    return [FieldInfo("n0", "numeric")]


def oov_only() -> list[FieldInfo]:
    """Two fields whose vocabulary holds only padding (0) and OOV (1)."""
    return [FieldInfo("c0", "categorical", vocab_size=2), FieldInfo("c1", "categorical", 2)]


def history_only() -> list[FieldInfo]:
    """The item and its history, nothing else (no aligned attribute, no other field)."""
    return [
        FieldInfo("c0", "categorical", vocab_size=9),
        FieldInfo("hist_c0", "sequence", max_len=4, embedding_group="c0", target="c0"),
    ]


CASES = {
    "one_categorical": one_categorical,
    "numeric_only": numeric_only,
    "one_numeric": one_numeric,
    "oov_only": oov_only,
    "history_only": history_only,
}
#: (case, model) -> a fragment of the build-time ValueError; every other pair must work
PAIR_MODELS = {"fibinet", "ipnn"}
DOMAIN_MODELS = {"star", "pepnet"}


def expected_refusal(case: str, name: str) -> str | None:
    fields = CASES[case]()
    categorical = [f for f in fields if f.kind == "categorical"]
    if is_sequence(name) and not any(f.kind == "sequence" for f in fields):
        return "no sequence field"
    if name in DOMAIN_MODELS and not categorical:
        return "'domain' role"
    if name == "dlrm" and not categorical:
        return "dlrm needs at least one categorical"
    if name in PAIR_MODELS and len(fields) < 2:
        return f"{name} needs at least 2 fields"
    return None


def degenerate_map(case: str, name: str) -> FeatureMap:
    fields = tuple(CASES[case]())
    categorical = [f.name for f in fields if f.kind == "categorical"]
    roles = {}
    if categorical:
        roles = {"domain": RoleInfo("domain", "__domain__", "vocab", categorical[0], ("a",))}
    if is_multitask(name):
        return FeatureMap(fields, **funnel_tasks(), roles=roles)
    return FeatureMap(fields, labels=("click",), roles=roles)


def degenerate_features(fmap: FeatureMap, batch: int, case: str) -> dict[str, torch.Tensor]:
    if case == "oov_only":  # OOV everywhere, padding in the first row
        features = {f.name: torch.ones(batch, dtype=torch.long) for f in fmap.fields}
        features["c0"][0] = 0
        return features
    return random_features(fmap, batch, seed=1)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", MODELS)
def test_degenerate_feature_map_works_or_is_refused_by_name(name: str, case: str) -> None:
    fmap = degenerate_map(case, name)
    refusal = expected_refusal(case, name)
    if refusal is not None:
        with pytest.raises(ValueError, match=f"(?i){refusal}"):
            build(name, fmap)
        return
    model = build(name, fmap)
    features = degenerate_features(fmap, 4, case)
    labels = torch.tensor([[1.0], [0.0], [1.0], [0.0]]).expand(4, len(fmap.labels))
    model.train()
    loss = total_loss(model, features, labels.contiguous())
    assert torch.isfinite(loss)
    loss.backward()
    for pname, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), pname
    model.eval()
    with torch.no_grad():
        batch = model(features)
        one = model(rows(features, slice(0, 1)))  # a batch of one row
    assert torch.isfinite(batch).all() and torch.isfinite(one).all()
    assert one.shape == (1, *batch.shape[1:])


def test_dlrm_dot_product_with_one_field_is_refused_by_name() -> None:
    fmap = FeatureMap(tuple(one_categorical()), labels=("click",))
    with pytest.raises(ValueError, match=r"dlrm.*interaction_op='dot'.*at least 2"):
        build("dlrm", fmap, interaction_op="dot")
    build("dlrm", fmap)  # the default concatenation takes one field


# -- determinism and reloads ------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_same_seed_same_model_same_outputs(name: str) -> None:
    fmap = model_feature_map(name, with_numeric=True)
    first, second, other = build(name, fmap, 5), build(name, fmap, 5), build(name, fmap, 6)
    a, b = first.state_dict(), second.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    features, labels = learnable_batch(fmap)
    outputs = []
    for model in (first, second):
        model.train()
        torch.manual_seed(9)  # the same dropout masks and sampled negatives
        loss = total_loss(model, features, labels)
        loss.backward()
        model.eval()
        with torch.no_grad():
            outputs.append((loss.detach(), model(features)))
    assert torch.equal(outputs[0][0], outputs[1][0])
    assert torch.equal(outputs[0][1], outputs[1][1])
    # buffers left out of the state dict are derived from the feature map, not drawn
    saved = set(other.state_dict())
    for (key, buffer), (_, mine) in zip(other.named_buffers(), first.named_buffers(), strict=True):
        if key not in saved:
            assert torch.equal(buffer, mine), key


# -- hyperparameters that crashed in forward or built a broken model ---------------------

OUT_OF_RANGE = [
    ("din", {"attention_hidden_units": [0]}, "attention_hidden_units"),  # forward: reshape
    ("dmin", {"attention_hidden_units": [8, 0]}, "attention_hidden_units"),  # forward
    ("edcn", {"temperature": 0.0}, "temperature"),  # built; NaN output
    ("edcn", {"temperature": -1.0}, "temperature"),  # built; the gate softmax inverted
    ("fibinet", {"reduction_ratio": 0.0}, "reduction_ratio"),  # ZeroDivisionError
    ("fibinet", {"reduction_ratio": -2.0}, "reduction_ratio"),  # silently a width of 1
    ("masknet", {"reduction_ratio": 0.0}, "reduction_ratio"),  # silently a width of 1
    ("masknet", {"parallel_block_dim": 0}, "parallel_block_dim"),  # built; constant output
    ("masknet", {"model_type": "serial", "dnn_hidden_units": [0]}, "dnn_hidden_units"),
    ("finalnet", {"block1_hidden_units": [0]}, "block1_hidden_units"),  # forward: IndexError
    ("finalnet", {"block2_hidden_units": [4, 0]}, "block2_hidden_units"),  # forward
    ("xdeepfm", {"cin_layer_units": [0]}, "cin_layer_units"),  # forward: conv weight
    ("fgcnn", {"channels": [0, 16, 18, 20]}, "channels"),  # forward: IndexError
    ("fgcnn", {"kernel_heights": [7, 0, 7, 7]}, "kernel_heights"),  # forward: IndexError
    ("fgcnn", {"pooling_sizes": [2, 2, 0, 2]}, "pooling_sizes"),  # ZeroDivisionError
]


@pytest.mark.parametrize(("name", "params", "key"), OUT_OF_RANGE, ids=str)
def test_out_of_range_value_is_refused_at_build_time(name: str, params: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        build(name, model_feature_map(name, with_numeric=False), **params)


@pytest.mark.parametrize(("name", "params", "key"), OUT_OF_RANGE, ids=str)
def test_refusals_leave_valid_neighbours_alone(name: str, params: dict, key: str) -> None:
    """A valid value next to each refused one (a width of 2: FinalNet's concat needs an even
    one; a ratio or temperature of 0.5) still builds and predicts."""
    value = params[key]
    smallest: Any = 1 if isinstance(value, int) else 0.5
    if isinstance(value, list):
        smallest = [2 if v == 0 else v for v in value]
    fmap = model_feature_map(name, with_numeric=False)
    model = build(name, fmap, **{**params, key: smallest}).eval()
    with torch.no_grad():
        out = model(random_features(fmap, 4, seed=0))
    assert torch.isfinite(out).all()


def unit_lists() -> list[tuple[str, str]]:
    """(model, hyperparameter) of every ``*_units`` list of layer widths in the zoo."""
    return [
        (name, key)
        for name in MODELS
        for key, default in model_params(name).items()
        if key.endswith("_units") and isinstance(default, (list, tuple))
    ]


@pytest.mark.parametrize(("name", "key"), unit_lists(), ids=str)
def test_a_zero_width_layer_is_refused_naming_its_hyperparameter(name: str, key: str) -> None:
    """``tower_hidden_units: [0]`` was refused as "every width in hidden_units", naming no
    hyperparameter of the model (or, for DIN's attention, FinalNet's blocks and xDeepFM's
    CIN, not refused at all: a shape error in forward)."""
    with pytest.raises(ValueError, match=f"'{key}' of model '{name}'"):
        build(name, model_feature_map(name, with_numeric=False), **{key: [8, 0]})
