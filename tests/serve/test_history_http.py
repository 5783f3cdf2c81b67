"""A sequence model served over real HTTP on 127.0.0.1: the user's history travels in the
request ``context`` (a list, oldest first), is cut to its newest ``max_len`` items (counted
in ``/metrics``), unknown ids are OOV, ``/v1/rank`` and ``/v1/predict`` give the scores of
per-candidate scoring to 1e-6, and a body over ``max_body_bytes`` is a 413 naming the
option. ``test_movielens_din_ranks_a_real_history`` does it with a DIN trained on the real
``movielens_100k``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest
import torch

from adrank.config import RunConfig, TrainConfig
from adrank.data.prepare import prepare_dataset, prepare_frames
from adrank.data.schema import Schema
from adrank.pipeline import train_run
from adrank.serve.predictor import Predictor

MAX_LEN = 6
SCHEMA = Schema.from_dict(
    {
        "tasks": ["click"],
        "roles": {"group": "user"},
        "features": [
            {"name": "user", "type": "categorical"},
            {"name": "item", "type": "categorical"},
            {"name": "genre", "type": "categorical"},
            {"name": "hist_item", "type": "sequence", "max_len": MAX_LEN,
             "share_vocab_with": "item", "target": "item"},
            {"name": "hist_genre", "type": "sequence", "max_len": MAX_LEN,
             "share_vocab_with": "genre", "aligned_with": "hist_item"},
        ],
    }
)  # fmt: skip


def _frame(rows: int, seed: int) -> pl.DataFrame:
    """Synthetic clicks (made up for this test): a user clicks items of the genre that
    dominates their history."""
    rng = np.random.default_rng(seed)
    items = rng.integers(0, 40, rows)
    hist_len = rng.integers(0, 10, rows)
    hists = [rng.integers(0, 40, n) for n in hist_len]
    favourite = [np.bincount(h % 4, minlength=4).argmax() if len(h) else -1 for h in hists]
    click = [int(i % 4 == f or rng.random() < 0.2) for i, f in zip(items, favourite, strict=True)]
    return pl.DataFrame(
        {
            "click": click,
            "user": [f"u{x}" for x in rng.integers(0, 30, rows)],
            "item": [f"i{x}" for x in items],
            "genre": [f"g{x % 4}" for x in items],
            "hist_item": ["|".join(f"i{x}" for x in h) for h in hists],
            "hist_genre": ["|".join(f"g{x % 4}" for x in h) for h in hists],
        }
    )


@pytest.fixture(scope="module")
def din_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("history-http")
    splits = {name: _frame(n, seed) for name, n, seed in
              (("train", 3000, 1), ("valid", 500, 2), ("test", 500, 3))}  # fmt: skip
    prepared = prepare_frames(SCHEMA, splits, root / "prepared")
    config = RunConfig(
        model="din",
        params={"embedding_dim": 4, "attention_hidden_units": [8], "hidden_units": [16]},
        train=TrainConfig(max_epochs=1, batch_size=256, progress=False, seed=0, num_threads=1),
    )
    train_run(config, root / "din", prepared=prepared)
    return root / "din"


@pytest.fixture(scope="module")
def server(din_run: Path, server_class: Any) -> Iterator[Any]:
    from adrank.serve.app import create_app

    app = create_app(din_run, max_body_bytes=4096, torch_threads=None)
    with server_class(app) as live:
        yield live


def genre_of(item: str) -> str:
    return f"g{int(item[1:]) % 4}" if item[1:].isdigit() else "g0"


HISTORY = [f"i{x}" for x in (3, 7, 11, 15, 2, 19, 23, 27, 5)]  # 9 > MAX_LEN, oldest first
GENRES = [genre_of(x) for x in HISTORY]


def _rank(url: str, context: dict[str, Any], items: list[str]) -> dict[str, float]:
    body = {
        "context": context,
        "candidates": [
            {"ad_id": item, "bid": 1.0, "features": {"item": item, "genre": genre_of(item)}}
            for item in items
        ],
        "slots": len(items),
    }
    res = httpx.post(f"{url}/v1/rank", json=body, timeout=30)
    assert res.status_code == 200, res.text
    return {s["ad_id"]: s["pctr"] for s in res.json()["slots"]}


def test_rank_scores_a_request_history_as_per_candidate_scoring(server: Any, din_run: Path) -> None:
    items = ["i3", "i4", "i5", "i6", "i8", "i12", "never-seen"]
    context = {"user": "u1", "hist_item": HISTORY, "hist_genre": GENRES}
    got = _rank(server.url, context, items)
    predictor = Predictor.load(din_run)
    newest = {"hist_item": "|".join(HISTORY[-MAX_LEN:]), "hist_genre": "|".join(GENRES[-MAX_LEN:])}
    for item in items:  # one record per candidate, the history already cut: one forward each
        record = {"user": "u1", "item": item, "genre": genre_of(item), **newest}
        expected = predictor.predict_outputs([record])["pctr"][0]
        assert abs(got[item] - expected) <= 1e-6, item
    # the request's first items (i3, i7, i11) were dropped: they change nothing
    assert (
        _rank(server.url, {**context, "hist_item": ["zz", "zz", "zz", *HISTORY[3:]]}, items) == got
    )
    # unknown ids are OOV: two unknown ids score alike
    a = _rank(server.url, {**context, "hist_item": [*HISTORY[:-1], "unknown-a"]}, items)
    b = _rank(server.url, {**context, "hist_item": [*HISTORY[:-1], "unknown-b"]}, items)
    assert a == b and a != got
    metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
    assert 'adrank_history_truncated_total{reason="hist_item"} 4' in metrics
    assert 'adrank_history_items_dropped_total{reason="hist_item"} 12' in metrics


def test_predict_takes_the_history_in_its_context(server: Any) -> None:
    items = ["i3", "i4", "i9"]
    context = {"user": "u2", "hist_item": HISTORY, "hist_genre": GENRES}
    ranked = _rank(server.url, context, items)
    body = {"context": context, "records": [{"item": i, "genre": genre_of(i)} for i in items]}
    res = httpx.post(f"{server.url}/v1/predict", json=body, timeout=30)
    assert res.status_code == 200, res.text
    np.testing.assert_allclose(res.json()["pctr"], [ranked[i] for i in items], rtol=0, atol=1e-6)


def test_a_body_over_the_limit_is_a_413_naming_the_option(server: Any) -> None:
    long = {"user": "u1", "hist_item": [f"i{x % 40}" for x in range(2000)]}
    body = {"context": long, "candidates": [{"ad_id": "a", "bid": 1.0, "features": {"item": "i1"}}]}
    res = httpx.post(f"{server.url}/v1/rank", json=body, timeout=30)
    assert res.status_code == 413
    assert "4096 bytes" in res.json()["detail"] and "--max-body-bytes" in res.json()["detail"]


@pytest.mark.integration
def test_movielens_din_ranks_a_real_history(
    data_dir: Path, cache_dir: Path, tmp_path: Path, server_class: Any
) -> None:
    """A DIN trained for one epoch on the real movielens_100k (click task ``like``) ranks
    ten movies for a test user's real history over HTTP, as per-candidate scoring does."""
    from adrank.data.datasets import get_dataset
    from adrank.serve.app import create_app

    builder = get_dataset("movielens_100k")
    if builder.missing_files(data_dir):
        pytest.skip("movielens_100k files absent")
    prepared = prepare_dataset("movielens_100k", data_dir=data_dir, cache_dir=cache_dir)
    config = RunConfig(
        model="din",
        dataset="movielens_100k",
        params={"embedding_dim": 8, "hidden_units": [32]},
        train=TrainConfig(
            max_epochs=1, batch_size=4096, num_threads=1, progress=False, seed=0, task="like"
        ),
    )
    train_run(config, tmp_path / "din", prepared=prepared)
    test = builder.build_splits(data_dir)["test"]
    row = test.filter(pl.col("user_id") == "1").row(0, named=True)
    user = ["user_id", "age", "gender", "occupation", "zip_code"]
    context = {c: row[c] for c in user}
    context |= {c: row[c].split("|") for c in ("hist_item_id", "hist_genre")}  # oldest first
    movies = test.unique("item_id", keep="first").sort("item_id").head(10)
    candidates = [
        {"ad_id": m["item_id"], "bid": 1.0,
         "features": {"item_id": m["item_id"], "release_year": m["release_year"],
                      "genre": m["genre"]}}
        for m in movies.iter_rows(named=True)
    ]  # fmt: skip
    body = {"context": context, "candidates": candidates, "slots": 3}
    with server_class(create_app(tmp_path / "din", torch_threads=None)) as live:
        res = httpx.post(f"{live.url}/v1/rank", json=body, timeout=60)
    assert res.status_code == 200, res.text
    slots = res.json()["slots"]
    assert [s["slot"] for s in slots] == [1, 2, 3]
    predictor = Predictor.load(tmp_path / "din")
    flat = {c: "|".join(v) if isinstance(v, list) else v for c, v in context.items()}
    records = [{**flat, **c["features"]} for c in candidates]
    each = {c["ad_id"]: predictor.predict_outputs([r])["pctr"][0]
            for c, r in zip(candidates, records, strict=True)}  # fmt: skip
    for s in slots:
        assert abs(s["pctr"] - each[s["ad_id"]]) <= 1e-6
    assert [s["ad_id"] for s in slots] == sorted(each, key=lambda a: -each[a])[:3]


@pytest.mark.parametrize(
    "history",
    [HISTORY[-MAX_LEN:], "|".join(HISTORY[-MAX_LEN:]), [3, 7, "i11"], [], None],
    ids=["list", "delimited", "ints", "empty", "missing"],
)
def test_columnar_encode_gives_the_record_path_ids_with_the_history_encoded_once(
    din_run: Path, history: Any
) -> None:
    from adrank.serve.columnar import PairRecords, encode_pairs

    predictor = Predictor.load(din_run)
    context: dict[str, Any] = {"user": "u1"}
    if history is not None:
        context |= {"hist_item": history, "hist_genre": history}
    rows = [{"item": i, "genre": genre_of(i)} for i in ("i3", "i4", "never-seen")]
    pairs = PairRecords(context, rows)
    fast = encode_pairs(predictor, pairs)
    assert fast is not None
    slow = predictor.encode_records(predictor.check_records(list(pairs)))
    assert fast.keys() == slow.keys()
    for name in slow:
        assert torch.equal(fast[name], slow[name]), name
    assert fast["hist_item"].stride(0) == 0  # one row, broadcast to every pair
    np.testing.assert_allclose(
        predictor.predict_outputs(pairs)["pctr"], predictor.predict_outputs(list(pairs))["pctr"],
        rtol=0, atol=1e-6,
    )  # fmt: skip


def test_columnar_encode_leaves_odd_histories_to_the_record_path(din_run: Path) -> None:
    from adrank.serve.columnar import PairRecords, encode_pairs

    predictor = Predictor.load(din_run)
    rows = [{"item": "i3", "genre": "g3"}]
    for history in (["i1|i2"], [1.5], [True], [{"x": 1}]):  # a delimiter inside, non-ids
        assert encode_pairs(predictor, PairRecords({"hist_item": history}, rows)) is None
    # a candidate's own history: per-pair encoding
    own = [{"item": "i3", "genre": "g3", "hist_item": ["i1"]}]
    assert encode_pairs(predictor, PairRecords({"hist_item": ["i2"]}, own)) is None


def test_aligned_histories_of_different_lengths_are_refused(server: Any, din_run: Path) -> None:
    """hist_genre gives one genre per event of hist_item: a request whose lists differ in
    length (or that leaves the aligned one out) paired genres with the wrong items and was
    scored (200); now a 422 naming the field, over HTTP and in the Predictor."""
    from adrank.serve.predictor import RecordError

    items = ["i3", "i4"]
    body = {
        "context": {"user": "u1", "hist_item": ["i1", "i2", "i3"], "hist_genre": ["g1"]},
        "candidates": [{"ad_id": i, "bid": 1.0, "features": {"item": i, "genre": "g0"}}
                       for i in items],
        "slots": 2,
    }  # fmt: skip
    res = httpx.post(f"{server.url}/v1/rank", json=body, timeout=30)
    assert res.status_code == 422, res.text
    detail = res.json()["detail"][0]
    assert "hist_genre" in " ".join(map(str, detail["loc"])) + detail["msg"]
    assert (
        "'hist_genre' has 1 item(s) but 'hist_item', which it is aligned with, has 3"
        in (detail["msg"])
    )
    del body["context"]["hist_genre"]  # an aligned history left out is empty: refused too
    assert httpx.post(f"{server.url}/v1/rank", json=body, timeout=30).status_code == 422
    predict = {"context": {"user": "u1", "hist_item": ["i1", "i2"], "hist_genre": ["g1"]},
               "records": [{"item": "i3", "genre": "g3"}]}  # fmt: skip
    assert httpx.post(f"{server.url}/v1/predict", json=predict, timeout=30).status_code == 422
    record = {"user": "u1", "item": "i3", "genre": "g3", "hist_item": "i1|i2", "hist_genre": "g1"}
    with pytest.raises(RecordError, match="aligned"):
        Predictor.load(din_run).predict_outputs([record])


def test_prepare_refuses_unequal_aligned_histories_and_reads_list_columns(
    tmp_path: Path,
) -> None:
    from adrank.data.processor import FeatureProcessor
    from adrank.data.transforms import TransformError

    frame = _frame(200, 5)
    row7 = pl.int_range(pl.len()) == 7
    bad = frame.with_columns(
        pl.when(row7).then(pl.lit("i1|i2|i3")).otherwise(pl.col("hist_item")).alias("hist_item"),
        pl.when(row7).then(pl.lit("g1")).otherwise(pl.col("hist_genre")).alias("hist_genre"),
    )
    proc = FeatureProcessor(SCHEMA).fit(frame)
    with pytest.raises(TransformError, match=r"'hist_genre' has 1 item\(s\) in row 7 .* has 3"):
        proc.transform(bad)
    # lists (a frame in code, Parquet) encode as the delimited text does
    lists = frame.with_columns(
        pl.col("hist_item").str.split("|").list.eval(pl.element().filter(pl.element() != "")),
        pl.col("hist_genre").str.split("|").list.eval(pl.element().filter(pl.element() != "")),
    )
    assert proc.transform(lists).equals(proc.transform(frame))


def test_list_histories_are_checked_as_the_service_checks_them() -> None:
    """A list item holding the delimiter became two ids, and a null item was dropped,
    silently (the Predictor refused both): the processor refuses them naming the row."""
    from adrank.data.processor import FeatureProcessor
    from adrank.data.transforms import TransformError

    frame = _frame(50, 5)
    proc = FeatureProcessor(SCHEMA).fit(frame)
    lists = frame.with_columns(
        pl.col("hist_item").str.split("|").list.eval(pl.element().filter(pl.element() != "")),
        pl.col("hist_genre").str.split("|").list.eval(pl.element().filter(pl.element() != "")),
    )
    row3 = pl.int_range(pl.len()) == 3
    split = lists.with_columns(
        pl.when(row3).then(pl.lit(["i1|i2"])).otherwise(pl.col("hist_item")).alias("hist_item"),
        pl.when(row3).then(pl.lit(["g1", "g2"])).otherwise("hist_genre").alias("hist_genre"),
    )
    with pytest.raises(TransformError, match=r"'hist_item': an item in row 3 holds the delim") as e:
        proc.transform(split)
    assert (e.value.column, e.value.row) == ("hist_item", 3)
    holes = lists.with_columns(
        pl.when(row3).then(pl.lit(["i1", None])).otherwise(pl.col("hist_item")).alias("hist_item")
    )
    with pytest.raises(TransformError, match=r"'hist_item': an item in row 3 is null"):
        proc.transform(holes)
    floats = lists.with_columns(pl.lit([1.5], pl.List(pl.Float64)).alias("hist_item"))
    with pytest.raises(TransformError, match=r"'hist_item' holds lists of Float64"):
        proc.transform(floats)
    ints = lists.with_columns(pl.lit([1, 2], pl.List(pl.Int64)).alias("hist_item"))
    assert proc.transform(ints.with_columns(pl.lit(["g1", "g2"]).alias("hist_genre"))).height == 50
    # a whole history left null is an empty history, as the text path reads it
    empty = lists.with_columns(
        pl.when(row3).then(None).otherwise(pl.col("hist_item")).alias("hist_item"),
        pl.when(row3).then(None).otherwise(pl.col("hist_genre")).alias("hist_genre"),
    )
    text = frame.with_columns(
        pl.when(row3).then(pl.lit("")).otherwise(pl.col("hist_item")).alias("hist_item"),
        pl.when(row3).then(pl.lit("")).otherwise(pl.col("hist_genre")).alias("hist_genre"),
    )
    assert proc.transform(empty).equals(proc.transform(text))


def test_fit_reads_list_histories_as_transform_does() -> None:
    """Fitting on list-typed histories (a Parquet file, a frame in code) crashed with a
    polars cast error; it builds the vocabulary the delimited text builds."""
    from adrank.data.processor import FeatureProcessor

    frame = _frame(80, 5)
    lists = frame.with_columns(
        pl.col("hist_item").str.split("|").list.eval(pl.element().filter(pl.element() != "")),
        pl.col("hist_genre").str.split("|").list.eval(pl.element().filter(pl.element() != "")),
    )
    from_text = FeatureProcessor(SCHEMA).fit(frame)
    from_lists = FeatureProcessor(SCHEMA).fit(lists)
    assert from_lists.transform(lists).equals(from_text.transform(frame))


def _post(url: str, path: str, context: dict[str, Any]) -> httpx.Response:
    body: dict[str, Any] = {"context": {"user": "u1", **context}}
    if path == "/v1/rank":
        candidate = {"ad_id": "i3", "bid": 1.0, "features": {"item": "i3", "genre": "g3"}}
        body |= {"candidates": [candidate], "slots": 1}
    else:
        body["records"] = [{"item": "i3", "genre": "g3"}]
    return httpx.post(f"{url}{path}", json=body, timeout=30)


@pytest.mark.parametrize("path", ["/v1/rank", "/v1/predict"])
def test_unequal_aligned_histories_longer_than_max_len_are_refused(server: Any, path: str) -> None:
    """The service cut each history to its newest max_len items before the alignment
    check: 30 items with 29 genres (or 300 with 25) were cut to 6 and 6 and scored, every
    event paired with the previous event's genre (a 200); now a 422 with the real lengths."""
    items = [f"i{x % 40}" for x in range(30)]
    genres = [genre_of(x) for x in items]
    res = _post(server.url, path, {"hist_item": items, "hist_genre": genres[1:]})
    assert res.status_code == 422, res.text
    assert "has 29 item(s)" in res.text or "has 30 item(s)" in res.text
    res = _post(server.url, path, {"hist_item": "|".join(items), "hist_genre": "g1|g2"})
    assert res.status_code == 422, res.text
    ok = _post(server.url, path, {"hist_item": items, "hist_genre": genres})  # cut alike
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("path", ["/v1/rank", "/v1/predict"])
def test_empty_history_items_are_refused(server: Any, path: str) -> None:
    """["1", "", "3"] dropped the empty item and paired the later genres with the wrong
    items (a 200 scored as 1-Action, 3-Comedy, ...); a list's empty item is refused like a
    null one, and so is an empty token inside an aligned history's text."""
    res = _post(server.url, path, {"hist_item": ["i1", "", "i3"], "hist_genre": ["g1", "g2", "g3"]})
    assert res.status_code == 422, res.text
    assert "is empty" in res.text
    res = _post(server.url, path, {"hist_item": "i1||i3", "hist_genre": "g1|g2|g3"})
    assert res.status_code == 422, res.text
    assert "empty item" in res.text


def test_processor_refuses_gaps_in_aligned_text_only() -> None:
    from adrank.data.processor import FeatureProcessor
    from adrank.data.transforms import TransformError

    frame = _frame(40, 7)
    proc = FeatureProcessor(SCHEMA).fit(frame)
    row2 = pl.int_range(pl.len()) == 2
    gap = frame.with_columns(
        pl.when(row2).then(pl.lit("i1||i3")).otherwise("hist_item").alias("hist_item"),
        pl.when(row2).then(pl.lit("g1|g2|g3")).otherwise("hist_genre").alias("hist_genre"),
    )
    with pytest.raises(TransformError, match=r"'hist_item': row 2 has an empty item"):
        proc.transform(gap)
    history = {"name": "hist_item", "type": "sequence", "max_len": 4, "share_vocab_with": "item"}
    unaligned = Schema.from_dict(
        {"tasks": ["click"], "features": [{"name": "item", "type": "categorical"}, history]}
    )
    plain = frame.select("click", "item", "hist_item")
    proc = FeatureProcessor(unaligned).fit(plain)
    loose = plain.with_columns(pl.when(row2).then(pl.lit("i1||i3|")).otherwise("hist_item"))
    tight = plain.with_columns(pl.when(row2).then(pl.lit("i1|i3")).otherwise("hist_item"))
    assert proc.transform(loose).equals(proc.transform(tight))  # documented: not items
