"""Dataset builders: unit tests on tiny synthetic files, and integration tests on the real
data in ``$ADRANK_DATA_DIR`` (skipped when it is unset)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from adrank.data.datasets import (
    DatasetUnavailableError,
    available_datasets,
    ensure_files,
    find_file,
    get_dataset,
)
from adrank.data.datasets.base import split_sizes
from adrank.data.datasets.frappe import (
    FRAPPE_FIELDS,
    sample_unused_items,
    stratified_split_indices,
)
from adrank.data.datasets.movielens import history_column
from adrank.data.schema import CategoricalFeature, NumericFeature, SequenceFeature
from adrank.data.transforms import LogSquareBucket, apply_transforms

# ---- frappe negative sampler and split ------------------------------------------------------


def test_sampler_never_returns_used_items_and_is_uniform() -> None:
    users = np.array([0, 0, 1, 2, 2, 2])
    items = np.array([0, 1, 5, 2, 3, 4])
    rng = np.random.default_rng(0)
    draws = sample_unused_items(np.repeat(users, 2000), np.repeat(items, 2000), 6, 2, rng)
    assert draws.shape == (12_000, 2)
    row_users = np.repeat(users, 2000)
    used = {(u, i) for u, i in zip(users, items, strict=True)}
    allowed = {u: [i for i in range(6) if (u, i) not in used] for u in (0, 1, 2)}
    for u in (0, 1, 2):
        got = draws[row_users == u].ravel()
        assert set(np.unique(got)) == set(allowed[u])
        freq = np.bincount(got, minlength=6)[allowed[u]] / got.size
        np.testing.assert_allclose(freq, 1 / len(allowed[u]), atol=0.02)
    # the two negatives of a row are drawn independently (they can coincide)
    assert (draws[:, 0] == draws[:, 1]).any() and (draws[:, 0] != draws[:, 1]).any()


def test_sampler_is_deterministic_and_checks_inputs() -> None:
    users, items = np.array([0, 1, 1, 2]), np.array([3, 0, 1, 2])
    a = sample_unused_items(users, items, 5, 2, np.random.default_rng(7))
    b = sample_unused_items(users, items, 5, 2, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="used all 2 items"):
        sample_unused_items(np.array([0, 0]), np.array([0, 1]), 2, 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        sample_unused_items(np.array([0]), np.array([3]), 3, 1, np.random.default_rng(0))


def test_split_sizes_and_stratified_split() -> None:
    assert split_sizes(288_609, (0.7, 0.2, 0.1)) == (202_026, 57_722, 28_861)
    assert split_sizes(100_000, (0.8, 0.1, 0.1)) == (80_000, 10_000, 10_000)
    labels = np.array([1] * 100 + [0] * 200)
    parts = stratified_split_indices(labels, (210, 60, 30), np.random.default_rng(1))
    assert [p.size for p in parts] == [210, 60, 30]
    assert [int(labels[p].sum()) for p in parts] == [70, 20, 10]
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(300))
    # sizes not divisible by 3: positives get the largest-remainder rounding
    labels = np.array([1] * 7 + [0] * 14)
    parts = stratified_split_indices(labels, (14, 4, 3), np.random.default_rng(1))
    assert [int(labels[p].sum()) for p in parts] == [5, 1, 1]


def _write_tsv_gz(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join("\t".join(r) for r in [header, *rows]) + "\n"
    path.write_bytes(gzip.compress(text.encode()))


def test_frappe_builder_on_synthetic_logs(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    header = ["user", "item", "cnt", *FRAPPE_FIELDS[2:]]
    context = ["morning", "monday", "workday", "unknown", "free", "sunny", "Spain", "0"]
    rows = [
        [str(u), str(i), "1", *context]
        for u, i in zip(rng.integers(0, 8, 200), rng.integers(0, 30, 200), strict=True)
    ]
    _write_tsv_gz(tmp_path / "frappe/raw/frappe.csv.gz", header, rows)
    builder = get_dataset("frappe")
    splits = builder.build_splits(tmp_path, seed=5)
    assert [splits[k].height for k in ("train", "valid", "test")] == [420, 120, 60]
    assert [int(splits[k]["label"].sum()) for k in ("train", "valid", "test")] == [140, 40, 20]
    full = pl.concat(list(splits.values()))
    assert full.columns == builder.schema().source_columns()
    used = {(r[0], r[1]) for r in rows}
    negatives = full.filter(pl.col("label") == 0).select("user", "item").rows()
    assert not any(pair in used for pair in negatives)
    again = builder.build_splits(tmp_path, seed=5)
    assert all(splits[k].equals(again[k]) for k in splits)
    assert not splits["train"].equals(builder.build_splits(tmp_path, seed=6)["train"])


# ---- other builders on synthetic files ----------------------------------------------------


def test_criteo_integer_bucketing() -> None:
    raw = pl.DataFrame({"I1": [None, "0", "1", "2", "3", "-1", "1382"]})
    out = raw.select(LogSquareBucket(name="I1", input="I1").expr())["I1"].to_list()
    assert out == ["0", "0", "1", "2", "1", "-1", "52"]  # floor(log(1382)^2) = 52


def test_history_column_orders_truncates_and_keeps_users_apart() -> None:
    frame = pl.DataFrame({"u": ["a", "b", "a", "a", "b"], "i": ["1", "2", "3", "4", "5"]})
    out = frame.select(history_column("u", "i", 2, "h"))["h"].to_list()
    assert out == ["", "", "1", "1|3", "2"]
    long = pl.DataFrame({"u": ["x"] * 60, "i": [str(k) for k in range(60)]})
    last = long.select(history_column("u", "i", 50, "h"))["h"][-1]
    assert last.split("|") == [str(k) for k in range(9, 59)]


def _write_libfm(path: Path, rows: list[tuple[int, list[int]]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [" ".join([str(y)] + [f"{i}:1" for i in idx]) for y, idx in rows]
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))


def test_frappe_x1_libfm_and_csv_layouts(tmp_path: Path) -> None:
    builder = get_dataset("frappe_x1")
    row = list(range(10))
    for split in ("train", "validation", "test"):
        _write_libfm(tmp_path / f"frappe/nfm_split/frappe.{split}.libfm.gz", [(1, row), (-1, row)])
    splits = builder.build_splits(tmp_path)
    assert splits["valid"]["label"].to_list() == [1, 0]
    assert splits["test"].columns == ["label", *FRAPPE_FIELDS]
    assert splits["train"].row(0) == (1, *(str(i) for i in row))
    # the BARS CSV layout wins once all three files are there
    for split in ("train", "valid", "test"):
        header = ",".join(["label", *FRAPPE_FIELDS])
        path = tmp_path / f"frappe_x1/{split}.csv"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"{header}\n0,{','.join(f'v{i}' for i in range(10))}\n")
    assert builder.build_splits(tmp_path)["train"].row(0) == (0, *(f"v{i}" for i in range(10)))


def test_bars_x1_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailableError) as info:
        get_dataset("movielenslatest_x1").build_splits(tmp_path)
    for split in ("train", "validation", "test"):
        assert f"movielenslatest/ml-tag.{split}.libfm.gz" in str(info.value)
    assert "reczoo/BARS" in str(info.value)


# ---- integration: real data in ADRANK_DATA_DIR ---------------------------------------------

SPLIT_NAMES = ("train", "valid", "test")


def _build(data_dir: Path, name: str, **kwargs: object) -> dict[str, pl.DataFrame]:
    builder = get_dataset(name)
    missing = builder.missing_files(data_dir)
    if missing:
        pytest.skip(f"{name}: {[f.path for f in missing]} not under {data_dir}")
    return builder.build_splits(data_dir, **kwargs)  # type: ignore[arg-type]


def _check_schema(name: str, splits: dict[str, pl.DataFrame], extra: tuple[str, ...] = ()) -> None:
    schema = get_dataset(name).schema()
    for split, frame in splits.items():
        assert frame.columns == [*schema.source_columns(), *extra], split
        for label in schema.labels:
            assert set(frame[label].unique().to_list()) <= {0, 1}, (split, label)
        for f in schema.features:
            if f.name not in frame.columns:  # derived by a declared transform
                assert f.name in {t.name for t in schema.transforms}, (split, f.name)
                continue
            dtype = frame.schema[f.name]
            if isinstance(f, NumericFeature):
                assert dtype == pl.Float64, (split, f.name)
            else:
                assert isinstance(f, (CategoricalFeature, SequenceFeature))
                assert dtype == pl.String, (split, f.name)


def _sizes(splits: dict[str, pl.DataFrame]) -> list[int]:
    return [splits[k].height for k in SPLIT_NAMES]


@pytest.mark.integration
@pytest.mark.parametrize("name", available_datasets())
def test_declared_checksums_match_real_files(data_dir: Path, name: str) -> None:
    """Every declared md5/size matches the file in the data dir (no download attempted)."""
    builder = get_dataset(name)
    present = [f for f in builder.files if find_file(data_dir, f.path) is not None]
    if not present or len(present) < len(builder.files):
        pytest.skip(f"{name}: not all files present under {data_dir}")
    ensure_files(builder, data_dir, download=False, verify=True)


@pytest.fixture(scope="module")
def frappe_splits(data_dir: Path) -> dict[str, pl.DataFrame]:
    return _build(data_dir, "frappe")


@pytest.mark.integration
def test_frappe_real(data_dir: Path, frappe_splits: dict[str, pl.DataFrame]) -> None:
    splits = frappe_splits
    assert _sizes(splits) == [202_026, 57_722, 28_861]
    positives = [int(splits[k]["label"].sum()) for k in SPLIT_NAMES]
    assert positives == [67_342, 19_241, 9_620]  # 1/3 exactly in train, closest elsewhere
    for k, n_pos in zip(SPLIT_NAMES, positives, strict=True):
        assert abs(n_pos / splits[k].height - 1 / 3) < 1 / splits[k].height
    _check_schema("frappe", splits)
    logs = get_dataset("frappe").read_logs(data_dir)
    used = logs.select("user", "item").unique()
    full = pl.concat(list(splits.values()))
    negatives = full.filter(pl.col("label") == 0)
    assert negatives.height == 2 * logs.height
    assert negatives.join(used, on=["user", "item"], how="inner").height == 0
    assert set(negatives["item"].unique()) <= set(logs["item"].unique())
    pos = full.filter(pl.col("label") == 1).drop("label")
    assert pos.sort(pl.all()).equals(logs.sort(pl.all()))


@pytest.mark.integration
def test_frappe_deterministic_per_seed(
    data_dir: Path, frappe_splits: dict[str, pl.DataFrame]
) -> None:
    again = _build(data_dir, "frappe", seed=2021)
    assert all(again[k].equals(frappe_splits[k]) for k in SPLIT_NAMES)
    other = _build(data_dir, "frappe", seed=1)
    assert not other["train"].equals(frappe_splits["train"])
    assert _sizes(other) == _sizes(frappe_splits)


@pytest.mark.integration
def test_frappe_x1_without_train_names_the_missing_file(data_dir: Path) -> None:
    builder = get_dataset("frappe_x1")
    if find_file(data_dir, "frappe/nfm_split/frappe.train.libfm.gz") is not None:
        pytest.skip("the frappe_x1 train split is present")
    if find_file(data_dir, "frappe/nfm_split/frappe.validation.libfm.gz") is None:
        pytest.skip("the frappe NFM validation split is not present")
    with pytest.raises(DatasetUnavailableError) as info:
        builder.build_splits(data_dir)
    assert "[MISSING]" in str(info.value)
    assert "frappe/nfm_split/frappe.train.libfm.gz" in str(info.value)


@pytest.mark.integration
def test_frappe_x1_real_validation_and_test(data_dir: Path, tmp_path: Path) -> None:
    """Real NFM validation/test files (symlinked) plus a stand-in train file."""
    for split in ("validation", "test"):
        src = find_file(data_dir, f"frappe/nfm_split/frappe.{split}.libfm.gz")
        if src is None:
            pytest.skip(f"frappe NFM {split} split not present")
        dest = tmp_path / "frappe/nfm_split" / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(src.resolve())  # absolute: data_dir may be a relative path
    _write_libfm(tmp_path / "frappe/nfm_split/frappe.train.libfm.gz", [(1, list(range(10)))])
    splits = get_dataset("frappe_x1").build_splits(tmp_path)
    assert [splits["valid"].height, splits["test"].height] == [57_722, 28_860]
    assert [int(splits[k]["label"].sum()) for k in ("valid", "test")] == [19_063, 9_536]
    _check_schema("frappe_x1", splits)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("name", "sizes"),
    [
        ("criteo", [7_200, 409, 391]),
        ("avazu", [8_087, 480, 432]),
        ("ali_ccp", [100, 50, 50]),
        ("aliexpress", [90, 10, 20]),
    ],
)
def test_presplit_datasets(data_dir: Path, name: str, sizes: list[int]) -> None:
    splits = _build(data_dir, name)
    assert _sizes(splits) == sizes
    _check_schema(name, splits)
    for frame in splits.values():
        label = get_dataset(name).schema().labels[0]
        assert frame[label].null_count() == 0


@pytest.mark.integration
def test_criteo_and_avazu_values(data_dir: Path) -> None:
    criteo = _build(data_dir, "criteo")
    assert int(criteo["train"]["label"].sum()) == 1_549
    criteo_schema = get_dataset("criteo").schema()
    bucketed = apply_transforms(criteo["train"], criteo_schema.transforms)
    assert bucketed["I1"].null_count() == 0  # filled and bucketized by the declared transform
    avazu = _build(data_dir, "avazu")
    assert [int(avazu[k]["click"].sum()) for k in SPLIT_NAMES] == [1_397, 86, 80]
    assert avazu["train"]["banner_pos"].value_counts().sort("banner_pos").rows() == [
        ("0", 6_483), ("1", 1_601), ("4", 1), ("5", 2),
    ]  # fmt: skip
    derived = apply_transforms(avazu["train"], get_dataset("avazu").schema().transforms)
    assert set(derived["hour_of_day"]) == {"00"}
    assert set(derived["weekday"]) == {"2"}  # 2014-10-21 was a Tuesday


@pytest.mark.integration
def test_open_bandit(data_dir: Path) -> None:
    splits = _build(data_dir, "open_bandit")
    assert _sizes(splits) == [32_000, 4_000, 4_000]
    _check_schema("open_bandit", splits)
    schema = get_dataset("open_bandit").schema()
    assert schema.roles == {"time": "timestamp", "propensity": "propensity_score",
                            "position": "position"}  # fmt: skip
    full = pl.concat(list(splits.values()))
    assert int(full["click"].sum()) == 46 + 46 + 69 + 46
    assert full["timestamp"].is_sorted()
    assert set(full["position"].unique()) == {"1", "2", "3"}
    assert full["propensity_score"].is_between(0, 1, closed="right").all()
    assert full["item_feature_0"].null_count() == 0
    counts = full.group_by("policy", "campaign").len().sort("policy", "campaign").rows()
    assert counts == [("bts", "men", 10_000), ("bts", "women", 10_000),
                      ("random", "men", 10_000), ("random", "women", 10_000)]  # fmt: skip
