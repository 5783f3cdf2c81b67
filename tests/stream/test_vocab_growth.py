"""Growing vocabularies: existing rows and their optimizer state survive a growth step,
new rows take correctly bias-corrected first Adam steps, evicted ids are re-used fresh."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from adrank.data.batches import table_to_batch
from adrank.data.processor import FeatureProcessor
from adrank.data.schema import CategoricalFeature, Schema, Task
from adrank.stream.growing import GrowingModel
from adrank.stream.tables import table_rows
from adrank.stream.vocab import EVICTED_PREFIX, GrowthStep, VocabularyGrowth
from adrank.train.row_adam import RowAdam

LR = 0.01


def _schema() -> Schema:
    return Schema(
        tasks=(Task("click", "click"),),
        features=(CategoricalFeature("user", min_count=2), CategoricalFeature("item")),
    )


def _frame(users: list[str], items: list[str]) -> pl.DataFrame:
    clicks = [i % 2 for i in range(len(users))]
    return pl.DataFrame({"user": users, "item": items, "click": clicks})


def _step(grown: GrowingModel, processor: FeatureProcessor, frame: pl.DataFrame) -> None:
    """One Adam step of the model on ``frame`` (encoded with ``processor``)."""
    batch = table_to_batch(processor.transform(frame).to_arrow(), grown.feature_map)
    grown.model.train()
    logits = grown.model(batch.features)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.labels[:, 0])
    grown.optimizer.zero_grad()
    loss.backward()
    grown.optimizer.step()


def _rows_by_id(grown: GrowingModel, table: str, ids: range) -> dict:
    """(param name, id) -> (weights, exp_avg, exp_avg_sq, step) of every table row."""
    params = dict(grown.model.named_parameters())
    out = {}
    for t in table_rows(grown.model):
        if t.table != table:
            continue
        p = params[t.param]
        state = grown.optimizer.sparse.state[p]
        for i in ids:
            r = t.offset + i
            out[(t.param, i)] = (
                p[r].detach().clone(),
                state["exp_avg"][r].clone(),
                state["exp_avg_sq"][r].clone(),
                state["step"][r].clone(),
            )
    return out


def _setup(evict_after: int | None = None, headroom: float = 0.0):
    torch.manual_seed(0)
    first = _frame(["u1", "u1", "u2", "u2", "u3"], ["a", "b", "a", "c", "b"])
    processor = FeatureProcessor(_schema()).fit(first)
    growth = VocabularyGrowth(evict_after=evict_after, headroom=headroom).start(processor, first)
    grown = GrowingModel(
        "deepfm",
        {"embedding_dim": 4, "hidden_units": [8], "net_dropout": 0.0, "batch_norm": False},
        processor.feature_map(),
        growth.capacity(),
        learning_rate=LR,
    )
    for _ in range(3):
        _step(grown, processor, first)
    return processor, growth, grown


def test_growth_keeps_rows_and_optimizer_state() -> None:
    processor, growth, grown = _setup()
    assert processor.vocab_["user"] == ["u1", "u2"]  # u3 seen once: below min_count 2
    before_users = _rows_by_id(grown, "user", range(4))
    before_items = _rows_by_id(grown, "item", range(5))
    dense = {n: p.detach().clone() for n, p in grown.model.named_parameters() if p.dim() < 2}
    old_rows = grown.rows()

    # u3 reaches min_count over the stream (1 + 1), u4 arrives twice, new items d, e.
    second = _frame(["u3", "u4", "u4", "u1"], ["d", "e", "a", "d"])
    step = growth.observe(processor, second, chunk=1)
    assert processor.vocab_["user"] == ["u1", "u2", "u3", "u4"]  # ids 2, 3 kept; 4, 5 new
    assert step.admitted["user"].tolist() == [4, 5]
    assert step.admitted["item"].tolist() == [5, 6]
    grown.apply(step, processor.feature_map(), growth.capacity())
    assert grown.grown == 1 and grown.rows()["user"] > old_rows["user"]

    after_users = _rows_by_id(grown, "user", range(4))
    after_items = _rows_by_id(grown, "item", range(5))
    for before, after in ((before_users, after_users), (before_items, after_items)):
        assert before.keys() == after.keys()
        for key, values in before.items():
            for old, new in zip(values, after[key], strict=True):
                assert torch.equal(old, new), key
    for name, p in grown.model.named_parameters():
        if p.dim() < 2:
            assert torch.equal(dense[name], p.detach()), name
    # the ids used before growth have real optimizer state (the check above is not vacuous)
    assert any(float(v[3]) > 0 for v in after_users.values())
    # admitted rows start with no optimizer state
    new_rows = _rows_by_id(grown, "user", range(4, 6))
    assert all(float(v[3]) == 0 and not v[1].any() for v in new_rows.values())


def test_new_rows_take_bias_corrected_first_steps() -> None:
    processor, growth, grown = _setup()
    growth.observe(processor, _frame(["u4", "u4"], ["a", "b"]), chunk=1)
    assert growth.last_seen_["user"][4] == 1
    grown.apply(
        GrowthStep(admitted={"user": np.array([4])}), processor.feature_map(), growth.capacity()
    )
    batch = table_to_batch(processor.transform(_frame(["u4"], ["a"])).to_arrow(), grown.feature_map)
    grown.model.train()
    logits = grown.model(batch.features)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.labels[:, 0])
    grown.optimizer.zero_grad()
    loss.backward()
    params = dict(grown.model.named_parameters())
    checked = 0
    expected = {}
    for t in table_rows(grown.model):
        if t.table != "user":
            continue
        p = params[t.param]
        grad = p.grad.coalesce()
        rows = grad.indices()[0].tolist()
        g = grad.values()[rows.index(t.offset + 4)]
        state = grown.optimizer.sparse.state[p]
        global_steps = float(state["step"][t.offset + 2])  # u1's row: trained 3 steps
        assert global_steps == 3
        # Hand-computed Adam at step 1: m = 0.1 g, v = 0.001 g^2, bias corrections 0.1 and
        # 0.001, so the update is lr * g / (|g| + eps).
        m, v = 0.1 * g, 0.001 * g * g
        update = LR / 0.1 * m / (v.sqrt() / 0.001**0.5 + 1e-8)
        expected[t.param] = p[t.offset + 4].detach() - update
        # bias-corrected with a table-wide step count of 10,000 (torch's Adam, SparseAdam),
        # the same first step would be (1 - beta1) / sqrt(1 - beta2) = 3.16 times as large
        b1, b2 = 1 - 0.9**10_000, 1 - 0.999**10_000
        oversized = LR / b1 * m / (v.sqrt() / b2**0.5 + 1e-8)
        torch.testing.assert_close(oversized.abs(), update.abs() * 0.1 / 0.001**0.5)
    grown.optimizer.step()
    for t in table_rows(grown.model):
        if t.table == "user":
            torch.testing.assert_close(params[t.param][t.offset + 4].detach(), expected[t.param])
            assert float(grown.optimizer.sparse.state[params[t.param]]["step"][t.offset + 4]) == 1
            checked += 1
    assert checked == 2  # DeepFM: the field embedding and the first-order weights


def test_eviction_frees_rows_that_are_reused_fresh() -> None:
    processor, growth, grown = _setup(evict_after=1, headroom=1.0)
    # chunk 1: only u1 and item a seen; chunk 2: u2 unseen for 2 chunks -> evicted.
    growth.observe(processor, _frame(["u1"], ["a"]), chunk=1)
    step = growth.observe(processor, _frame(["u1", "u9", "u9"], ["a", "a", "a"]), chunk=2)
    assert 3 in step.evicted["user"].tolist()
    assert processor.vocab_["user"][1] == "u9"  # u9 re-uses u2's id 3
    assert step.admitted["user"].tolist() == [3]
    params = dict(grown.model.named_parameters())
    before = {
        t.param: params[t.param][t.offset + 3].detach().clone()
        for t in table_rows(grown.model)
        if t.table == "user"
    }
    grown.apply(step, processor.feature_map(), growth.capacity())
    assert grown.grown == 0  # headroom: no re-layout
    for t in table_rows(grown.model):
        if t.table != "user":
            continue
        p = params[t.param]
        assert not torch.equal(p[t.offset + 3].detach(), before[t.param])
        assert float(grown.optimizer.sparse.state[p]["step"][t.offset + 3]) == 0
        assert float(grown.optimizer.sparse.state[p]["step"][t.offset + 2]) == 3
    # u2 maps to OOV now; an evicted placeholder never matches a raw value
    encoded = processor.transform(_frame(["u2", EVICTED_PREFIX], ["a", "a"]))
    assert encoded["user"].to_list() == [1, 1]


def test_growth_state_and_processor_round_trip(tmp_path) -> None:
    processor, growth, _ = _setup(evict_after=1)
    growth.observe(processor, _frame(["u7", "u7"], ["z", "z"]), chunk=1)
    growth.save(tmp_path / "growth.json")
    processor.save(tmp_path / "processor")
    loaded = VocabularyGrowth.load(tmp_path / "growth.json")
    again = FeatureProcessor.load(tmp_path / "processor")
    assert again.vocab_ == processor.vocab_
    assert loaded.capacity() == growth.capacity()
    assert loaded.pending_ == growth.pending_
    assert (loaded.last_seen_["user"] == growth.last_seen_["user"]).all()


def test_row_adam_rejects_vectors() -> None:
    with pytest.raises(ValueError, match="2-D tables"):
        RowAdam([torch.nn.Parameter(torch.zeros(3))])
