"""FeatureEmbedding: pooled field vectors, unpooled sequences with masks, multi-attribute
histories with their targets, and the history-free models' outputs pinned to the mean-pool
formula FeatureEmbedding always used."""

from __future__ import annotations

import pytest
import torch

from adrank.data.feature_map import FeatureMap, FieldInfo
from adrank.models.deepfm import DeepFM
from adrank.models.dnn import DNN
from adrank.nn.embedding import FeatureEmbedding
from adrank.nn.pooling import pool_sequence

B, L, D = 6, 5, 4


def history_feature_map(genre_field: bool = True, target: str | None = "item") -> FeatureMap:
    """user, item, (genre), a numeric field, a history of items (target ``item``) and the
    aligned history of their genres (sharing the ``genre`` table)."""
    fields = [
        FieldInfo("user", "categorical", vocab_size=12),
        FieldInfo("item", "categorical", vocab_size=9),
    ]
    if genre_field:
        fields.append(FieldInfo("genre", "categorical", vocab_size=5))
    fields += [
        FieldInfo("n0", "numeric"),
        FieldInfo(
            "hist_item", "sequence", vocab_size=9, max_len=L, embedding_group="item", target=target
        ),
        FieldInfo(
            "hist_genre",
            "sequence",
            vocab_size=5,
            max_len=L,
            embedding_group="genre" if genre_field else "",
            aligned_with="hist_item",
        ),
    ]
    return FeatureMap(tuple(fields), labels=("click",))


def history_features(seed: int = 0, with_genre: bool = True) -> dict[str, torch.Tensor]:
    """Left-padded histories of lengths 0..5 (row 0 is a first interaction)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([0, 1, 2, 3, 5, 4])
    real = torch.arange(L).unsqueeze(0) >= (L - lengths).unsqueeze(1)  # left padding
    hist_item = torch.where(real, torch.randint(1, 9, (B, L), generator=g), 0)
    hist_genre = torch.where(real, torch.randint(1, 5, (B, L), generator=g), 0)
    feats = {
        "user": torch.randint(0, 12, (B,), generator=g),
        "item": torch.randint(1, 9, (B,), generator=g),
        "n0": torch.randn(B, generator=g),
        "hist_item": hist_item,
        "hist_genre": hist_genre,
    }
    if with_genre:
        feats["genre"] = torch.randint(1, 5, (B,), generator=g)
    return feats


def randomize(module: torch.nn.Module, seed: int = 3) -> None:
    """Give every parameter visible values (the default init std is 1e-4)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def old_embed_each(emb: FeatureEmbedding, features: dict[str, torch.Tensor]) -> dict:
    """FeatureEmbedding._embed_each before pooled/unpooled embeddings (commit ee7a8b2),
    written out inline: the mean pool ``(seq * mask).sum(1) / mask.sum(1).clamp_min(1.0)``."""
    out = {}
    if emb._fused_cat_names:
        ids = torch.stack([features[n] for n in emb._fused_cat_names], dim=1)
        e = emb.fused(ids + emb.fused_cat_offsets)
        for i, n in enumerate(emb._fused_cat_names):
            out[n] = e[:, i]
    for f in emb.fields:
        if f.name in out:
            continue
        x = features[f.name]
        if f.kind == "numeric":
            out[f.name] = x.unsqueeze(-1) * emb.numeric_weight[f.name]
        elif f.kind == "categorical":
            out[f.name] = emb._lookup(f.table, x)
        else:
            seq = emb._lookup(f.table, x)
            mask = (x != 0).unsqueeze(-1).to(seq.dtype)
            out[f.name] = (seq * mask).sum(1) / mask.sum(1).clamp_min(1.0)
    return out


@pytest.mark.parametrize("model_cls", [DeepFM, DNN])
def test_history_free_models_are_bit_identical_to_the_old_mean_pool(
    model_cls: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    fm = history_feature_map()
    feats = history_features()
    torch.manual_seed(0)
    model = model_cls(fm, embedding_dim=D, hidden_units=(8,), batch_norm=False).eval()
    randomize(model)
    new = model(feats)
    monkeypatch.setattr(FeatureEmbedding, "_embed_each", lambda self, f: old_embed_each(self, f))
    old = model(feats)
    assert torch.equal(new, old)
    assert new.unique().numel() == B  # the pin is not vacuous: every row differs


def test_embed_fields_are_the_rows_of_forward() -> None:
    fm = history_feature_map()
    emb = FeatureEmbedding(fm, D)
    randomize(emb)
    feats = history_features()
    each = emb.embed_fields(feats)
    assert list(each) == ["user", "item", "genre", "n0"]
    stacked = emb(feats)  # (B, F, D)
    for i, name in enumerate(emb.field_names):
        if name in each:
            assert torch.equal(each[name], stacked[:, i])
    assert list(emb.embed_fields(feats, ["n0", "item"])) == ["n0", "item"]
    with pytest.raises(ValueError, match=r"hist_item.*is a sequence"):
        emb.embed_fields(feats, ["hist_item"])


def test_embed_sequence_values_mask_and_pooling() -> None:
    emb = FeatureEmbedding(history_feature_map(), D)
    randomize(emb)
    feats = history_features()
    seq = emb.embed_sequence(feats, "hist_item")
    assert seq.values.shape == (B, L, D) and seq.mask.dtype == torch.bool
    assert torch.equal(seq.mask, feats["hist_item"] != 0)
    assert torch.equal(seq.values, emb.fused(feats["hist_item"] + emb._offsets["item"]))
    # the pooled field in forward is the mean pool of the unpooled one
    i = emb.field_names.index("hist_item")
    assert torch.equal(emb(feats)[:, i], pool_sequence(seq.values, seq.mask, "mean"))
    with pytest.raises(ValueError, match="'user' is categorical"):
        emb.embed_sequence(feats, "user")


def test_pooling_modes_by_hand() -> None:
    values = torch.tensor(
        [[[1.0, 5.0], [3.0, -1.0], [9.0, 9.0]], [[7.0, 7.0], [2.0, 2.0], [0.0, 1.0]]]
    )
    mask = torch.tensor([[True, True, False], [False, False, False]])
    assert torch.equal(pool_sequence(values, mask, "sum"), torch.tensor([[4.0, 4.0], [0.0, 0.0]]))
    assert torch.equal(pool_sequence(values, mask, "mean"), torch.tensor([[2.0, 2.0], [0.0, 0.0]]))
    assert torch.equal(pool_sequence(values, mask, "max"), torch.tensor([[3.0, 5.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="unknown pooling mode 'median'"):
        pool_sequence(values, mask, "median")


def test_embed_history_concatenates_aligned_attributes_and_targets() -> None:
    emb = FeatureEmbedding(history_feature_map(), D)
    randomize(emb)
    feats = history_features()
    hist = emb.embed_history(feats, "hist_item")
    assert hist.attributes == ("hist_item", "hist_genre")
    assert emb.history_fields() == ["hist_item"]
    assert emb.history_target_fields("hist_item") == ("item", "genre")
    assert hist.values.shape == (B, L, 2 * D) and hist.target.shape == (B, 2 * D)
    assert torch.equal(hist.mask, feats["hist_item"] != 0)
    items = emb.embed_sequence(feats, "hist_item").values
    genres = emb.embed_sequence(feats, "hist_genre").values
    assert torch.equal(hist.values, torch.cat([items, genres], -1))
    each = emb.embed_fields(feats)
    assert torch.equal(hist.target, torch.cat([each["item"], each["genre"]], -1))
    with pytest.raises(ValueError, match="aligned with 'hist_item'"):
        emb.embed_history(feats, "hist_genre")


def test_history_target_parts_without_a_matching_field_are_zeros() -> None:
    fm = history_feature_map(genre_field=False, target=None)
    emb = FeatureEmbedding(fm, D)
    randomize(emb)
    feats = history_features(with_genre=False)
    # hist_item: no declared target, but item is the one categorical field on its table
    assert emb.history_target_fields("hist_item") == ("item", None)
    hist = emb.embed_history(feats, "hist_item")
    assert torch.equal(hist.target[:, :D], emb.embed_fields(feats)["item"])
    assert torch.equal(hist.target[:, D:], torch.zeros(B, D))


def test_embed_history_works_from_a_subset_without_the_target_fields() -> None:
    """A sequence model may embed its histories apart: the targets come from their tables."""
    part = FeatureEmbedding(history_feature_map(), D, fields=["hist_item", "hist_genre"])
    randomize(part)
    feats = history_features()
    hist = part.embed_history(feats, "hist_item")
    item = part.lookup_sequence("hist_item", feats["item"])
    genre = part.lookup_sequence("hist_genre", feats["genre"])
    assert torch.equal(hist.target, torch.cat([item, genre], -1))


def test_history_target_of_candidates_needs_no_history() -> None:
    """Serving: the user's history is embedded once, the K candidates' targets apart."""
    emb = FeatureEmbedding(history_feature_map(), D)
    randomize(emb)
    candidates = {"item": torch.tensor([2, 3, 4]), "genre": torch.tensor([1, 2, 3])}
    target = emb.embed_history_target(candidates, "hist_item")  # (K, 2D)
    item = emb.fused(candidates["item"] + emb._offsets["item"])
    genre = emb.fused(candidates["genre"] + emb._offsets["genre"])
    assert torch.equal(target, torch.cat([item, genre], -1))


def numeric_feature_map(dims: tuple[int, ...] = (0, 0, 0)) -> FeatureMap:
    """Numeric fields whose names sort apart from their order (I1, I2, I10; ParameterDict
    keeps its keys sorted) around a categorical field."""
    names = ("I1", "I2", "I10")
    numeric = [FieldInfo(n, "numeric", embedding_dim=d) for n, d in zip(names, dims, strict=True)]
    cat = FieldInfo("c", "categorical", vocab_size=7)
    return FeatureMap((numeric[0], cat, *numeric[1:]), labels=("click",))


def per_field_numeric(emb: FeatureEmbedding, features: dict[str, torch.Tensor]) -> dict:
    """The numeric embeddings one field at a time (before they were embedded together)."""
    return {n: features[n].unsqueeze(-1) * emb.numeric_weight[n] for n in emb.numeric_names}


def numeric_features(rows: int = 64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    feats = {n: torch.randn(rows, generator=g) for n in ("I1", "I2", "I10")}
    feats["c"] = torch.randint(0, 7, (rows,), generator=g)
    return feats


def test_numeric_fields_embedded_together_match_one_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Same products bit for bit, in field order (not the ParameterDict's sorted order), and
    the same gradients up to summation order."""
    emb = FeatureEmbedding(numeric_feature_map(), D)
    randomize(emb)
    feats = numeric_features()
    together = emb(feats)
    together.pow(2).sum().backward()
    grads = {n: p.grad.clone() for n, p in emb.named_parameters()}
    emb.zero_grad(set_to_none=True)
    monkeypatch.setattr(FeatureEmbedding, "_embed_numeric", per_field_numeric)
    one_by_one = emb(feats)
    one_by_one.pow(2).sum().backward()
    assert torch.equal(together, one_by_one)
    assert together[:, 0].abs().sum() > 0 and not torch.equal(together[:, 0], together[:, 2])
    for name, p in emb.named_parameters():
        assert torch.allclose(grads[name], p.grad, rtol=1e-5, atol=1e-7), name


def test_numeric_fields_of_different_dims_are_embedded_one_at_a_time() -> None:
    emb = FeatureEmbedding(numeric_feature_map((2, 3, 3)), D, use_field_dims=True)
    randomize(emb)
    feats = numeric_features()
    flat = emb.forward_flat(feats)  # I1 (2) | c (4) | I2 (3) | I10 (3)
    assert flat.shape == (64, 12)
    expected = per_field_numeric(emb, feats)
    assert torch.equal(flat[:, :2], expected["I1"])
    assert torch.equal(flat[:, 6:9], expected["I2"])
    assert torch.equal(flat[:, 9:], expected["I10"])
