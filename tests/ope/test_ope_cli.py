"""``adrank ope`` on real Parquet files: estimates, JSON, and errors naming row and column."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from adrank.cli import app


@pytest.fixture
def files(tmp_path):
    logs = pl.DataFrame(
        {
            "item": [0, 1, 0, 1],
            "slot": [1, 1, 2, 2],
            "click": [1, 0, 0, 1],
            "pscore": [0.5, 0.5, 0.25, 0.5],
        }
    )
    logs.write_parquet(tmp_path / "logs.parquet")
    np.save(tmp_path / "policy.npy", np.array([[0.8, 0.4], [0.2, 0.6]]))
    return tmp_path


def _args(path, *extra: str) -> list[str]:
    return [
        "ope", str(path / "logs.parquet"), "--policy", str(path / "policy.npy"),
        "--action-col", "item", "--position-col", "slot", "--reward-col", "click",
        "--propensity-col", "pscore", "--bootstrap", "50", *extra,
    ]  # fmt: skip


def test_ope_json(files) -> None:
    res = CliRunner().invoke(app, _args(files, "--json", "--reward-model", "none"))
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    values = {e["estimator"]: e["value"] for e in out["estimates"]}
    assert values["ips"] == pytest.approx(0.7)
    assert values["snips"] == pytest.approx(2.8 / 4.8)
    assert values["on_policy"] == pytest.approx(0.5)
    assert "dm" not in values and out["seed"] == 12345


def test_ope_table(files) -> None:
    res = CliRunner().invoke(app, _args(files))
    assert res.exit_code == 0, res.output
    assert "SNIPS" in res.output and "DR" in res.output and "95% interval" in res.output


def test_ope_bad_propensity_names_row_and_column(files) -> None:
    pl.read_parquet(files / "logs.parquet").with_columns(
        pl.Series("pscore", [0.5, 1.2, 0.25, 0.5])
    ).write_parquet(files / "logs.parquet")
    res = CliRunner().invoke(app, _args(files))
    assert res.exit_code == 1
    assert "'pscore'" in res.output and "row 1" in res.output


def test_ope_policy_not_summing_to_one(files) -> None:
    np.save(files / "policy.npy", np.array([[0.8, 0.4], [0.1, 0.6]]))
    res = CliRunner().invoke(app, _args(files))
    assert res.exit_code == 1
    assert "position 0" in res.output and "sum to 0.9" in res.output


@pytest.mark.integration
def test_ope_open_bandit_uniform_policy(data_dir, tmp_path) -> None:
    """The uniform policy evaluated on uniform-random logs: IPS = SNIPS = the logged CTR."""
    np.save(tmp_path / "uniform.npy", np.full((80, 3), 1 / 80))
    res = CliRunner().invoke(
        app,
        ["ope", "--open-bandit", "random/all", "--policy", str(tmp_path / "uniform.npy"),
         "--data-dir", str(data_dir), "--bootstrap", "100", "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    values = {e["estimator"]: e["value"] for e in json.loads(res.output)["estimates"]}
    assert values["ips"] == pytest.approx(38 / 10_000)
    assert values["snips"] == pytest.approx(38 / 10_000)


def test_ope_open_bandit_missing_files_named(tmp_path) -> None:
    np.save(tmp_path / "uniform.npy", np.full((80, 3), 1 / 80))
    res = CliRunner().invoke(
        app,
        ["ope", "--open-bandit", "random/all", "--policy", str(tmp_path / "uniform.npy"),
         "--data-dir", str(tmp_path)],
    )  # fmt: skip
    assert res.exit_code == 1
    assert "random_all.csv.gz" in res.output
    res = CliRunner().invoke(
        app, ["ope", "--open-bandit", "random", "--policy", str(tmp_path / "uniform.npy")]
    )
    assert res.exit_code == 1 and "campaign" in res.output
