from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adrank.data.readers import (
    DataFormatError,
    ReadResult,
    detect_format,
    iter_raw_batches,
    looks_like_header,
    read_raw,
    validate_frame,
)
from adrank.data.schema import CategoricalFeature, NumericFeature, Schema, SequenceFeature

SCHEMA = Schema(
    labels=("click",),
    features=(
        CategoricalFeature("ad"),
        NumericFeature("price"),
        SequenceFeature("hist", max_len=3),
    ),
)
GOOD_CSV = "click,ad,price,hist,extra\n1,a1,2.5,x|y,e\n0,a2,,y,\n1,a1,-3,,f\n"


def write(path: Path, text: str, gz: bool = False) -> Path:
    data = text.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


# ---- format detection ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.csv", "csv"),
        ("a.CSV.gz", "csv"),
        ("a.tsv", "tsv"),
        ("a.txt.gz", "tsv"),
        ("a.parquet", "parquet"),
        ("x.test.libfm.gz", "libfm"),
        ("a.libsvm", "libfm"),
    ],
)
def test_detect_format(name: str, fmt: str) -> None:
    assert detect_format(name) == fmt


@pytest.mark.parametrize("name", ["a.json", "a.gz", "noext"])
def test_detect_format_unknown_suffix(name: str) -> None:
    with pytest.raises(DataFormatError, match="rename the file"):
        detect_format(name)


# ---- CSV / TSV happy paths -------------------------------------------------------------


def test_csv_with_header(tmp_path: Path) -> None:
    res = read_raw(write(tmp_path / "d.csv", GOOD_CSV))
    assert isinstance(res, ReadResult) and res.source == tmp_path / "d.csv"
    assert res.frame.columns == ["click", "ad", "price", "hist", "extra"]
    assert all(dt == pl.String for dt in res.frame.dtypes)
    assert res.frame["price"].to_list() == ["2.5", None, "-3"]  # empty -> null
    assert res.frame["extra"].to_list() == ["e", None, "f"]
    assert res.skipped_rows == 0 and res.skipped_examples == []


def test_csv_with_schema_casts_labels_and_numeric(tmp_path: Path) -> None:
    res = read_raw(write(tmp_path / "d.csv", GOOD_CSV), schema=SCHEMA)
    f = res.frame
    assert f.schema["click"] == pl.Float64 and f.schema["price"] == pl.Float64
    assert f.schema["ad"] == pl.String and f.schema["hist"] == pl.String
    assert f["click"].to_list() == [1.0, 0.0, 1.0]
    assert f["price"].to_list() == [2.5, None, -3.0]
    assert f["hist"].to_list() == ["x|y", "y", None]
    assert "extra" in f.columns  # columns outside the schema are kept


def test_csv_quoting_crlf_and_blank_lines(tmp_path: Path) -> None:
    text = 'a,b,c\r\n"x, y","multi\nline",3\r\n\r\n"say ""hi""",,""\r\n'
    f = read_raw(write(tmp_path / "q.csv", text)).frame
    assert f.rows() == [("x, y", "multi\nline", "3"), ('say "hi"', None, None)]


def test_csv_without_header(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "1,a,2\n0,b,3\n")
    f = read_raw(path, has_header=False, column_names=["click", "ad", "price"]).frame
    assert f.columns == ["click", "ad", "price"] and f.height == 2
    assert f.row(1) == ("0", "b", "3")
    with pytest.raises(ValueError, match="without a header needs its column names"):
        read_raw(path, has_header=False)


def test_column_names_replace_header(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "x,y\n1,2\n")
    assert read_raw(path, column_names=["a", "b"]).frame.columns == ["a", "b"]
    with pytest.raises(DataFormatError, match="header has 2 columns"):
        read_raw(path, column_names=["a", "b", "c"])


@pytest.mark.parametrize("suffix", [".tsv", ".txt", ".tsv.gz"])
def test_tsv(tmp_path: Path, suffix: str) -> None:
    path = write(tmp_path / f"d{suffix}", 'click\tad\n1\t"quoted"\n0\t\n', gz=".gz" in suffix)
    f = read_raw(path).frame
    assert f.rows() == [("1", '"quoted"'), ("0", None)]  # TSV has no quoting


def test_gzip_csv_and_n_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv.gz", GOOD_CSV, gz=True)
    assert read_raw(path).frame.equals(read_raw(write(tmp_path / "p.csv", GOOD_CSV)).frame)
    assert read_raw(path, n_rows=2).frame["ad"].to_list() == ["a1", "a2"]
    assert read_raw(path, n_rows=0).frame.height == 0


def test_custom_separator_on_csv(tmp_path: Path) -> None:
    f = read_raw(write(tmp_path / "d.csv", "a;b\n1;2\n"), separator=";").frame
    assert f.rows() == [("1", "2")]


# ---- Parquet ---------------------------------------------------------------------------


def _parquet(path: Path, n: int = 10, row_group_size: int = 4) -> Path:
    table = pa.table(
        {
            "click": pa.array([i % 2 for i in range(n)], pa.int64()),
            "ad": pa.array([i % 3 for i in range(n)], pa.int64()),
            "price": pa.array([float(i) for i in range(n)]),
            "hist": pa.array([f"h{i}" if i else "" for i in range(n)]),
        }
    )
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def test_parquet(tmp_path: Path) -> None:
    path = _parquet(tmp_path / "d.parquet")
    f = read_raw(path).frame
    assert f.height == 10 and f.schema["click"] == pl.Int64
    assert f["hist"][0] is None  # empty string -> null
    assert read_raw(path, n_rows=3).frame["price"].to_list() == [0.0, 1.0, 2.0]
    s = read_raw(path, schema=SCHEMA).frame
    assert s.schema["click"] == pl.Float64 and s.schema["price"] == pl.Float64
    assert s.schema["ad"] == pl.String and s["ad"].to_list()[:4] == ["0", "1", "2", "0"]


def test_parquet_bad_label_reports_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"click": [0, 1, 5], "ad": ["a", "b", "c"], "price": [1, 2, 3],
                             "hist": ["", "", ""]}), path)  # fmt: skip
    with pytest.raises(DataFormatError, match=r"bad\.parquet: row 3: column 'click'.*got 5"):
        read_raw(path, schema=SCHEMA)
    res = read_raw(path, schema=SCHEMA, bad_rows="skip")
    assert res.frame.height == 2 and res.skipped_examples[0].startswith("row 3:")


def test_parquet_empty_duplicate_and_garbage(tmp_path: Path) -> None:
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"a": pa.array([], pa.int64())}), empty)
    with pytest.raises(DataFormatError, match=r"empty\.parquet: file is empty"):
        read_raw(empty)
    dup = tmp_path / "dup.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["x", "x"]), dup)
    with pytest.raises(DataFormatError, match=r"duplicate column names.*\['x'\]"):
        read_raw(dup)
    with pytest.raises(DataFormatError, match="not a readable Parquet file"):
        read_raw(write(tmp_path / "junk.parquet", "hello"))


# ---- libFM -----------------------------------------------------------------------------

LIBFM = "-1 3:1 10:1\n1 4:1 11:1\n\n0 3:1 12:1\n"


@pytest.mark.parametrize("gz", [False, True])
def test_libfm(tmp_path: Path, gz: bool) -> None:
    path = write(tmp_path / ("d.libfm.gz" if gz else "d.libfm"), LIBFM, gz=gz)
    f = read_raw(path, column_names=["label", "user", "item"]).frame
    assert f.columns == ["label", "user", "item"]  # all values 1 -> no __value columns
    assert f.schema["label"] == pl.Float64 and f.schema["user"] == pl.String
    assert f["label"].to_list() == [0.0, 1.0, 0.0]  # -1 -> 0
    assert f["item"].to_list() == ["10", "11", "12"]
    assert read_raw(path).frame.columns == ["label", "field_1", "field_2"]
    assert read_raw(path, n_rows=2, column_names=["label", "u", "i"]).frame.height == 2


def test_libfm_values_and_schema(tmp_path: Path) -> None:
    path = write(tmp_path / "d.libfm", "1  3:1\t10:0.5\n0 4:1 11:2\n")
    res = read_raw(
        path, column_names=["y", "u", "i"], schema=Schema(("y",), (CategoricalFeature("u"),))
    )
    assert res.frame.columns == ["y", "u", "i", "i__value"]
    assert res.frame["i__value"].to_list() == [0.5, 2.0]


def test_libfm_bad_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.libfm", "1 3:1 10:1\n0 4:1\n1 5:1 x\nyes 6:1 7:1\n0 8:1 9:1\n")
    names = ["label", "user", "item"]
    with pytest.raises(DataFormatError, match=r"bad\.libfm: line 2: expected 3 tokens.*got 2"):
        read_raw(path, column_names=names)
    res = read_raw(path, column_names=names, bad_rows="skip")
    assert res.frame["user"].to_list() == ["3", "8"] and res.skipped_rows == 3
    assert res.skipped_examples == [
        "line 2: expected 3 tokens (label + 2 fields), got 2",
        "line 3: column 'item': expected a token 'idx:val', got 'x'",
        "line 4: column 'label': expected a number, got 'yes'",
    ]
    with pytest.raises(DataFormatError, match=r"label 0 or 1, got 2\.0"):
        schema = Schema(("label",), (CategoricalFeature("field_1"),))
        read_raw(write(tmp_path / "l.libfm", "2 1:1\n"), schema=schema)


# ---- bad input: CSV structure ----------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        read_raw(tmp_path / "nope.csv")


@pytest.mark.parametrize(
    ("name", "text", "kwargs", "message"),
    [
        ("e.csv", "", {}, "e.csv: file is empty"),
        ("e.csv.gz", "", {}, "e.csv.gz: file is empty"),
        ("e.csv", "\n\n", {}, "file is empty"),
        ("e.csv", "", {"has_header": False, "column_names": ["a"]}, "file is empty"),
        ("h.csv", "a,b,c\n", {}, "h.csv: file has a header but no rows"),
        ("h.tsv", "a\tb\n\n", {}, "file has a header but no rows"),
        ("e.libfm", "", {}, "e.libfm: file is empty"),
    ],
)
def test_empty_files(tmp_path: Path, name: str, text: str, kwargs: dict, message: str) -> None:
    path = write(tmp_path / name, text, gz=name.endswith(".gz"))
    with pytest.raises(DataFormatError, match=message):
        read_raw(path, **kwargs)


def test_duplicate_names(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"dup.csv: duplicate column names.*\['a'\]"):
        read_raw(write(tmp_path / "dup.csv", "a,b,a\n1,2,3\n"))
    path = write(tmp_path / "n.csv", "1,2\n")
    with pytest.raises(DataFormatError, match=r"duplicate column names in column_names.*'x'"):
        read_raw(path, has_header=False, column_names=["x", "x"])


RAGGED = "a,b,c\n1,2,3\n4,5\n6,7,8\n9,10,11,12\n13,14,15\n"


def test_wrong_field_count_error(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError) as info:
        read_raw(write(tmp_path / "rag.csv", RAGGED))
    msg = str(info.value)
    assert "rag.csv" in msg and "line 3: expected 3 fields, got 2" in msg and "2 bad row" in msg


def test_wrong_field_count_skip(tmp_path: Path) -> None:
    res = read_raw(write(tmp_path / "rag.csv", RAGGED), bad_rows="skip")
    assert res.frame["a"].to_list() == ["1", "6", "13"]
    assert res.skipped_rows == 2
    assert res.skipped_examples == [
        "line 3: expected 3 fields, got 2",
        "line 5: expected 3 fields, got 4",
    ]


def test_line_numbers_count_quoted_newlines(tmp_path: Path) -> None:
    text = 'a,b\n"x\ny\nz",1\n2\n'
    with pytest.raises(DataFormatError, match="line 5: expected 2 fields, got 1"):
        read_raw(write(tmp_path / "ml.csv", text))
    with pytest.raises(DataFormatError, match="line 2: unterminated quoted field"):
        read_raw(write(tmp_path / "uq.csv", 'a,b\n"x,1\n2,3\n'))


# ---- bad input: schema checks ----------------------------------------------------------

BAD_VALUES = (
    "click,ad,price,hist\n"
    "1,a,1.5,\n"  # line 2 ok
    ",a,2,\n"  # line 3 missing label
    "2,a,3,\n"  # line 4 label out of range
    "1,a,abc,\n"  # line 5 non-numeric price
    "0,b, 7 ,\n"  # line 6 ok (whitespace around a number)
    "yes,a,1,\n"  # line 7 non-numeric label
    "1,a,inf,\n"  # line 8 infinite price
)


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        (3, "line 3: column 'click': missing label"),
        (4, "line 4: column 'click': expected a label 0 or 1, got '2'"),
        (5, "line 5: column 'price': expected a number, got 'abc'"),
        (7, "line 7: column 'click': expected a label 0 or 1, got 'yes'"),
        (8, "line 8: column 'price': expected a finite number, got 'inf'"),
    ],
)
def test_schema_errors_name_file_line_column(tmp_path: Path, line: int, needle: str) -> None:
    rows = BAD_VALUES.splitlines()
    text = "\n".join([rows[0], rows[1], rows[line - 1]]) + "\n"
    with pytest.raises(DataFormatError) as info:
        read_raw(write(tmp_path / "vals.csv", text), schema=SCHEMA)
    assert "vals.csv" in str(info.value)
    assert needle.replace(f"line {line}", "line 3") in str(info.value)


def test_schema_skip_mode(tmp_path: Path) -> None:
    res = read_raw(write(tmp_path / "vals.csv", BAD_VALUES), schema=SCHEMA, bad_rows="skip")
    assert res.frame["price"].to_list() == [1.5, 7.0]
    assert res.frame["click"].to_list() == [1.0, 0.0]
    assert res.skipped_rows == 5
    assert [e.split(":")[0] for e in res.skipped_examples] == [f"line {n}" for n in (3, 4, 5, 7, 8)]
    with pytest.raises(DataFormatError, match=r"vals.csv: line 3: .*5 bad row"):
        read_raw(tmp_path / "vals.csv", schema=SCHEMA)


def test_schema_missing_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", "click,ad\n1,a\n")
    with pytest.raises(DataFormatError) as info:
        read_raw(path, schema=SCHEMA)
    msg = str(info.value)
    assert "m.csv" in msg and "['price', 'hist']" in msg and "['click', 'ad']" in msg


def test_structure_and_schema_skips_combine(tmp_path: Path) -> None:
    text = "click,ad,price,hist\n1,a,1,\n1,a\n2,a,1,\n0,b,2,\n"
    res = read_raw(write(tmp_path / "c.csv", text), schema=SCHEMA, bad_rows="skip")
    assert res.frame.height == 2 and res.skipped_rows == 2
    assert [e[:6] for e in res.skipped_examples] == ["line 3", "line 4"]


def test_validate_frame_line_offset(tmp_path: Path) -> None:
    frame = pl.DataFrame({"click": ["1", "x"], "ad": ["a", "b"], "price": ["1", "2"],
                          "hist": [None, None]})  # fmt: skip
    with pytest.raises(DataFormatError, match=r"src\.csv: line 11: column 'click'"):
        validate_frame(frame, SCHEMA, "src.csv", line_offset=10)
    out, skipped, examples = validate_frame(frame, SCHEMA, "src.csv", bad_rows="skip")
    assert out.height == 1 and skipped == 1 and examples[0].startswith("line 3:")
    with pytest.raises(ValueError, match="bad_rows"):
        validate_frame(frame, SCHEMA, "src.csv", bad_rows="ignore")  # type: ignore[arg-type]


# ---- streaming -------------------------------------------------------------------------


def _big_csv(n: int) -> str:
    rows = [f'{i % 2},ad{i},"{i}.5","h,{i}\nx"' for i in range(n)]
    return "click,ad,price,hist\n" + "\n".join(rows) + "\n"


@pytest.mark.parametrize("gz", [False, True])
def test_iter_raw_batches_csv(tmp_path: Path, gz: bool) -> None:
    path = write(tmp_path / ("b.csv.gz" if gz else "b.csv"), _big_csv(1000), gz=gz)
    batches = list(iter_raw_batches(path, batch_rows=128, chunk_bytes=1000, schema=SCHEMA))
    assert [b.frame.height for b in batches] == [128] * 7 + [104]
    whole = pl.concat([b.frame for b in batches])
    assert whole.equals(read_raw(path, schema=SCHEMA).frame)
    assert whole["ad"].to_list() == [f"ad{i}" for i in range(1000)]
    assert whole["hist"][999] == "h,999\nx"
    limited = list(iter_raw_batches(path, batch_rows=300, chunk_bytes=700, n_rows=450))
    assert [b.frame.height for b in limited] == [300, 150]


def test_iter_raw_batches_reports_lines_in_later_chunks(tmp_path: Path) -> None:
    text = _big_csv(500).replace("ad400,", "ad400,extra,", 1)  # record 401 -> line 802
    path = write(tmp_path / "late.csv", text)
    with pytest.raises(DataFormatError, match=r"late\.csv: line 802: expected 4 fields, got 5"):
        list(iter_raw_batches(path, batch_rows=64, chunk_bytes=512))
    batches = list(iter_raw_batches(path, batch_rows=64, chunk_bytes=512, bad_rows="skip"))
    assert sum(b.frame.height for b in batches) == 499
    assert sum(b.skipped_rows for b in batches) == 1


def test_iter_raw_batches_parquet(tmp_path: Path) -> None:
    path = _parquet(tmp_path / "b.parquet", n=1000, row_group_size=300)
    batches = list(iter_raw_batches(path, batch_rows=256, schema=SCHEMA))
    assert [b.frame.height for b in batches] == [256, 256, 256, 232]
    whole = pl.concat([b.frame for b in batches])
    assert whole.equals(read_raw(path, schema=SCHEMA).frame)
    assert [b.frame.height for b in iter_raw_batches(path, batch_rows=256, n_rows=300)] == [
        256,
        44,
    ]


def test_iter_raw_batches_libfm(tmp_path: Path) -> None:
    lines = [f"{1 if i % 3 else -1} {i}:1 {i + 5000}:1" for i in range(300)]
    path = write(tmp_path / "s.libfm.gz", "\n".join(lines) + "\n", gz=True)
    batches = list(iter_raw_batches(path, batch_rows=100, chunk_bytes=256))
    assert [b.frame.height for b in batches] == [100, 100, 100]
    assert pl.concat([b.frame for b in batches]).equals(read_raw(path).frame)


# ---- real data -------------------------------------------------------------------------

FRAPPE_FIELDS = ["user", "item", "daytime", "weekday", "isweekend", "homework", "cost",
                 "weather", "country", "city"]  # fmt: skip


@pytest.mark.integration
def test_frappe_nfm_test_split(data_dir: Path) -> None:
    path = data_dir / "frappe" / "nfm_split" / "frappe.test.libfm.gz"
    schema = Schema(("label",), tuple(CategoricalFeature(f) for f in FRAPPE_FIELDS))
    f = read_raw(path, column_names=["label", *FRAPPE_FIELDS], schema=schema).frame
    assert f.columns == ["label", *FRAPPE_FIELDS]
    assert f.height == 28_860 and f["label"].sum() == 9_536
    assert set(f["label"].unique().to_list()) == {0.0, 1.0}
    assert f.null_count().sum_horizontal().item() == 0


@pytest.mark.integration
def test_criteo_dev(data_dir: Path) -> None:
    names = ["label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27))]
    schema = Schema(
        ("label",),
        tuple(NumericFeature(f"I{i}") for i in range(1, 14))
        + tuple(CategoricalFeature(f"C{i}") for i in range(1, 27)),
    )
    path = data_dir / "criteo" / "dev.txt.gz"
    f = read_raw(path, has_header=False, column_names=names, schema=schema).frame
    assert f.shape == (409, 40) and f["label"].sum() == 93
    assert f.schema["I1"] == pl.Float64 and f.schema["C1"] == pl.String
    assert f["I2"][0] == -1.0 and f["I3"][0] is None  # negative counts and empty cells


# ---- odd corners -----------------------------------------------------------------------


def test_bom_and_unnamed_header_column(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf,item_id\n0,7\n")
    assert read_raw(path).frame.columns == ["column_1", "item_id"]


def test_corrupt_gzip_and_bad_utf8(tmp_path: Path) -> None:
    path = tmp_path / "broken.csv.gz"
    path.write_bytes(b"\x1f\x8b" + b"not really gzip data")
    with pytest.raises(DataFormatError, match=r"broken\.csv\.gz: cannot read/decompress"):
        read_raw(path)
    latin = tmp_path / "latin.libfm"
    latin.write_bytes(b"1 caf\xe9:1\n")
    with pytest.raises(DataFormatError, match=r"latin\.libfm: not valid UTF-8"):
        read_raw(latin)


def test_libfm_blank_lines_across_chunks_and_n_rows(tmp_path: Path) -> None:
    text = "".join(f"{i % 2} {i}:1\n\n\n" for i in range(50))
    path = write(tmp_path / "blank.libfm", text)
    batches = list(iter_raw_batches(path, batch_rows=7, chunk_bytes=16))
    assert sum(b.frame.height for b in batches) == 50
    assert pl.concat([b.frame for b in batches])["field_1"].to_list() == [str(i) for i in range(50)]
    bad = write(tmp_path / "b2.libfm", text.replace("0 2:1", "0 2:1 9:1"))
    with pytest.raises(DataFormatError, match=r"b2\.libfm: line 7: expected 2 tokens"):
        read_raw(bad)
    assert read_raw(path, n_rows=0).frame.height == 0


def test_header_auto_detection_and_data_looking_headers(tmp_path: Path) -> None:
    """Avazu's dev/test files have no header while its train file has one."""
    headed = tmp_path / "train.csv"
    headed.write_text("id,click,site\n17,0,a1\n18,1,b2\n")
    bare = tmp_path / "dev.csv"
    bare.write_text("19,0,a1\n20,0,c3\n")
    names = ["id", "click", "site"]
    assert read_raw(headed, has_header="auto").frame.columns == names
    frame = read_raw(bare, has_header="auto", column_names=names).frame
    assert frame.height == 2 and frame["id"].to_list() == ["19", "20"]
    with pytest.raises(DataFormatError, match=r"looks like data.*--columns"):
        read_raw(bare, has_header="auto")
    zeros = tmp_path / "zeros.csv"
    zeros.write_text("0,1,0\n1,1,0\n")
    with pytest.raises(DataFormatError, match=r"duplicate column names.*no header.*--no-header"):
        read_raw(zeros)
    assert looks_like_header(["click", "purchase", "101"])
    assert not looks_like_header(["1000009418151094273", "0", "14102100", "1005"])
