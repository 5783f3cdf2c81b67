"""Pretrained item vectors (the schema's ``pretrained`` feature type): read from Parquet,
aligned to the id feature's vocabulary, saved with the processor and the feature map,
frozen or fine-tuned in training, seen by history attention; clear errors for bad files;
the lexical title + genre vectors of ``movielens_100k_text`` on the real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml

from adrank.data.batches import table_to_batch
from adrank.data.feature_map import FeatureMap
from adrank.data.prepare import prepare_frames
from adrank.data.pretrained import text_vectors
from adrank.data.processor import FeatureProcessor
from adrank.data.schema import OOV_ID, PAD_ID, Schema, SchemaError
from adrank.models import build_model
from adrank.nn.pretrained import PretrainedTable

VECTORS = {"a": [1.0, 0.0, 0.0], "b": [0.0, 2.0, 0.0], "c": [0.0, 0.0, 3.0], "zz": [9.0, 9.0, 9.0]}


def _log() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user": ["u1", "u1", "u1", "u2", "u2", "u3"],
            "item": ["a", "b", "a", "a", "d", "b"],
            "hist": ["", "a", "a|b", "", "a", "x"],
            "click": [1, 0, 1, 0, 1, 0],
        }
    )


def _schema(freeze: bool = True, vectors: str | None = None, dim: int | None = None) -> dict:
    item_vec = {"name": "item_vec", "type": "pretrained", "share_vocab_with": "item",
                "id_column": "item_id", "freeze": freeze}  # fmt: skip
    if vectors is not None:
        item_vec["vectors"] = vectors
    if dim is not None:
        item_vec["dim"] = dim
    return {
        "tasks": ["click"],
        "features": [
            {"name": "user", "type": "categorical"},
            {"name": "item", "type": "categorical"},
            item_vec,
            {"name": "hist", "type": "sequence", "max_len": 3, "share_vocab_with": "item",
             "target": "item"},
            {"name": "hist_vec", "type": "sequence", "max_len": 3, "source": "hist",
             "share_vocab_with": "item_vec", "aligned_with": "hist"},
        ],
    }  # fmt: skip


def _vectors(rows: dict[str, list[float]] | None = None) -> pl.DataFrame:
    rows = VECTORS if rows is None else rows
    return pl.DataFrame(
        {"item_id": list(rows), "vector": list(rows.values())},
        schema={"item_id": pl.Utf8, "vector": pl.List(pl.Float64)},
    )


def _fitted(freeze: bool = True) -> FeatureProcessor:
    schema = Schema.from_dict(_schema(freeze))
    return FeatureProcessor(schema).fit(_log(), vectors={"item_vec": _vectors()})


def test_vectors_are_aligned_to_the_id_vocabulary() -> None:
    proc = _fitted()
    vocab = proc.vocab_["item"]
    assert sorted(proc.vocab_) == ["item", "user"]  # no vocabulary of its own, counted once
    assert vocab == ["a", "b", "d", "x"]  # targets and histories counted once each
    table = proc.vectors_["item_vec"]
    assert table.shape == (len(vocab) + 2, 3) and table.dtype == np.float32
    assert not table[PAD_ID].any() and not table[OOV_ID].any()
    for i, value in enumerate(vocab):
        expected = VECTORS.get(value, [0.0, 0.0, 0.0])  # d and x have none -> zeros
        np.testing.assert_array_equal(table[i + 2], expected)
    encoded = proc.transform(_log())
    # the pretrained field and its history carry the id feature's ids
    assert encoded["item_vec"].to_list() == encoded["item"].to_list()
    assert encoded["hist_vec"].to_list() == encoded["hist"].to_list()
    # "zz" has a vector but is not in the vocabulary: OOV, whose row is zeros
    unseen = proc.transform_records([{"user": "u1", "item": "zz", "hist": "b|zz"}])
    assert unseen["item_vec"].to_list() == [OOV_ID]
    assert unseen["hist_vec"].to_list() == [[0, 3, OOV_ID]]
    fm = proc.feature_map()
    info = fm.field("item_vec")
    assert (info.kind, info.table, info.vocab_size, info.vectors_dim, info.freeze) == (
        "categorical", "item_vec", 6, 3, True,
    )  # fmt: skip
    assert fm.field("hist_vec").table == "item_vec"
    np.testing.assert_array_equal(fm.vectors["item_vec"], table)


def test_processor_and_feature_map_round_trip(tmp_path: Path) -> None:
    proc = _fitted()
    proc.save(tmp_path / "processor")
    loaded = FeatureProcessor.load(tmp_path / "processor")
    np.testing.assert_array_equal(loaded.vectors_["item_vec"], proc.vectors_["item_vec"])
    records = [{"user": "u1", "item": "b", "hist": "a|zz"}, {"user": "u9", "item": "q"}]
    assert loaded.transform_records(records).equals(proc.transform_records(records))
    fm = proc.feature_map()
    fm.save(tmp_path / "feature_map.json")
    assert (tmp_path / "feature_map.vectors_item_vec.npy").is_file()
    back = FeatureMap.load(tmp_path / "feature_map.json")
    assert back == fm
    np.testing.assert_array_equal(back.vectors["item_vec"], fm.vectors["item_vec"])
    (tmp_path / "feature_map.vectors_item_vec.npy").unlink()
    with pytest.raises(FileNotFoundError, match="item_vec"):
        FeatureMap.load(tmp_path / "feature_map.json")


def test_schema_yaml_reads_the_parquet_file_next_to_it(tmp_path: Path) -> None:
    _vectors().write_parquet(tmp_path / "item_vectors.parquet")
    (tmp_path / "schema.yaml").write_text(yaml.safe_dump(_schema(vectors="item_vectors.parquet")))
    schema = Schema.load(tmp_path / "schema.yaml")
    prepared = prepare_frames(schema, {"train": _log(), "valid": _log()}, tmp_path / "prepared")
    np.testing.assert_array_equal(
        prepared.feature_map.vectors["item_vec"], _fitted().vectors_["item_vec"]
    )
    reopened = FeatureMap.load(prepared.directory / "feature_map.json")
    np.testing.assert_array_equal(reopened.vectors["item_vec"], _fitted().vectors_["item_vec"])


def _train_step(freeze: bool) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    proc = _fitted(freeze)
    fm = proc.feature_map()
    torch.manual_seed(0)
    model = build_model("din", fm, embedding_dim=4)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    batch = table_to_batch(proc.transform(_log()).to_arrow(), fm)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        model(batch.features), batch.labels[:, 0]
    )
    loss.backward()
    optimizer.step()
    return model, before


def test_frozen_vectors_stay_and_fine_tuned_ones_change() -> None:
    key = "embedding.pretrained.item_vec.weight"
    model, before = _train_step(freeze=True)
    table = model.embedding.pretrained["item_vec"]
    assert isinstance(table, PretrainedTable) and not table.weight.requires_grad
    assert key in model.state_dict()  # saved with the model: serving uses the same table
    torch.testing.assert_close(model.state_dict()[key], before[key], rtol=0, atol=0)
    projection = "embedding.pretrained.item_vec.projection.weight"  # 3 -> 4: learned
    assert not torch.equal(model.state_dict()[projection], before[projection])
    model, before = _train_step(freeze=False)
    assert model.embedding.pretrained["item_vec"].weight.requires_grad
    changed = model.state_dict()[key] != before[key]
    assert changed[2:4].any()  # rows of a and b, seen in this batch
    assert not changed[PAD_ID].any()  # padding never receives a gradient


def test_history_attention_sees_the_vectors() -> None:
    """DIN's history holds the item, then its vector per position; changing the vector of
    an item in a row's history changes that row's score."""
    proc = _fitted()
    fm = proc.feature_map()
    torch.manual_seed(0)
    model = build_model("din", fm, embedding_dim=4).eval()
    assert model.embedding.history_attributes("hist") == ("hist", "hist_vec")
    assert model.embedding.history_target_fields("hist") == ("item", "item_vec")
    batch = table_to_batch(proc.transform(_log()).to_arrow(), fm)
    with torch.no_grad():
        before = model(batch.features)
        model.embedding.pretrained["item_vec"].weight[3] += 5.0  # b's vector
        after = model(batch.features)
    # row 2's history holds b; row 4's ("a") does not, and its target is d, not b
    assert after[2] != before[2] and after[4] == before[4]


def test_the_projection_starts_at_the_embeddings_scale() -> None:
    """Xavier (the models' default init) on the projection made the vectors ~1000x larger
    than every learned embedding at the start: QIN on movielens_100k_text reached a valid
    AUC of 0.59 after 2 epochs, 0.75 with this init (0.76 without the vectors)."""
    fm = _fitted().feature_map()
    model = build_model("qin", fm, embedding_dim=4)  # default_init: initialize_weights
    weight = model.embedding.pretrained["item_vec"].projection.weight.detach()
    assert 0 < float(weight.std()) < 1e-3


def test_same_dim_vectors_need_no_projection() -> None:
    fm = _fitted().feature_map()
    model = build_model("dnn", fm, embedding_dim=3)
    assert isinstance(model.embedding.pretrained["item_vec"].projection, torch.nn.Identity)


@pytest.mark.parametrize(
    ("rows", "dim", "match"),
    [
        ({"a": [1.0, 0.0], "b": [1.0, 2.0, 3.0]}, None, r"id 'b' \(row 1\).*length 3, expected 2"),
        ({"a": [1.0, 0.0, 0.0]}, 4, r"id 'a' \(row 0\).*length 3, expected 4 \(the schema's dim"),
        ({"a": [1.0, 0.0, 0.0], "b": [0.0, float("nan"), 1.0]}, None, r"id 'b' \(row 1\).*NaN"),
        ({"a": [1.0, float("inf"), 0.0]}, None, r"id 'a' \(row 0\).*infinite"),
    ],
)
def test_bad_vectors_are_named(rows: dict, dim: int | None, match: str) -> None:
    schema = Schema.from_dict(_schema(dim=dim))
    with pytest.raises(SchemaError, match=match):
        FeatureProcessor(schema).fit(_log(), vectors={"item_vec": _vectors(rows)})


def test_duplicate_ids_missing_file_and_bad_declarations(tmp_path: Path) -> None:
    schema = Schema.from_dict(_schema())
    dupes = pl.concat([_vectors(), _vectors({"b": [0.0, 1.0, 1.0]})])
    with pytest.raises(SchemaError, match=r"id 'b' has more than one vector \(rows \[1, 4\]\)"):
        FeatureProcessor(schema).fit(_log(), vectors={"item_vec": dupes})
    with pytest.raises(SchemaError, match="no column 'item_id'"):
        renamed = _vectors().rename({"item_id": "id"})
        FeatureProcessor(schema).fit(_log(), vectors={"item_vec": renamed})
    with pytest.raises(SchemaError, match="'item_vec' has no vectors"):
        FeatureProcessor(schema).fit(_log())
    nowhere = Schema.from_dict(_schema(vectors=str(tmp_path / "nowhere.parquet")))
    with pytest.raises(SchemaError, match=r"vectors file not found: .*nowhere\.parquet"):
        FeatureProcessor(nowhere).fit(_log())
    with pytest.raises(SchemaError, match="no pretrained features"):
        FeatureProcessor(schema).fit(_log(), vectors={"item": _vectors()})
    bad = _schema()
    bad["features"][2]["share_vocab_with"] = "hist"
    with pytest.raises(SchemaError, match="'share_vocab_with' must name the categorical id"):
        Schema.from_dict(bad)
    bad = _schema()
    bad["features"].append({"name": "item2", "type": "categorical", "share_vocab_with": "item_vec"})
    with pytest.raises(SchemaError, match="only a sequence"):
        Schema.from_dict(bad)


def test_text_vectors_are_lexical_and_deterministic() -> None:
    ids = ["1", "2", "3", "4"]
    texts = ["Toy Story Animation Comedy", "Toy Story 2 Animation", "Heat Crime", "Crime Heat"]
    first = text_vectors(ids, texts, dim=3)
    again = text_vectors(ids, texts, dim=3)
    assert first.equals(again) and first.columns == ["id", "vector"]
    m = np.array(first["vector"].to_list())
    assert m.shape == (4, 3)
    np.testing.assert_allclose(np.linalg.norm(m, axis=1), 1.0, rtol=1e-5)
    assert m[2] @ m[3] > 0.99  # the same words
    assert m[0] @ m[1] > m[0] @ m[2]  # shared words are closer than none


@pytest.mark.integration
def test_movielens_text_vectors_on_the_real_item_file(data_dir: Path) -> None:
    from adrank.data.datasets import get_dataset

    builder = get_dataset("movielens_100k_text")
    if builder.missing_files(data_dir):
        pytest.skip("movielens_100k files absent")
    vectors = builder.pretrained_vectors(data_dir)["item_text"]
    assert vectors.height == 1682 and vectors["id"].n_unique() == 1682
    m = np.array(vectors["vector"].to_list())
    assert m.shape == (1682, 32) and np.isfinite(m).all()
    schema = builder.schema()
    assert schema.feature("item_text").source == "item_id"
    assert schema.source_columns() == get_dataset("movielens_100k").schema().source_columns()


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_a_model_with_vectors_exports_with_parity(fmt: str, tmp_path: Path) -> None:
    from adrank.serve.export import EXPORT_FILES, export_model, load_exported, parity

    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    proc = _fitted(freeze=False)
    fm = proc.feature_map()
    torch.manual_seed(0)
    model = build_model("din", fm, embedding_dim=4).eval()
    rows = table_to_batch(proc.transform(_log()).to_arrow(), fm).features
    path = export_model(model, fm, fmt, tmp_path / EXPORT_FILES[fmt])
    assert parity(model, load_exported(path, fmt, fm.names), rows) <= 1e-5
