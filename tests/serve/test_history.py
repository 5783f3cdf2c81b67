"""Histories in serving: the user-once scorer of sequence models equals per-candidate
scoring to 1e-6 and encodes each distinct history once; request histories are cut to their
newest ``max_len`` items and every cut is counted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from test_models import SEQUENCE_MODELS, random_features, tiny_feature_map

from adrank.data.schema import Schema
from adrank.models import build_model
from adrank.models.sequence_base import SequenceModel
from adrank.serve.history import MAX_USERS_PER_BATCH, HistoryClipper, score_rows

FMAP = tiny_feature_map(with_numeric=True, sequence=True)
SEQUENCES = [f.name for f in FMAP.fields if f.kind == "sequence"]


def _model(name: str) -> SequenceModel:
    torch.manual_seed(0)
    model = build_model(name, FMAP)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # off their init, so every part shapes the output
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.2)
        for emb in model.embedding_modules():
            emb.fused.weight.normal_(0.0, 0.5, generator=gen)
    assert isinstance(model, SequenceModel)
    return model.eval()


def _rows(users: list[int], seed: int = 5) -> dict[str, torch.Tensor]:
    """One row per entry of ``users``: rows of the same user share that user's sequences;
    every row has its own candidate and other fields."""
    features = random_features(FMAP, len(users), seed)
    per_user = random_features(FMAP, max(users) + 1, seed + 1)
    index = torch.tensor(users)
    for name in SEQUENCES:
        features[name] = per_user[name][index]
    return features


class _Counting:
    """Counts ``encode_user`` calls of a model."""

    def __init__(self, model: SequenceModel) -> None:
        self.calls = 0
        self.encode = model.encode_user

        def counted(features: dict[str, torch.Tensor]):  # type: ignore[no-untyped-def]
            self.calls += 1
            return self.encode(features)

        model.encode_user = counted  # type: ignore[method-assign]


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_user_once_equals_per_candidate_scoring(name: str) -> None:
    model = _model(name)
    one_user = _rows([0] * 7)
    broadcast = {
        n: (v[:1].expand(7, *v.shape[1:]) if n in SEQUENCES else v) for n, v in one_user.items()
    }
    three_users = _rows([0, 1, 0, 2, 1, 2, 0, 1])
    with torch.no_grad():
        for features, distinct in ((one_user, 1), (broadcast, 1), (three_users, 3)):
            counter = _Counting(model)
            got = score_rows(model, features)
            assert counter.calls == distinct  # the user side once per distinct history
            del model.encode_user
            expected = torch.stack([model({k: v[i : i + 1] for k, v in features.items()})[0]
                                    for i in range(len(got))])  # fmt: skip
            # the served scores (probabilities) to 1e-6, against one forward per row and the
            # batched forward; logits differ by float32 rounding (sums of other shapes)
            for other in (expected, model(features)):
                torch.testing.assert_close(got.sigmoid(), other.sigmoid(), rtol=0, atol=1e-6)
                torch.testing.assert_close(got, other, rtol=1e-5, atol=1e-5)


def test_many_distinct_users_take_one_batched_forward() -> None:
    model = _model("din")
    features = _rows(list(range(4 * MAX_USERS_PER_BATCH)) * 2)
    counter = _Counting(model)
    with torch.no_grad():
        got = score_rows(model, features)
    assert counter.calls == 0
    del model.encode_user
    with torch.no_grad():
        torch.testing.assert_close(got, model(features), rtol=0, atol=0)


def test_history_free_models_are_called_as_they_are() -> None:
    fmap = tiny_feature_map(with_numeric=True, sequence=False)
    torch.manual_seed(0)
    model = build_model("deepfm", fmap).eval()
    features = random_features(fmap, 4, 0)
    with torch.no_grad():
        torch.testing.assert_close(score_rows(model, features), model(features), rtol=0, atol=0)


SCHEMA = Schema.from_dict(
    {
        "tasks": ["click"],
        "features": [
            {"name": "item", "type": "categorical"},
            {"name": "hist", "type": "sequence", "max_len": 3, "share_vocab_with": "item",
             "target": "item"},
            {"name": "hist_genre", "type": "sequence", "max_len": 3, "aligned_with": "hist"},
            {"name": "hist_text", "type": "sequence", "max_len": 5, "source": "hist"},
            {"name": "tags", "type": "sequence", "max_len": 2, "delimiter": ","},
        ],
    }
)  # fmt: skip


def test_histories_keep_their_newest_items_and_cuts_are_counted() -> None:
    clipper = HistoryClipper()
    limits = clipper.limits(SCHEMA)
    # hist is read by two features: the longest max_len (5) is kept for both, and for
    # hist_genre, aligned with it (aligned histories are cut alike)
    assert limits == {"hist": (5, "|", "hist"), "hist_genre": (5, "|", "hist"),
                      "tags": (2, ",", "tags")}  # fmt: skip
    record = {
        "item": "a",
        "hist": ["i1", "i2", 3, "i4", "i5", "i6", "i7"],  # oldest first
        "hist_genre": "g1|g2|g3|g4|g5|g6|g7",
        "tags": "x,,y,z",  # empty tokens are not items (tags is aligned with nothing)
    }
    out = clipper.clip(record, limits)
    assert out == {"item": "a", "hist": "3|i4|i5|i6|i7", "hist_genre": "g3|g4|g5|g6|g7",
                   "tags": "y,z"}  # fmt: skip
    assert record["hist"][0] == "i1"  # the caller's record is not changed
    short = {"item": "a", "hist": ["i1"], "tags": ["x"]}
    assert clipper.clip(short, limits) is short
    odd = {"hist": ["a|b", "c", "d", "e", "f", "g"], "tags": [True, "x", "y"]}
    assert clipper.clip(odd, limits) is odd  # left for the predictor to reject
    # aligned histories of different lengths, or with an empty item, are left whole: cut,
    # they would look aligned (the predictor refuses them with the real lengths)
    unequal = {"hist": [f"i{k}" for k in range(30)], "hist_genre": [f"g{k}" for k in range(29)]}
    assert clipper.clip(unequal, limits) is unequal
    gap = {"hist": "|".join(f"i{k}" for k in range(7)), "hist_genre": "g1||g3|g4|g5|g6|g7|g8"}
    assert clipper.clip(gap, limits) is gap
    merged = clipper.with_context(
        {"hist": "1|2|3|4|5|6", "tags": "u"}, [{"item": "a"}, {"item": "b", "tags": "v"}], limits
    )
    assert merged.context == {"hist": "2|3|4|5|6", "tags": "u"}  # cut once, kept apart
    assert list(merged) == [{"hist": "2|3|4|5|6", "tags": "u", "item": "a"},
                      {"hist": "2|3|4|5|6", "tags": "v", "item": "b"}]  # fmt: skip
    counters = clipper.metric_values()
    assert counters["adrank_history_truncated_total"][2] == {"hist": 2, "hist_genre": 1,
                                                            "tags": 1}  # fmt: skip
    assert counters["adrank_history_items_dropped_total"][2] == {"hist": 3, "hist_genre": 2,
                                                                "tags": 1}  # fmt: skip
