"""The multi-task dataset definitions: ``frappe_funnel``, ``movielens_100k`` (version 2) and
the click/conversion samples; dataset registration and versioned cache keys. Unit tests on
tiny hand-made files, integration tests on the real data in ``$ADRANK_DATA_DIR``."""

from __future__ import annotations

import gzip
from collections import defaultdict
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from adrank.data.datasets import (
    DatasetBuilder,
    available_datasets,
    base,
    get_dataset,
    register_dataset,
)
from adrank.data.datasets.frappe import FRAPPE_FIELDS, FrappeBuilder
from adrank.data.datasets.movielens import (
    holdout_sizes,
    per_user_split,
    seen_in_training,
    strict_histories,
)
from adrank.data.prepare import dataset_cache_key
from adrank.data.schema import Schema, SequenceFeature, infer_outputs

SPLITS = ("train", "valid", "test")


def _write_tsv_gz(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join("\t".join(r) for r in [header, *rows]) + "\n"
    path.write_bytes(gzip.compress(text.encode()))


# ---- registration ---------------------------------------------------------------------------


class _Toy(DatasetBuilder):
    name = "toy_registration_test"

    def schema(self) -> Schema:
        return Schema(labels=("y",), name=self.name)

    def build_splits(self, data_dir: Path, seed: int | None = None, bad_rows: str = "error"):
        return {}


def test_register_dataset_as_decorator_and_function(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))  # leave no toy behind
    decorated = register_dataset(_Toy)  # what ``@register_dataset`` does
    assert decorated is _Toy
    assert isinstance(get_dataset("toy_registration_test"), _Toy)
    assert "toy_registration_test" in available_datasets()
    register_dataset(_Toy())  # the function form; the same class again is fine

    class Other(_Toy):
        pass

    with pytest.raises(ValueError, match="already registered by _Toy"):
        register_dataset(Other)
    with pytest.raises(TypeError, match="expects a DatasetBuilder"):
        register_dataset(object())  # type: ignore[type-var]


def test_every_dataset_module_registers_with_the_decorator() -> None:
    for name in available_datasets():
        builder = get_dataset(name)
        assert builder.version >= 1
    expected = {"frappe_funnel": 1, "movielens_100k": 2, "frappe": 1}
    assert {n: get_dataset(n).version for n in expected} == expected


def test_cache_key_changes_with_the_definition_version(tmp_path: Path) -> None:
    builder = get_dataset("movielens_100k")

    class Older(type(builder)):  # type: ignore[misc]
        version = 1

    assert dataset_cache_key(builder, tmp_path, 1) != dataset_cache_key(Older(), tmp_path, 1)


# ---- frappe_funnel ---------------------------------------------------------------------------


def _frappe_logs(tmp_path: Path) -> list[list[str]]:
    rng = np.random.default_rng(3)
    context = ["morning", "monday", "workday", "unknown", "free", "sunny", "Spain", "0"]
    rows = [
        [str(u), str(i), str(c), *context]
        for u, i, c in zip(
            rng.integers(0, 8, 200), rng.integers(0, 30, 200), rng.integers(1, 120, 200),
            strict=True,
        )
    ]  # fmt: skip
    _write_tsv_gz(
        tmp_path / "frappe/raw/frappe.csv.gz", ["user", "item", "cnt", *FRAPPE_FIELDS[2:]], rows
    )
    return rows


def test_frappe_funnel_is_frappe_plus_engaged(tmp_path: Path) -> None:
    rows = _frappe_logs(tmp_path)
    funnel_builder = get_dataset("frappe_funnel")
    assert isinstance(funnel_builder, FrappeBuilder)
    frappe = get_dataset("frappe").build_splits(tmp_path, seed=5)
    funnel = funnel_builder.build_splits(tmp_path, seed=5)
    for split in SPLITS:
        assert funnel[split].columns == funnel_builder.schema().source_columns()
        same = funnel[split].drop("engaged").rename({"click": "label"})
        assert same.equals(frappe[split]), split
    full = pl.concat(list(funnel.values()))
    assert full.filter(pl.col("click") == 0)["engaged"].sum() == 0
    assert int(full["engaged"].sum()) == sum(int(r[2]) > 50 for r in rows)
    # every positive's engaged label is its own log's cnt > 50 (context fields are equal,
    # so match on user, item and the multiset of labels)
    logs = pl.DataFrame({"user": [r[0] for r in rows], "item": [r[1] for r in rows],
                         "engaged": [int(int(r[2]) > 50) for r in rows]})  # fmt: skip
    got = full.filter(pl.col("click") == 1).select("user", "item", "engaged")
    assert got.sort(pl.all()).equals(logs.sort(pl.all()))


def test_frappe_funnel_schema_and_description() -> None:
    builder = get_dataset("frappe_funnel")
    schema = builder.schema()
    assert [(t.name, t.label, t.given) for t in schema.tasks] == [
        ("click", "click", None), ("engaged", "engaged", "click"),
    ]  # fmt: skip
    assert infer_outputs(schema.tasks) == ["pctr", "pcvr"]
    assert "cumulative usage count" in builder.description
    assert "only partly present" in builder.description


def test_frappe_funnel_rejects_a_bad_count(tmp_path: Path) -> None:
    header = ["user", "item", "cnt", *FRAPPE_FIELDS[2:]]
    context = ["morning", "monday", "workday", "unknown", "free", "sunny", "Spain", "0"]
    _write_tsv_gz(tmp_path / "frappe/raw/frappe.csv.gz", header,
                  [["1", "2", "7", *context], ["1", "3", "many", *context]])  # fmt: skip
    with pytest.raises(ValueError, match=r"'cnt'.*data row 2 has 'many'"):
        get_dataset("frappe_funnel").build_splits(tmp_path)


# ---- movielens_100k v2 -----------------------------------------------------------------------


def test_holdout_sizes_rounding_rule() -> None:
    n = np.array([1, 2, 3, 4, 14, 15, 20, 24, 25, 26, 737])
    n_valid, n_test = holdout_sizes(n)
    assert n_test.tolist() == [0, 1, 1, 1, 1, 2, 2, 2, 3, 3, 74]
    assert n_valid.tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 74]
    assert (n - n_valid - n_test >= 1).all()  # every user keeps a training rating


def test_strict_histories_keep_ties_apart_and_truncate() -> None:
    users = np.array(["a", "a", "a", "a", "b", "b"])
    times = np.array([1, 2, 2, 3, 2, 2])
    items = np.array(["i1", "i2", "i3", "i4", "j1", "j2"])
    out = strict_histories(users, times, {"h": items}, max_len=2)
    assert out["h"] == ["", "i1", "i1", "i2|i3", "", ""]
    many = np.arange(60)
    last = strict_histories(np.zeros(60), many, {"h": many}, max_len=50)["h"][-1]
    assert last.split("|") == [str(k) for k in range(9, 59)]


def _write_movielens(root: Path, ratings: list[tuple[str, str, int, int]]) -> None:
    d = root / "movielens_100k"
    _write_tsv_gz(d / "ml-100k.inter.gz",
                  ["user_id:token", "item_id:token", "rating:float", "timestamp:float"],
                  [[u, i, str(r), str(t)] for u, i, r, t in ratings])  # fmt: skip
    users = sorted({u for u, *_ in ratings})
    _write_tsv_gz(d / "ml-100k.user.gz",
                  ["user_id:token", "age:token", "gender:token", "occupation:token",
                   "zip_code:token"],
                  [[u, "30", "F", "writer", "12345"] for u in users])  # fmt: skip
    genres = {"10": "Comedy Drama", "11": "Action", "12": "Drama", "13": "Horror",
              "14": "Sci-Fi War", "15": "Comedy"}  # fmt: skip
    _write_tsv_gz(d / "ml-100k.item.gz",
                  ["item_id:token", "movie_title:token_seq", "release_year:token",
                   "class:token_seq"],
                  [[i, f"M{i}", "1995", g] for i, g in genres.items()])  # fmt: skip


def test_movielens_tied_timestamps_never_leak_into_history(tmp_path: Path) -> None:
    """User 1 rates 10 and 11 at the same second (11 is later in the file): neither is in
    the other's history; 12, rated later, has both."""
    _write_movielens(tmp_path, [
        ("1", "10", 4, 100), ("1", "11", 5, 100), ("1", "12", 3, 200),
        ("2", "13", 5, 50), ("2", "10", 1, 60), ("2", "14", 4, 60), ("2", "15", 5, 70),
    ])  # fmt: skip
    builder = get_dataset("movielens_100k")
    splits = builder.build_splits(tmp_path)
    full = pl.concat([s.with_columns(pl.lit(k).alias("split")) for k, s in splits.items()])
    assert full.columns[:-1] == builder.schema().source_columns()
    hist = {(u, i): (h, g, s) for u, i, h, g, s in full.select(
        "user_id", "item_id", "hist_item_id", "hist_genre", "split").iter_rows()}  # fmt: skip
    assert hist[("1", "10")][:2] == ("", "")
    assert hist[("1", "11")][:2] == ("", "")  # the old builder gave "10" here
    assert hist[("1", "12")][:2] == ("10|11", "Comedy|Action")
    assert hist[("2", "10")][:2] == ("13", "Horror")
    assert hist[("2", "14")][:2] == ("13", "Horror")  # not 10, rated in the same second
    assert hist[("2", "15")][:2] == ("13|10|14", "Horror|Comedy|Sci-Fi")
    # per-user split: 3 ratings -> 1 train, 1 valid, 1 test; 4 ratings -> 2 / 1 / 1
    assert [hist[("1", i)][2] for i in ("10", "11", "12")] == ["train", "valid", "test"]
    assert [hist[("2", i)][2] for i in ("13", "10", "14", "15")] == [
        "train", "train", "valid", "test",
    ]  # fmt: skip
    labels = full.select("item_id", "user_id", "like", "love").sort("user_id", "item_id").rows()
    assert ("11", "1", 1, 1) in labels and ("10", "1", 1, 0) in labels
    assert ("12", "1", 0, 0) in labels
    for split in SPLITS:  # each split in global time order
        assert splits[split]["timestamp"].is_sorted()


def test_movielens_schema_v2() -> None:
    schema = get_dataset("movielens_100k").schema()
    assert [(t.name, t.label, t.given) for t in schema.tasks] == [
        ("like", "like", None), ("love", "love", "like"),
    ]  # fmt: skip
    assert infer_outputs(schema.tasks) == ["pctr", "pcvr"]
    assert schema.roles == {"group": "user_id", "time": "timestamp"}
    hist = schema.feature("hist_item_id")
    genre = schema.feature("hist_genre")
    assert isinstance(hist, SequenceFeature) and isinstance(genre, SequenceFeature)
    assert (hist.target, hist.max_len, hist.share_vocab_with) == ("item_id", 50, "item_id")
    assert (genre.aligned_with, genre.max_len, genre.share_vocab_with) == (
        "hist_item_id", 50, "genre",
    )  # fmt: skip


def test_per_user_split_and_seen_in_training() -> None:
    frame = pl.DataFrame({"u": ["a"] * 10 + ["b"] * 2, "t": [*range(10, 0, -1), 5, 6],
                          "i": [f"x{k}" for k in range(12)]})  # fmt: skip
    split = per_user_split(frame, "u", ["t"]).to_list()
    assert split[:10] == ["test", "valid"] + ["train"] * 8  # the latest ratings first here
    assert split[10:] == ["train", "test"]
    train = frame.filter(pl.Series(split) == "train")
    rows = pl.DataFrame({"u": ["a", "c"], "i": ["x0", "x2"]})
    assert seen_in_training(train, rows, "u").tolist() == ["warm", "cold"]
    assert seen_in_training(train, rows, "i").tolist() == ["cold", "warm"]
    with pytest.raises(KeyError, match="'z'"):
        seen_in_training(train, rows, "z")


# ---- integration: real data ------------------------------------------------------------------


def _build(data_dir: Path, name: str) -> dict[str, pl.DataFrame]:
    builder = get_dataset(name)
    if builder.missing_files(data_dir):
        pytest.skip(f"{name}: files not under {data_dir}")
    return builder.build_splits(data_dir)


@pytest.mark.integration
def test_frappe_funnel_real(data_dir: Path) -> None:
    funnel = _build(data_dir, "frappe_funnel")
    frappe = get_dataset("frappe").build_splits(data_dir)
    for split in SPLITS:
        assert funnel[split].drop("engaged").rename({"click": "label"}).equals(frappe[split])
    full = pl.concat(list(funnel.values()))
    engaged = int(full["engaged"].sum())
    clicks = int(full["click"].sum())
    assert (full.height, clicks, engaged) == (288_609, 96_203, 20_140)
    assert round(100 * engaged / full.height, 1) == 7.0
    assert round(100 * engaged / clicks, 1) == 20.9
    assert full.filter(pl.col("click") == 0)["engaged"].sum() == 0
    assert [int(funnel[k]["engaged"].sum()) for k in SPLITS] == [14_034, 4_059, 2_047]


@pytest.mark.integration
def test_movielens_100k_v2_real(data_dir: Path) -> None:
    splits = _build(data_dir, "movielens_100k")
    assert [splits[k].height for k in SPLITS] == [79_926, 10_037, 10_037]
    full = pl.concat(list(splits.values()))
    assert (int(full["like"].sum()), int(full["love"].sum())) == (55_375, 21_201)
    assert full.filter(pl.col("love") == 1)["like"].min() == 1  # love implies like
    for k in SPLITS:
        assert splits[k]["timestamp"].is_sorted()
        assert splits[k]["genre"].null_count() == 0 and splits[k]["age"].null_count() == 0
    # every valid/test user is warm and has a history; some items are cold
    for k in ("valid", "test"):
        assert (seen_in_training(splits["train"], splits[k], "user_id") == "warm").all()
        assert (splits[k]["hist_item_id"] != "").all()
    cold = [(seen_in_training(splits["train"], splits[k], "item_id") == "cold").sum()
            for k in ("valid", "test")]  # fmt: skip
    assert cold == [36, 48]
    # per user: test is the last 10 % by time, valid the 10 % before
    tagged = pl.concat([s.with_columns(pl.lit(i).alias("_s")) for i, s in enumerate(
        splits[k] for k in SPLITS)])  # fmt: skip
    per_user = tagged.group_by("user_id").agg(
        pl.len().alias("n"),
        (pl.col("_s") == 2).sum().alias("n_test"),
        (pl.col("_s") == 1).sum().alias("n_valid"),
        pl.col("timestamp").filter(pl.col("_s") == 0).max().alias("train_max"),
        pl.col("timestamp").filter(pl.col("_s") == 1).min().alias("valid_min"),
        pl.col("timestamp").filter(pl.col("_s") == 1).max().alias("valid_max"),
        pl.col("timestamp").filter(pl.col("_s") == 2).min().alias("test_min"),
    )
    n_valid, n_test = holdout_sizes(per_user["n"].to_numpy())
    assert (per_user["n_test"].to_numpy() == n_test).all()
    assert (per_user["n_valid"].to_numpy() == n_valid).all()
    assert (per_user["train_max"] <= per_user["valid_min"]).all()
    assert (per_user["valid_max"] <= per_user["test_min"]).all()
    # reference histories: every strictly earlier rating of the user, last 50, with genres
    genre_of = dict(full.select("item_id", "genre").unique().iter_rows())
    by_user: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for user, item, ts in full.select("user_id", "item_id", "timestamp").iter_rows():
        by_user[user].append((ts, item))
    for ratings in by_user.values():
        ratings.sort(key=lambda r: r[0])
    sample = full.sample(3_000, seed=0)
    for user, ts, hist, genres in sample.select(
        "user_id", "timestamp", "hist_item_id", "hist_genre"
    ).iter_rows():
        earlier = [i for t, i in by_user[user] if t < ts][-50:]
        got = hist.split("|") if hist else []
        assert sorted(got) == sorted(earlier)  # same items (ties keep file order)
        assert (genres.split("|") if genres else []) == [genre_of[i] for i in got]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("name", "conversion"), [("ali_ccp", "purchase"), ("aliexpress", "conversion")]
)
def test_click_conversion_samples_declare_given_click(
    data_dir: Path, name: str, conversion: str
) -> None:
    splits = _build(data_dir, name)
    schema = get_dataset(name).schema()
    assert [(t.name, t.given) for t in schema.tasks] == [("click", None), (conversion, "click")]
    for split, frame in splits.items():
        # the data supports `given`: a conversion implies a click in every split
        assert frame.filter((pl.col(conversion) == 1) & (pl.col("click") != 1)).height == 0, split
        assert frame[conversion].sum() >= 1 or split == "valid"
