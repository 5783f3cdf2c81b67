"""``adrank histories`` / :func:`add_histories`: histories hold only the user's strictly
earlier events, in the log's own row order, checked like every other input. The logs here
are synthetic (made up for these tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from adrank.cli import app
from adrank.data.history_builder import HistoryError, add_histories


def _log(rows: int = 300, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    items = rng.integers(0, 30, rows)
    return pl.DataFrame(
        {
            "user": [f"u{u}" for u in rng.integers(0, 12, rows)],
            "ts": rng.integers(0, 40, rows),  # many ties within a user
            "item": [f"i{i}" for i in items],
            "genre": [f"g{i % 5}" for i in items],
            "click": rng.integers(0, 2, rows),
        }
    )


def _brute_force(log: pl.DataFrame, max_len: int, positive: bool) -> list[str]:
    rows = log.to_dicts()
    out = []
    for r in rows:
        past = [e for e in rows if e["user"] == r["user"] and e["ts"] < r["ts"]]
        past = [e for e in past if e["click"] == 1] if positive else past
        past.sort(key=lambda e: e["ts"])  # stable: file order within a time
        out.append("|".join(e["item"] for e in past[-max_len:]))
    return out


@pytest.mark.parametrize("positive", [False, True])
def test_histories_match_a_brute_force_reading(positive: bool) -> None:
    log = _log()
    out = add_histories(log, user="user", time="ts", columns=["item", "genre"], max_len=4,
                        positive="click" if positive else None)  # fmt: skip
    assert out.select(log.columns).equals(log)  # the log's own rows, in its order
    assert out["hist_item"].to_list() == _brute_force(log, 4, positive)
    items = out["hist_item"].str.split("|").list.eval(pl.element().filter(pl.element() != ""))
    genres = out["hist_genre"].str.split("|").list.eval(pl.element().filter(pl.element() != ""))
    assert items.list.len().equals(genres.list.len())  # aligned: one genre per event
    for hist_items, hist_genres in zip(items.to_list()[:50], genres.to_list()[:50], strict=True):
        assert [f"g{int(i[1:]) % 5}" for i in hist_items] == hist_genres


def test_times_may_be_dates_iso_text_or_numbers_in_text() -> None:
    log = _log(60)
    as_dates = log.with_columns(pl.from_epoch(pl.col("ts") * 3600, time_unit="s").alias("ts"))
    as_iso = as_dates.with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    as_text = log.with_columns(pl.col("ts").cast(pl.Utf8))
    expected = add_histories(log, user="user", time="ts", columns=["item"])["hist_item"]
    for frame in (as_dates, as_iso, as_text):
        got = add_histories(frame, user="user", time="ts", columns=["item"])["hist_item"]
        assert got.equals(expected)


@pytest.mark.parametrize(
    ("change", "kwargs", "message"),
    [
        (None, {"columns": ["nope"]}, r"\['nope'\] are not in the log"),
        (None, {"columns": ["item", "item"]}, r"\['item'\] are given more than once"),
        (pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise("user").alias("user"), {},
         "user column 'user': row 3 has no user"),
        (pl.when(pl.int_range(pl.len()) == 5).then(None).otherwise("genre").alias("genre"),
         {"columns": ["item", "genre"]}, "'genre': the value in row 5 is missing"),
        (pl.when(pl.int_range(pl.len()) == 2).then(pl.lit("a|b")).otherwise("item").alias("item"),
         {}, r"'item': the value in row 2 holds the delimiter '\|'"),
        (pl.when(pl.int_range(pl.len()) == 4).then(pl.lit("soon")).otherwise(pl.col("ts").cast(
         pl.Utf8)).alias("ts"), {}, "time column 'ts': row 4 is missing or not a time"),
        (pl.when(pl.int_range(pl.len()) == 1).then(2).otherwise("click").alias("click"),
         {"positive": "click"}, "'click': row 1 is not 0 or 1"),
        (pl.col("item").alias("hist_item"), {}, r"already has column\(s\) \['hist_item'\]"),
    ],
)  # fmt: skip
def test_bad_logs_are_refused_naming_the_column_and_row(change, kwargs, message) -> None:
    log = _log(20)
    if change is not None:
        log = log.with_columns(change)
    with pytest.raises(HistoryError, match=message):
        add_histories(log, **{"user": "user", "time": "ts", "columns": ["item"], **kwargs})


def test_cli_writes_histories_that_prepare_reads(tmp_path: Path) -> None:
    log = _log(400, seed=3)
    log.write_csv(tmp_path / "log.csv")
    out = tmp_path / "with_hist.parquet"
    args = [
        "histories",
        str(tmp_path / "log.csv"),
        str(out),
        "--user",
        "user",
        "--time",
        "ts",
        "--column",
        "item",
        "--column",
        "genre",
        "--max-len",
        "5",
        "--positive",
        "click",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    written = pl.read_parquet(out)
    expected = add_histories(log, user="user", time="ts", columns=["item", "genre"],
                             max_len=5, positive="click")  # fmt: skip
    assert written["hist_item"].equals(expected["hist_item"])
    entries = yaml.safe_load(res.output[res.output.index("- {") :])
    assert entries[1] == {"name": "hist_genre", "type": "sequence", "max_len": 5,
                          "share_vocab_with": "genre", "aligned_with": "hist_item"}  # fmt: skip
    schema = {"tasks": [{"name": "click", "label": "click"}],
              "features": [{"name": c, "type": "categorical"} for c in ("user", "item", "genre")]
              + entries}  # fmt: skip
    (tmp_path / "schema.yaml").write_text(yaml.safe_dump(schema))
    res = CliRunner().invoke(
        app,
        [
            "prepare",
            "--schema",
            str(tmp_path / "schema.yaml"),
            "--train",
            str(out),
            "--output",
            str(tmp_path / "prepared"),
        ],
    )
    assert res.exit_code == 0, res.output
    again = CliRunner().invoke(app, args)  # never over an existing file without --overwrite
    assert again.exit_code == 1 and "--overwrite" in again.output
    same = CliRunner().invoke(app, [*args[:2], str(tmp_path / "log.csv"), *args[3:]])
    assert same.exit_code == 1 and "is the input file" in same.output
