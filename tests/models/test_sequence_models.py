"""The behaviour-sequence models (DIN, DIEN, BST, DMIN, SIM, ETA, SDIM, TWIN, QIN).

Each model is one entry of ``SEQUENCE_MODELS``; every test runs on all of them:

* the user-once API (``encode_user`` + ``score``) equals per-candidate ``forward`` to 1e-6;
* padding is never attended: aligned attributes' ids at padded positions and the padding
  rows of the tables change no output, in eval and training mode;
* an all-padding history (every user's first interaction) gives finite outputs and finite
  gradients of the whole training loss (auxiliary losses included);
* left and right padding of the same behaviours give the same scores.

The registry-wide contract (shapes, gradients, save/load, export, DDP) is in
``tests/models/test_models.py``, ``tests/serve/test_export.py`` and
``tests/train/test_distributed.py``.
"""

from __future__ import annotations

import pytest
import torch
from test_models import SEQUENCE_MODELS, random_features, tiny_feature_map

from adrank.config import TrainConfig
from adrank.data.batches import Batch
from adrank.data.feature_map import FeatureMap, FieldInfo
from adrank.models import build_model
from adrank.models.sequence_base import SequenceModel
from adrank.train.losses import training_loss

B, K = 6, 5
FMAP = tiny_feature_map(with_numeric=True, sequence=True)
L = FMAP.field("hist_item").max_len
#: fields that describe a candidate; the rest (user, c1, n0, histories) describe the user
CANDIDATE_FIELDS = ("item", "c0")


def make_model(name: str, seed: int = 0, **params: object) -> SequenceModel:
    """A model with weights moved off their init, so every part shapes the output."""
    torch.manual_seed(seed)
    model = build_model(name, FMAP, **params)
    assert isinstance(model, SequenceModel)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.2)
        for emb in model.embedding_modules():
            emb.fused.weight.normal_(0.0, 0.5, generator=gen)
    return model


def user_features(length: int, seed: int = 3) -> dict[str, torch.Tensor]:
    """One user (1 row) with a left-padded history of ``length`` real behaviours."""
    features = random_features(FMAP, 1, seed)
    real = torch.arange(L) >= L - length
    gen = torch.Generator().manual_seed(seed)
    features["hist_item"] = torch.randint(2, 9, (1, L), generator=gen) * real
    features["hist_c0"] = torch.randint(2, 5, (1, L), generator=gen) * real
    return features


def candidates(seed: int = 4) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "item": torch.randint(2, 9, (K,), generator=gen),
        "c0": torch.randint(2, 5, (K,), generator=gen),
    }


def one_row_per_candidate(user: dict, cands: dict) -> dict[str, torch.Tensor]:
    rows = {n: v.expand(K, *v.shape[1:]) for n, v in user.items()}
    return {**rows, **cands}


def forward(model: SequenceModel, features: dict[str, torch.Tensor]) -> torch.Tensor:
    torch.manual_seed(11)  # the same dropout masks in training mode
    return model(features)


@pytest.mark.parametrize("length", [0, 2, L], ids=["empty", "short", "full"])
@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_user_once_scoring_equals_per_candidate_forward(name: str, length: int) -> None:
    """Served scores (probabilities, float32) equal per-candidate scoring to 1e-6; in
    float64 the logits agree to 1e-9 (the same computation, batched differently)."""
    model = make_model(name).eval()
    user, cands = user_features(length), candidates()
    override = {**cands, "c1": torch.full((K,), 3)}  # a candidate-side value of a user field
    with torch.no_grad():
        for dtype, atol in ((torch.float32, 1e-6), (torch.float64, 1e-9)):
            model.to(dtype)
            typed = {n: v.to(dtype) if v.is_floating_point() else v for n, v in user.items()}
            state = model.encode_user(typed)
            for cand in (cands, override):
                expected = model(one_row_per_candidate(typed, cand))  # (K,)
                got = model.score(state, cand)
                assert got.shape == (K,)
                if dtype == torch.float32:
                    got, expected = torch.sigmoid(got), torch.sigmoid(expected)
                torch.testing.assert_close(got, expected, rtol=0, atol=atol)
            torch.testing.assert_close(
                model.score_candidates(typed, cands), model.score(state, cands), rtol=0, atol=0
            )


@pytest.mark.parametrize(
    "params",
    [{"sum_pooling": True}, {"positions": "attention"}, {"positions": "none"}],
    ids=["sum_pooling", "positions_in_attention", "no_positions"],
)
def test_dmin_options_keep_user_once_scoring_exact(params: dict) -> None:
    """DMIN's non-default options (the raw-behaviour sum of the paper's code, positions in
    the target attention or none) still score K candidates from one user state as
    per-candidate rows do."""
    model = make_model("dmin", **params).eval()
    user, cands = user_features(3), candidates()
    with torch.no_grad():
        expected = model(one_row_per_candidate(user, cands))
        torch.testing.assert_close(
            model.score(model.encode_user(user), cands), expected, rtol=0, atol=1e-5
        )
    heads = model.num_heads + 2 * bool(params.get("sum_pooling"))  # [u_1..u_H, s, t * s]
    first = next(m for m in model.head.modules() if isinstance(m, torch.nn.Linear))
    assert first.in_features == model.context_dim + heads * model.history_dim


def test_dmin_rejects_unknown_position_modes() -> None:
    with pytest.raises(ValueError, match="positions must be one of"):
        build_model("dmin", FMAP, positions="both")
    with pytest.raises(ValueError, match="position_dim must be >= 1"):
        build_model("dmin", FMAP, positions="attention", position_dim=0)


def test_score_rejects_missing_fields_and_several_users() -> None:
    model = make_model("din").eval()
    user = user_features(3)
    with torch.no_grad():
        state = model.encode_user({n: v for n, v in user.items() if n != "c1"})
        with pytest.raises(ValueError, match="'c1'"):
            model.score(state, candidates())
        two = model.encode_user({n: v.expand(2, *v.shape[1:]) for n, v in user.items()})
        with pytest.raises(ValueError, match="one user"):
            model.score(two, candidates())


def padded_batch() -> dict[str, torch.Tensor]:
    """B rows with left-padded histories of lengths 0..L (row 0 empty)."""
    features = random_features(FMAP, B, seed=5)
    lengths = torch.tensor([0, 1, 2, 3, L, L - 1]).unsqueeze(1)
    real = torch.arange(L) >= L - lengths
    features["hist_item"] = features["hist_item"].clamp_min(2) * real
    features["hist_c0"] = features["hist_c0"].clamp_min(2) * real
    return features


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_padded_positions_change_nothing(name: str, training: bool) -> None:
    model = make_model(name).train(training)
    features = padded_batch()
    expected = forward(model, features)
    padded = features["hist_item"] == 0
    gen = torch.Generator().manual_seed(8)
    # aligned ids recorded where the history is padding, and drifted padding rows
    features["hist_c0"] = torch.where(
        padded, torch.randint(1, 5, padded.shape, generator=gen), features["hist_c0"]
    )
    with torch.no_grad():
        emb = model.embedding
        for offset in emb._offsets.values():
            emb.fused.weight[offset].normal_(0.0, 3.0, generator=gen)
    got = forward(model, features)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_all_padding_history_is_finite_with_finite_gradients(name: str) -> None:
    model = make_model(name).train()
    features = padded_batch()
    features["hist_item"] = torch.zeros_like(features["hist_item"])
    features["hist_c0"] = torch.zeros_like(features["hist_c0"])
    labels = torch.tensor([[1.0], [0.0], [1.0], [0.0], [1.0], [0.0]])
    outputs = model.training_outputs(features)
    assert torch.isfinite(outputs.logits).all()
    loss = training_loss(model, outputs, Batch(features, labels), TrainConfig())
    assert torch.isfinite(loss)
    loss.backward()
    for pname, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), pname
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(features)).all()
        state = model.encode_user({n: v[:1] for n, v in features.items()})
        assert torch.isfinite(model.score(state, candidates())).all()


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_left_and_right_padding_agree(name: str) -> None:
    model = make_model(name).eval()
    features = padded_batch()
    right = dict(features)
    for field in ("hist_item", "hist_c0"):
        moved = torch.zeros_like(features[field])
        for row in range(B):
            ids = features[field][row][features["hist_item"][row] != 0]
            moved[row, : ids.numel()] = ids
        right[field] = moved
    with torch.no_grad():
        torch.testing.assert_close(model(right), model(features), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["dien", "dmin"])
def test_auxiliary_loss_on_sampled_negatives(name: str) -> None:
    model = make_model(name).train()
    features = padded_batch()
    outputs = model.training_outputs(features)
    assert {"states", "history", "negatives", "mask", "negative_valid"} <= set(outputs.aux)
    valid = outputs.aux["negative_valid"]
    assert not (valid & ~outputs.aux["mask"]).any()  # no negative at a padded position
    assert outputs.aux["negatives"].shape == outputs.aux["history"].shape
    loss = model.auxiliary_loss(outputs, torch.zeros(B))
    assert loss is not None and loss.ndim == 0 and float(loss.detach()) > 0
    off = build_model(name, FMAP, aux_loss_weight=0.0)
    off_outputs = off.training_outputs(features)
    assert off.auxiliary_loss(off_outputs, torch.zeros(B)) is None
    with pytest.raises(ValueError, match="aux_loss_weight"):
        build_model(name, FMAP, aux_loss_weight=-1.0)


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_missing_history_or_target_is_a_clear_error(name: str) -> None:
    plain = tiny_feature_map(with_numeric=False)
    with pytest.raises(ValueError, match="no sequence field"):
        build_model(name, plain)
    untargeted = FeatureMap(
        (*plain.fields, FieldInfo("hist", "sequence", max_len=3, embedding_group="item")),
        labels=("click",),
    )
    with pytest.raises(ValueError, match="target"):
        build_model(name, untargeted)
