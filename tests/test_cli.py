"""CLI behaviour that needs no real dataset: help texts, own-log preparation, bad rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adrank.cli import app

SCHEMA = """
labels: [click]
group: user
features:
  - {name: user, type: categorical}
  - {name: ad, type: categorical, hash_buckets: 64}
  - {name: price, type: numeric, normalizer: log1p}
"""


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["datasets"],
        ["datasets", "list"],
        ["datasets", "prepare"],
        ["datasets", "export"],
        ["prepare"],
        ["train"],
        ["evaluate"],
        ["predict"],
        ["benchmark"],
        ["models"],
        ["calibrate"],
        ["export"],
        ["serve"],
        ["publish"],
        ["rollback"],
        ["datasets", "synth"],
    ],
)
def test_every_command_has_help(args: list[str]) -> None:
    res = CliRunner().invoke(app, [*args, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output


def _write_logs(tmp_path: Path, bad: bool) -> tuple[Path, Path]:
    schema = tmp_path / "schema.yaml"
    schema.write_text(SCHEMA)
    rows = ["click,user,ad,price"] + [f"{i % 2},u{i % 5},a{i % 7},{i}.5" for i in range(40)]
    if bad:
        rows.insert(6, "1,u1,a1")  # wrong field count: file line 7
        rows.insert(9, "0,u2,a2,cheap")  # non-numeric price: file line 10
    train = tmp_path / "train.csv"
    train.write_text("\n".join(rows) + "\n")
    return schema, train


def test_prepare_own_logs(tmp_path: Path) -> None:
    schema, train = _write_logs(tmp_path, bad=False)
    out = tmp_path / "prepared"
    res = CliRunner().invoke(
        app, ["prepare", "--schema", str(schema), "--train", str(train), "--output", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "40" in res.output and "click=0.5000" in res.output
    fmap = json.loads((out / "feature_map.json").read_text())
    assert [f["name"] for f in fmap["fields"]] == ["user", "ad", "price"]
    assert (out / "train.parquet").exists() and (out / "processor" / "processor.json").exists()


def test_prepare_bad_rows_error_names_file_and_line(tmp_path: Path) -> None:
    schema, train = _write_logs(tmp_path, bad=True)
    res = CliRunner().invoke(
        app,
        ["prepare", "--schema", str(schema), "--train", str(train), "--output",
         str(tmp_path / "o")],
    )  # fmt: skip
    assert res.exit_code == 1
    assert "train.csv" in res.output and "line 7" in res.output
    assert "Traceback" not in res.output


def test_prepare_bad_rows_skip_reports_count(tmp_path: Path) -> None:
    schema, train = _write_logs(tmp_path, bad=True)
    out = tmp_path / "o"
    res = CliRunner().invoke(
        app,
        ["prepare", "--schema", str(schema), "--train", str(train), "--output", str(out),
         "--bad-rows", "skip"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "skipped 2 bad rows" in res.output
    assert json.loads((out / "stats.json").read_text())["splits"]["train"]["rows"] == 40


def test_prepare_rejects_unknown_schema_key(tmp_path: Path) -> None:
    schema, train = _write_logs(tmp_path, bad=False)
    schema.write_text(SCHEMA + "colour: blue\n")
    res = CliRunner().invoke(
        app, ["prepare", "--schema", str(schema), "--train", str(train), "--output",
              str(tmp_path / "o")],
    )  # fmt: skip
    assert res.exit_code == 1
    assert "colour" in res.output


def test_datasets_list_shows_versions_and_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    from adrank.cli import console

    monkeypatch.setattr(console, "width", 400)
    res = CliRunner().invoke(app, ["datasets", "list"])
    assert res.exit_code == 0, res.output
    lines = {line.split("│")[1].strip(): line for line in res.output.splitlines() if "│" in line}
    assert "v2" in lines["movielens_100k"]
    assert "like -> pctr, love (given like) -> pcvr" in lines["movielens_100k"]
    assert "click -> pctr, engaged (given click) -> pcvr" in lines["frappe_funnel"]
    assert "cumulative usage count" in lines["frappe_funnel"]
    assert "v1" in lines["frappe"] and "label -> pctr" in lines["frappe"]
