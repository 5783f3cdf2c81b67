"""``adrank stream`` on a user's own logs (``--schema`` with ``--input`` files), not only on
a registered dataset: the main use of incremental training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from adrank.cli import app

SCHEMA = """
tasks: [click]
roles: {time: ts, group: user}
features:
  - {name: user, type: categorical}
  - {name: item, type: categorical}
"""


def _log(path: Path, rows: range, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    lines = ["ts,user,item,click"]
    for i in rows:
        user, item = rng.integers(0, 30), rng.integers(0, 20)
        click = int(rng.random() < (0.7 if (user + item) % 3 == 0 else 0.1))
        lines.append(f"{1_700_000_000 + 60 * i},u{user},i{item},{click}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_stream_runs_on_schema_and_input_files(tmp_path: Path) -> None:
    (tmp_path / "schema.yaml").write_text("name: shop\n" + SCHEMA)  # titled by its name
    # two files whose rows interleave in time: the stream orders them by the time role
    first = _log(tmp_path / "a.csv", range(0, 1200, 2), 0)
    second = _log(tmp_path / "b.csv", range(1, 1200, 2), 1)
    out = tmp_path / "s"
    res = CliRunner().invoke(
        app,
        ["stream", "--schema", str(tmp_path / "schema.yaml"), "--input", str(first),
         "--input", str(second), "--model", "lr", "--chunks", "3", "--max-epochs", "1",
         "--set", "train.num_threads=1", "--set", "train.batch_size=64", "--out", str(out),
         "--save", "none"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "lr fine_tune on shop (3 chunks" in " ".join(res.output.split())
    records = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    assert [r["chunk"] for r in records] == [1, 2] and [r["rows"] for r in records] == [400, 400]
    assert np.isfinite([r["auc"] for r in records]).all()


def test_stream_sources_are_checked(tmp_path: Path) -> None:
    (tmp_path / "schema.yaml").write_text(SCHEMA)
    schema = ["--schema", str(tmp_path / "schema.yaml")]
    for args in (["--dataset", "movielens_100k", *schema, "--input", "x.csv"], schema, []):
        res = CliRunner().invoke(app, ["stream", "--model", "lr", *args])
        assert res.exit_code != 0
        assert "either --dataset NAME, or --schema FILE with one or more --input" in res.output
    bad = tmp_path / "bad.csv"
    bad.write_text("ts,user,item,click\n1700000000,u1,i1,1\nyesterday,u2,i2,0\n")
    res = CliRunner().invoke(
        app, ["stream", "--model", "lr", *schema, "--input", str(bad), "--out", str(tmp_path / "o")]
    )
    assert res.exit_code != 0 and "bad.csv: line 3" in res.output


def test_a_bad_strategy_or_option_is_refused_before_the_data_are_read(tmp_path: Path) -> None:
    (tmp_path / "schema.yaml").write_text(SCHEMA)
    missing = str(tmp_path / "not-there.csv")  # never read: the strategy is checked first
    base = [
        "stream",
        "--model",
        "lr",
        "--schema",
        str(tmp_path / "schema.yaml"),
        "--input",
        missing,
    ]
    res = CliRunner().invoke(app, [*base, "--strategy", "bogus"])
    assert res.exit_code != 0 and "unknown strategy 'bogus'" in res.output
    res = CliRunner().invoke(app, [*base, "--strategy", "sliding_window", "--option", "windw=3"])
    assert res.exit_code != 0 and "has no option(s) ['windw']" in " ".join(res.output.split())
