"""The built-in recipes' derived features are declared transforms of the processor, and give
the values the builders computed themselves before (definition version 1)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from adrank.data.datasets import get_dataset
from adrank.data.datasets.avazu import RAW_COLUMNS as AVAZU_RAW
from adrank.data.datasets.avazu import TRANSFORMS as AVAZU_TRANSFORMS
from adrank.data.datasets.criteo import NUMERIC_COLUMNS
from adrank.data.processor import FeatureProcessor
from adrank.data.schema import Schema
from adrank.data.transforms import LogSquareBucket, apply_transforms


# ---- the version-1 builders' expressions, verbatim ------------------------------------
def old_criteo_bucket(column: str) -> pl.Expr:
    v = pl.col(column).cast(pl.Float64, strict=False).fill_null(0.0)
    bucket = pl.when(v > 2).then((v.log() ** 2).floor()).otherwise(v)
    return bucket.cast(pl.Int64).cast(pl.String).alias(column)


def old_avazu_hour(frame: pl.DataFrame) -> pl.DataFrame:
    hour = pl.col("hour")
    day = hour.str.slice(0, 6).str.strptime(pl.Date, "%y%m%d", strict=False)
    hour_of_day = hour.str.slice(6, 2)
    valid = (hour.str.len_chars() == 8) & hour_of_day.is_in([f"{h:02d}" for h in range(24)])
    return frame.select(
        pl.when(valid).then(hour_of_day).alias("hour_of_day"),
        pl.when(valid).then(day.dt.weekday().cast(pl.String)).alias("weekday"),
    )


def test_log_square_bucket_equals_the_old_criteo_expression() -> None:
    raw = pl.DataFrame({"I1": [None, "0", "1", "2", "3", "-1", "1382", "65535", "7"]})
    new = raw.select(LogSquareBucket(name="I1", input="I1").expr())
    assert new["I1"].to_list() == raw.select(old_criteo_bucket("I1"))["I1"].to_list()
    assert new["I1"].to_list()[:7] == ["0", "0", "1", "2", "1", "-1", "52"]


def test_avazu_hour_transforms_equal_the_old_builder() -> None:
    days = [f"14{m:02d}{d:02d}" for m in (1, 10, 12) for d in (1, 15, 28)]
    hours = [f"{day}{h:02d}" for day in days for h in (0, 9, 23)]
    raw = pl.DataFrame({"hour": [*hours, None]})
    new = apply_transforms(raw, AVAZU_TRANSFORMS).select("hour_of_day", "weekday")
    assert new.equals(old_avazu_hour(raw))


def test_avazu_schema_reads_raw_hour() -> None:
    schema = get_dataset("avazu").schema()
    assert "hour" in schema.source_columns()
    assert "hour_of_day" not in schema.source_columns()
    assert {t.name for t in schema.transforms} == {"hour_of_day", "weekday"}
    assert Schema.from_dict(schema.to_dict()) == schema  # saved with the processor


def test_open_bandit_item_id_is_a_declared_cross() -> None:
    schema = get_dataset("open_bandit").schema()
    (cross,) = schema.transforms
    raw = pl.DataFrame({"campaign": ["men", "women"], "item_id": ["14", "3"]})
    assert apply_transforms(raw, schema.transforms)["item_id"].to_list() == ["men:14", "women:3"]
    assert cross.inputs == ("campaign", "item_id")


# ---- on the real files: the prepared features are the same as with the old builders --
def _encoded_equal(name: str, old: dict[str, pl.DataFrame], new: dict[str, pl.DataFrame]) -> None:
    """Fit on train and encode every split with the old schema (no transforms, derived columns
    precomputed) and the new one (raw columns, transforms): identical model inputs."""
    schema = get_dataset(name).schema()
    old_schema = Schema(tasks=schema.tasks, features=schema.features, name=name)
    old_proc = FeatureProcessor(old_schema).fit(old["train"])
    new_proc = FeatureProcessor(schema).fit(new["train"])
    assert old_proc.vocab_ == new_proc.vocab_
    for split in new:
        columns = [f.name for f in schema.features]
        got = new_proc.transform(new[split]).select(columns)
        want = old_proc.transform(old[split]).select(columns)
        assert got.equals(want), (name, split)


@pytest.mark.integration
def test_criteo_features_unchanged(data_dir: Path) -> None:
    new = get_dataset("criteo").build_splits(data_dir)
    old = {k: v.with_columns(old_criteo_bucket(c) for c in NUMERIC_COLUMNS) for k, v in new.items()}
    assert new["train"]["I1"].null_count() > 0  # raw integers (missing stays missing)
    _encoded_equal("criteo", old, new)


@pytest.mark.integration
def test_avazu_features_unchanged(data_dir: Path) -> None:
    new = get_dataset("avazu").build_splits(data_dir)
    old = {k: pl.concat([v, old_avazu_hour(v)], how="horizontal") for k, v in new.items()}
    assert set(new["train"].columns) == set(AVAZU_RAW) - {"id"}
    _encoded_equal("avazu", old, new)


@pytest.mark.integration
def test_open_bandit_features_unchanged(data_dir: Path) -> None:
    new = get_dataset("open_bandit").build_splits(data_dir)
    qualified = pl.concat_str(pl.col("campaign"), pl.col("item_id"), separator=":")
    old = {k: v.with_columns(qualified.alias("item_id")) for k, v in new.items()}
    assert not new["train"]["item_id"].str.contains(":").any()  # the log's raw ids
    _encoded_equal("open_bandit", old, new)


@pytest.mark.integration
def test_prepare_avazu_raw_files_with_per_file_header(
    data_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """The issue's case: Avazu's train file has a header, its dev and test files do not.
    ``adrank prepare --header auto`` (the default) reads each file as it is, the headerless
    ones taking the train file's names, and the recipe's schema (raw ``hour``, declared
    transforms) gives exactly the built-in dataset's prepared rows."""
    import yaml
    from typer.testing import CliRunner

    from adrank.cli import app
    from adrank.data.prepare import PreparedData, prepare_dataset

    files = {s: data_dir / "avazu" / f"{f}.csv.gz" for s, f in
             (("train", "train"), ("valid", "dev"), ("test", "test"))}  # fmt: skip
    if not all(p.exists() for p in files.values()):
        pytest.skip(f"Avazu raw files absent under {data_dir / 'avazu'}")
    schema = tmp_path / "avazu.yaml"
    schema.write_text(yaml.safe_dump(get_dataset("avazu").schema().to_dict()))
    args = ["prepare", "--schema", str(schema), "--output", str(tmp_path / "out")]
    for split, path in files.items():
        args += [f"--{split}", str(path)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    mine = PreparedData.open(tmp_path / "out")
    builtin = prepare_dataset("avazu", data_dir=data_dir, cache_dir=cache_dir)
    assert {k: v.rows for k, v in mine.stats.items()} == {"train": 8_087, "valid": 480, "test": 432}
    for split in ("train", "valid", "test"):
        got = pl.read_parquet(mine.splits[split])
        want = pl.read_parquet(builtin.splits[split])
        assert got.select(want.columns).equals(want), split
