"""Checks at prepare time found in a user walkthrough: a conversion without a click under
``given: click`` is kept but reported (per split, in the log and in ``stats.json``);
the ``time`` role reads ISO-8601 text as Unix seconds, the same seconds as a Parquet
timestamp; a file whose every row is bad gets a message about its format, not advice to
skip rows; and no message shows the Python keyword spelling of ``--bad-rows``."""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from adrank.cli import app
from adrank.data.prepare import PreparedData, positives_without_given, prepare_frames
from adrank.data.processor import FeatureProcessor
from adrank.data.readers import DataFormatError, iter_raw_batches, read_raw, validate_frame
from adrank.data.schema import Schema

FUNNEL = Schema.from_dict(
    {
        "tasks": [{"name": "click", "label": "click"},
                  {"name": "buy", "label": "buy", "given": "click"}],
        "features": [{"name": "ad", "type": "categorical"}],
    }
)  # fmt: skip


def funnel_frame(click: list[int], buy: list[int]) -> pl.DataFrame:
    ads = [f"a{i % 3}" for i in range(len(click))]
    return pl.DataFrame({"click": click, "buy": buy, "ad": ads})


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def flat(text: str) -> str:
    return " ".join(text.split())


# ---- 1. a conversion without a click -----------------------------------------------------


def _timed_schema_file(tmp_path: Path) -> Path:
    """A schema file: one click task, a time role on ``ts``, one categorical feature."""
    schema = tmp_path / "schema.yaml"
    schema.write_text(
        "tasks: [click]\nroles: {time: ts}\nfeatures: [{name: ad, type: categorical}]\n"
    )
    return schema


def test_conversion_without_click_is_kept_warned_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    train = funnel_frame([1, 0, 0, 1, 0, 0, 1, 0], [1, 1, 0, 0, 1, 0, 0, 0])  # 2 of 8
    valid = funnel_frame([1, 0, 1, 0], [1, 0, 0, 0])  # none
    with caplog.at_level(logging.WARNING, logger="adrank.data.prepare"):
        prepared = prepare_frames(FUNNEL, {"train": train, "valid": valid}, tmp_path / "p")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings  # the valid split has none
    message = warnings[0]
    for fragment in (
        "the train split",
        "task 'buy' (given: click)",
        "2 row(s) (25.00% of 8) with buy=1 but click=0",
        "They are kept",
        "pcvr ignores them (its loss and the buy_* metrics are masked to click=1 rows)",
        "pctcvr counts them as negatives (its label is click × buy = 0)",
    ):
        assert fragment in message, (fragment, message)
    # kept, not dropped: the rows and the label rates are those of the input
    assert prepared.stats["train"].rows == 8
    assert pl.read_parquet(prepared.splits["train"]).height == 8
    assert prepared.stats["train"].positive_rate["buy"] == pytest.approx(3 / 8)
    # recorded per split and task, and read back
    meta = json.loads((prepared.directory / "stats.json").read_text())
    assert meta["splits"]["train"]["positives_without_given"] == {"buy": 2}
    assert meta["splits"]["valid"]["positives_without_given"] == {"buy": 0}
    reopened = PreparedData.open(prepared.directory)
    assert reopened.stats["train"].positives_without_given == {"buy": 2}


def test_positives_without_given_only_for_given_tasks() -> None:
    plain = Schema.from_dict(
        {"tasks": ["click", "buy"], "features": [{"name": "ad", "type": "categorical"}]}
    )
    frame = funnel_frame([0, 0, 1], [1, 1, 1]).with_columns(pl.col("click").cast(pl.Float64))
    assert positives_without_given(plain, frame) == {}
    assert positives_without_given(FUNNEL, frame) == {"buy": 2}


def test_a_task_outside_the_funnel_is_warned_without_pctcvr(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two tasks with `given` are not a pctr/pcvr funnel: no pctcvr is derived."""
    schema = Schema.from_dict(
        {
            "tasks": [{"name": "like", "label": "like"},
                      {"name": "share", "label": "share", "given": "like"},
                      {"name": "finish", "label": "finish", "given": "like"}],
            "features": [{"name": "ad", "type": "categorical"}],
        }
    )  # fmt: skip
    frame = funnel_frame([1, 0, 0], [0, 0, 0]).rename({"click": "like", "buy": "share"})
    frame = frame.with_columns(finish=pl.Series([1, 1, 0]))
    with caplog.at_level(logging.WARNING, logger="adrank.data.prepare"):
        prepared = prepare_frames(schema, {"train": frame}, tmp_path / "p")
    (message,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "task 'finish' (given: like)" in message and "finish ignores them" in message
    assert "pctcvr" not in message.split("They are kept")[1].split("To learn")[0]
    assert prepared.stats["train"].positives_without_given == {"share": 0, "finish": 1}


def test_cli_prepare_warns_about_conversions_without_click(tmp_path: Path) -> None:
    schema = tmp_path / "schema.yaml"
    schema.write_text(
        "tasks:\n  - {name: click, label: click}\n  - {name: buy, label: buy, given: click}\n"
        "features: [{name: ad, type: categorical}]\n"
    )
    train = tmp_path / "train.csv"
    train.write_text("click,buy,ad\n1,1,a\n0,1,b\n0,0,a\n1,0,b\n")
    out = tmp_path / "out"
    res = cli("prepare", "--schema", str(schema), "--train", str(train), "--output", str(out))
    assert res.exit_code == 0, res.output
    text = flat(res.output)
    assert "task 'buy' (given: click) has 1 row(s) (25.00% of 4) with buy=1 but click=0" in text
    assert "pcvr ignores them" in text and "pctcvr counts them as negatives" in text
    meta = json.loads((out / "stats.json").read_text())
    assert meta["splits"]["train"]["positives_without_given"] == {"buy": 1}
    assert meta["splits"]["train"]["rows"] == 4


# ---- 2a. ISO-8601 times in the time role -----------------------------------------------

TIMED = Schema.from_dict(
    {
        "tasks": ["click"],
        "roles": {"time": "ts"},
        "features": [{"name": "ad", "type": "categorical"}],
    }
)
#: text, and the instant it names (a naive one is UTC)
INSTANTS = [
    ("2023-11-14T22:17:42Z", datetime(2023, 11, 14, 22, 17, 42, tzinfo=UTC)),
    ("2023-11-14", datetime(2023, 11, 14, tzinfo=UTC)),
    ("2023-11-14T22:17", datetime(2023, 11, 14, 22, 17, tzinfo=UTC)),
    ("2023-11-14 22:17:42", datetime(2023, 11, 14, 22, 17, 42, tzinfo=UTC)),
    ("2023-11-14T22:17:42.750+05:30",
     datetime(2023, 11, 14, 22, 17, 42, 750000, tzinfo=timezone(timedelta(hours=5, minutes=30)))),
    ("2023-11-14T22:17:42-0800", datetime(2023, 11, 14, 22, 17, 42,
                                          tzinfo=timezone(timedelta(hours=-8)))),
    ("2023-11-14T22:17:42,5+01", datetime(2023, 11, 14, 22, 17, 42, 500000,
                                          tzinfo=timezone(timedelta(hours=1)))),
    ("1969-12-31T23:59:59.500Z", datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC)),
]  # fmt: skip


def encoded_time(schema: Schema, frame: pl.DataFrame) -> list[int]:
    return FeatureProcessor(schema).fit(frame).transform(frame)["__time__"].to_list()


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_iso_times_are_the_seconds_of_a_parquet_timestamp(tmp_path: Path, fmt: str) -> None:
    sep = "," if fmt == "csv" else "\t"
    quote = '"' if fmt == "csv" else ""  # "42,5" holds the CSV separator
    rows = [sep.join(["1", f"a{i}", quote + text + quote]) for i, (text, _) in enumerate(INSTANTS)]
    path = tmp_path / f"t.{fmt}"
    path.write_text(sep.join(["click", "ad", "ts"]) + "\n" + "\n".join(rows) + "\n")
    from_text = encoded_time(TIMED, read_raw(path, schema=TIMED).frame)

    stamps = [when.astimezone(UTC) for _, when in INSTANTS]
    parquet = tmp_path / "t.parquet"
    pl.DataFrame(
        {"click": [1] * len(stamps), "ad": [f"a{i}" for i in range(len(stamps))], "ts": stamps},
        schema={"click": pl.Int64, "ad": pl.String, "ts": pl.Datetime("us", "UTC")},
    ).write_parquet(parquet)
    from_parquet = encoded_time(TIMED, read_raw(parquet, schema=TIMED).frame)

    assert from_text == from_parquet
    # Unix seconds, fractions rounded down (as the Parquet path does: -0.5 s -> -1)
    assert from_text[:2] == [1700000262, 1699920000]
    assert from_text[-1] == -1


def test_iso_dates_match_a_parquet_date_column(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("click,ad,ts\n1,a,2023-11-14\n0,b,1999-01-31\n")
    parquet = tmp_path / "d.parquet"
    pl.DataFrame(
        {"click": [1, 0], "ad": ["a", "b"], "ts": [date(2023, 11, 14), date(1999, 1, 31)]}
    ).write_parquet(parquet)
    text = encoded_time(TIMED, read_raw(path, schema=TIMED).frame)
    assert text == encoded_time(TIMED, read_raw(parquet, schema=TIMED).frame)


def test_numbers_and_iso_times_mix_and_missing_stays_missing(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("click,ad,ts\n1,a,1700000262\n0,b, 2023-11-14T22:17:42Z \n1,a,1.7e9\n")
    frame = read_raw(path, schema=TIMED).frame
    assert frame.schema["ts"] == pl.String  # the same dtype in every chunk
    assert frame["ts"].to_list() == ["1700000262", "1700000262", "1.7e9"]
    assert encoded_time(TIMED, frame) == [1700000262, 1700000262, 1700000000]
    path.write_text("click,ad,ts\n1,a,2023-11-14T22:17:42Z\n0,b,\n")
    with pytest.raises(DataFormatError, match=r"m\.csv: line 3: column 'ts': missing value"):
        read_raw(path, schema=TIMED)


def test_iso_times_in_later_chunks_stream_with_one_dtype(tmp_path: Path) -> None:
    lines = [f"{i % 2},a{i % 5},{1700000000 + i}" for i in range(300)]
    lines += [f"{i % 2},a{i % 5},2023-11-14T22:17:{i % 60:02d}Z" for i in range(300)]
    path = tmp_path / "s.csv"
    path.write_text("click,ad,ts\n" + "\n".join(lines) + "\n")
    batches = list(iter_raw_batches(path, schema=TIMED, batch_rows=128, chunk_bytes=1024))
    frame = pl.concat([b.frame for b in batches])
    assert frame.height == 600
    seconds = frame["ts"].cast(pl.Int64).to_list()
    assert seconds[:300] == [1700000000 + i for i in range(300)]
    assert seconds[300:302] == [1700000220, 1700000221]  # 2023-11-14T22:17:00Z, :01Z


@pytest.mark.parametrize(
    "value", ["yesterday", "2023-02-30", "2023-11-14T25:00:00Z", "14/11/2023", "2023-11-14T22"]
)
def test_unparseable_times_are_refused_naming_file_and_line(tmp_path: Path, value: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(f"click,ad,ts\n1,a,2023-11-14T22:17:42Z\n0,b,{value}\n1,c,1700000000\n")
    with pytest.raises(DataFormatError) as info:
        read_raw(path, schema=TIMED)
    message = str(info.value)
    assert "bad.csv: line 3: column 'ts' (role 'time'): expected a finite number" in message
    assert f"or an ISO-8601 date/time (2023-11-14T22:17:42Z), got {value!r}" in message
    assert "1 bad row(s) in total" in message
    kept = read_raw(path, schema=TIMED, bad_rows="skip")
    assert kept.skipped_rows == 1 and kept.frame["ts"].to_list() == ["1700000262", "1700000000"]


def test_validate_frame_and_parquet_text_convert_iso_times(tmp_path: Path) -> None:
    frame = pl.DataFrame({"click": ["1"], "ad": ["a"], "ts": ["2023-11-14T22:17:42Z"]})
    checked, skipped, _ = validate_frame(frame, TIMED, "mem")
    assert skipped == 0 and checked["ts"].to_list() == ["1700000262"]
    path = tmp_path / "s.parquet"
    frame.write_parquet(path)
    assert encoded_time(TIMED, read_raw(path, schema=TIMED).frame) == [1700000262]


def test_cli_prepare_reads_iso_times(tmp_path: Path) -> None:
    schema = _timed_schema_file(tmp_path)
    train = tmp_path / "train.csv"
    train.write_text("click,ad,ts\n1,a,2023-11-14T22:17:42Z\n0,b,2023-11-14T23:17:42+01:00\n")
    out = tmp_path / "out"
    res = cli("prepare", "--schema", str(schema), "--train", str(train), "--output", str(out))
    assert res.exit_code == 0, res.output
    assert pl.read_parquet(out / "train.parquet")["__time__"].to_list() == [1700000262] * 2


@pytest.mark.parametrize(
    ("extra", "reader"),
    [
        ('transforms: [{name: hour, fn: datetime_part, input: ts, part: hour,'
         ' format: "%Y-%m-%dT%H:%M:%SZ"}]\n'
         "features: [{name: ad, type: categorical}, {name: hour, type: categorical}]",
         "transform 'hour'"),
        ("features: [{name: ad, type: categorical}, {name: ts, type: categorical}]",
         "feature 'ts'"),
    ],
)  # fmt: skip
def test_iso_times_in_a_shared_column_are_refused(tmp_path: Path, extra: str, reader: str) -> None:
    """Rewriting the column to seconds would change what its other readers see (and
    serving sends them the text): refused, naming them."""
    schema = Schema.from_dict(yaml.safe_load(f"tasks: [click]\nroles: {{time: ts}}\n{extra}\n"))
    path = tmp_path / "shared.csv"
    path.write_text("click,ad,ts\n1,a,1700000000\n0,b,2023-11-14T22:17:42Z\n")
    with pytest.raises(DataFormatError) as info:
        read_raw(path, schema=schema)
    message = str(info.value)
    assert "shared.csv: line 3: column 'ts' (role 'time') holds an ISO-8601" in message
    assert reader in message and "a column of its own" in message
    path.write_text("click,ad,ts\n1,a,1700000000\n0,b,1700000001\n")  # numbers: fine
    assert read_raw(path, schema=schema).frame.height == 2


# ---- 2b/2c. whole-file problems and the wording of bad-row messages --------------------


def test_every_row_bad_names_the_format_not_skipping(tmp_path: Path) -> None:
    path = tmp_path / "all.csv"
    path.write_text("click,ad,ts\n1,a,x\n0,b,tomorrow\n1,c,y\n")
    with pytest.raises(DataFormatError) as info:
        read_raw(path, schema=TIMED)
    message = str(info.value)
    assert "all.csv: line 2: column 'ts' (role 'time'): expected a finite number" in message
    assert (
        "all 3 rows read, lines 2-4, fail this way: the column is not in the expected format"
        in message
    )
    assert "skip" not in message


def test_a_single_bad_row_is_not_called_a_format(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text("click,ad,ts\n1,a,x\n")
    with pytest.raises(DataFormatError) as info:
        read_raw(path, schema=TIMED)
    assert str(info.value).endswith("got 'x' (the only row read)")


def test_every_row_bad_for_different_reasons(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    path.write_text("click,ad,ts\n7,a,1\n1,b,x\n")
    with pytest.raises(DataFormatError) as info:
        read_raw(path, schema=TIMED)
    message = str(info.value)
    assert "all 2 rows read, lines 2-3, are bad: check the file against the schema" in message
    assert "skip" not in message


def test_every_row_with_the_wrong_field_count_points_at_the_separator(tmp_path: Path) -> None:
    path = tmp_path / "semi.csv"
    path.write_text("click,ad,ts\n1;a;1\n0;b;2\n")
    with pytest.raises(DataFormatError) as info:
        read_raw(path)
    message = str(info.value)
    assert "line 2: expected 3 fields, got 1 (separator ',')" in message
    assert "all 2 rows read, lines 2-3, fail this way: check the separator" in message
    assert "skip" not in message


def test_skipping_every_row_warns_about_the_format(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "all.csv"
    path.write_text("click,ad,ts\n1,a,x\n0,b,y\n")
    with caplog.at_level(logging.WARNING, logger="adrank.data.readers"):
        res = read_raw(path, schema=TIMED, bad_rows="skip")
    assert res.frame.height == 0 and res.skipped_rows == 2
    (message,) = [r.getMessage() for r in caplog.records]
    assert "skipped 2 bad rows: every row read was bad, so none is left" in message
    assert "wrong format" in message and "line 2: column 'ts'" in message


def test_cli_messages_do_not_use_the_python_keyword(tmp_path: Path) -> None:
    schema = _timed_schema_file(tmp_path)
    some = tmp_path / "some.csv"
    some.write_text("click,ad,ts\n1,a,1\n0,b,never\n1,c,3\n")
    every = tmp_path / "every.csv"
    every.write_text("click,ad,ts\n1,a,never\n0,b,later\n")
    outputs = []
    for train, extra in [(some, ()), (some, ("--bad-rows", "skip")), (every, ()),
                         (every, ("--bad-rows", "skip"))]:  # fmt: skip
        res = cli("prepare", "--schema", str(schema), "--train", str(train),
                  "--output", str(tmp_path / f"o{len(outputs)}"), *extra)  # fmt: skip
        outputs.append(flat(res.output))
    assert all("bad_rows" not in text for text in outputs), outputs
    assert "1 bad row(s) in total; bad-rows mode 'skip' would drop them" in outputs[0]
    assert "skipped 1 bad row, e.g. line 3" in outputs[1]
    assert "all 2 rows read, lines 2-3, fail this way" in outputs[2] and "skip" not in outputs[2]
    assert "every row read was bad" in outputs[3]


def test_scoring_reads_iso_times_as_training_did(tmp_path: Path) -> None:
    """``adrank predict`` on the very file ``prepare`` read refused its ISO times ("role
    'time' must be a finite number"): frames, files and records now read them as the file
    readers do."""
    frame = pl.DataFrame({"click": [1, 0], "ad": ["a", "b"],
                          "ts": ["2023-11-14T22:17:42Z", "1700000262"]})  # fmt: skip
    proc = FeatureProcessor(TIMED).fit(frame)
    assert proc.transform(frame)["__time__"].to_list() == [1700000262] * 2
    with pytest.raises(Exception, match=r"must be a finite number .* or an ISO-8601"):
        proc.transform(frame.with_columns(pl.lit("soon").alias("ts")))
    schema = _timed_schema_file(tmp_path)
    train = tmp_path / "train.csv"
    lines = [f"{i % 2},a{i % 3},2023-11-{1 + i % 28:02d}T10:00:00Z" for i in range(64)]
    train.write_text("click,ad,ts\n" + "\n".join(lines) + "\n")
    res = cli("prepare", "--schema", str(schema), "--train", str(train), "--valid", str(train),
              "--output", str(tmp_path / "p"))  # fmt: skip
    assert res.exit_code == 0, res.output
    res = cli("train", "--model", "lr", "--prepared", str(tmp_path / "p"), "--run-dir",
              str(tmp_path / "run"), "--set", "train.max_epochs=1")  # fmt: skip
    assert res.exit_code == 0, res.output
    res = cli("predict", str(tmp_path / "run"), "--input", str(train), "--output",
              str(tmp_path / "scores.csv"))  # fmt: skip
    assert res.exit_code == 0, res.output
    assert pl.read_csv(tmp_path / "scores.csv").height == 64


def test_json_lines_logs_read_as_csv_logs_do(tmp_path: Path) -> None:
    """JSON lines were advertised for `train --train`, `stream --input` and `histories`
    but every reader refused the suffix: they read as a typed file, checked by record."""
    import gzip
    import json

    rows = [{"click": i % 2, "ad": f"a{i % 3}", "ts": f"2023-11-{1 + i:02d}T10:00:00Z"}
            for i in range(12)]  # fmt: skip
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with gzip.open(tmp_path / "t.jsonl.gz", "wt") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in rows))
    pl.DataFrame(rows).write_csv(tmp_path / "t.csv")
    from_csv = encoded_time(TIMED, read_raw(tmp_path / "t.csv", schema=TIMED).frame)
    for name in ("t.jsonl", "t.jsonl.gz"):
        assert encoded_time(TIMED, read_raw(tmp_path / name, schema=TIMED).frame) == from_csv
    batches = list(iter_raw_batches(tmp_path / "t.jsonl", schema=TIMED, batch_rows=5))
    assert [b.frame.height for b in batches] == [5, 5, 2]
    (tmp_path / "bad.jsonl").write_text(json.dumps(rows[0]) + "\n" + '{"click": 3, "ad": "b", '
                                        '"ts": 1}\n')  # fmt: skip
    with pytest.raises(DataFormatError, match=r"bad\.jsonl: record 2: column 'click'"):
        read_raw(tmp_path / "bad.jsonl", schema=TIMED)
    (tmp_path / "broken.jsonl").write_text('{"click": 1,\n')
    with pytest.raises(DataFormatError, match="not a readable JSON-lines file"):
        read_raw(tmp_path / "broken.jsonl", schema=TIMED)
    schema = _timed_schema_file(tmp_path)
    res = cli("prepare", "--schema", str(schema), "--train", str(tmp_path / "t.jsonl"),
              "--output", str(tmp_path / "p"))  # fmt: skip
    assert res.exit_code == 0, res.output
