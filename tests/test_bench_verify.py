"""`adrank benchmark --verify`: re-train a recorded row, compare, say which code trained it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

import adrank.bench.runner as runner
import adrank.bench.verify as verify
from adrank.bench.runner import BenchmarkRun, read_results, run_benchmark
from adrank.cli import app
from adrank.data.prepare import PreparedData, prepare_frames
from adrank.data.schema import CategoricalFeature, NumericFeature, Schema

# A small DeepFM with dropout (the verified run must repeat its masks too), 2 epochs.
OVERRIDES = [
    "params.embedding_dim=4",
    "params.hidden_units=[16]",
    "params.net_dropout=0.2",
    "train.max_epochs=2",
    "train.batch_size=256",
    "train.progress=false",
]
SCHEMA = Schema(
    labels=("click",),
    features=(
        CategoricalFeature("user"),
        CategoricalFeature("ad"),
        NumericFeature("price", normalizer="log1p"),
    ),
    name="tiny_ads",
)


def _frame(rows: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    user, ad, price = rng.integers(0, 40, rows), rng.integers(0, 20, rows), rng.gamma(2, 2, rows)
    logit = (ad % 4 - 1.5) - 0.1 * price
    click = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pl.DataFrame(
        {"click": click, "user": [f"u{u}" for u in user], "ad": [f"a{a}" for a in ad],
         "price": price}
    )  # fmt: skip


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    splits = {"train": _frame(3000, 1), "valid": _frame(1000, 2), "test": _frame(1000, 3)}
    return prepare_frames(SCHEMA, splits, tmp_path_factory.mktemp("tiny") / "prepared")


@pytest.fixture
def recorded(
    prepared: PreparedData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, BenchmarkRun]:
    """``adrank benchmark`` output with one row (deepfm, seed 2021) on the tiny set."""
    monkeypatch.setattr(runner, "prepare_dataset", lambda *a, **k: prepared)
    monkeypatch.setattr(verify, "prepare_dataset", lambda *a, **k: prepared)
    out = tmp_path / "bench"
    (row,) = run_benchmark("tiny", ["deepfm"], [2021], out, overrides=OVERRIDES)
    return out, row


def _rewrite(out: Path, **changes: object) -> None:
    """Append a changed copy of the row (the last line for a (model, seed) wins)."""
    row = read_results(out / "runs.jsonl")[("deepfm", 2021)]
    with open(out / "runs.jsonl", "a") as fh:
        fh.write(json.dumps(dataclasses.asdict(dataclasses.replace(row, **changes))) + "\n")


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*")
            if p.is_file()}  # fmt: skip


def test_same_code_reproduces_to_1e6_and_leaves_the_recorded_run_alone(
    recorded: tuple[Path, BenchmarkRun],
) -> None:
    out, row = recorded
    assert row.code == runner.code_version()
    # the benchmark timed the speed index just before training; the re-training below does
    # not, and still matches to 1e-6: the index leaves the seeded run alone
    assert row.speed_index is not None and row.speed_index > 0
    before = _files(out)
    result = verify.verify_run("tiny", "deepfm", 2021, out / "runs.jsonl", overrides=OVERRIDES)
    assert result.config_source == str(Path(row.run_dir) / "config.yaml")
    assert result.same_code and result.reproduced
    assert result.num_threads == torch.get_num_threads()
    assert abs(result.auc_diff) <= 1e-6 and abs(result.logloss_diff) <= 1e-6
    assert _files(out) == before
    text = "\n".join(result.report())
    assert f"{row.test_auc:.6f}" in text and "the same as the current code" in text
    assert text.endswith("reproduced: both differences are within 1e-06")


def test_without_the_run_directory_it_uses_the_shipped_config_and_the_seed(
    recorded: tuple[Path, BenchmarkRun],
) -> None:
    out, _ = recorded
    _rewrite(out, run_dir=str(out / "moved-away"))
    result = verify.verify_run("tiny", "deepfm", 2021, out / "runs.jsonl", overrides=OVERRIDES)
    assert result.config_source.startswith("shipped config for tiny/deepfm with ")
    assert result.config_source.endswith(" train.seed=2021")
    # the row's recorded --set overrides are re-applied (here the test's tiny settings)
    assert "params.embedding_dim=4" in result.config_source
    assert result.reproduced


def test_cli_prints_both_numbers_and_exits_1_when_the_row_does_not_reproduce(
    recorded: tuple[Path, BenchmarkRun],
) -> None:
    out, row = recorded
    args = ["benchmark", "--dataset", "tiny", "--output", str(out), "--verify", "deepfm"]
    args += ["--seed", "2021", *[x for o in OVERRIDES for x in ("--set", o)]]
    ok = CliRunner().invoke(app, args)
    assert ok.exit_code == 0, ok.output
    assert "reproduced: both differences are within 1e-06" in ok.output
    _rewrite(out, test_auc=row.test_auc + 1e-4)
    bad = CliRunner().invoke(app, args)
    assert bad.exit_code == 1, bad.output
    assert f"{row.test_auc + 1e-4:.6f}" in bad.output and "-1.00e-04" in bad.output
    assert "NOT reproduced: same code version" in bad.output


def test_other_or_missing_code_version_is_said_plainly(
    recorded: tuple[Path, BenchmarkRun],
) -> None:
    out, _ = recorded
    _rewrite(out, code="0.0.1+gdeadbeef00")
    other = verify.verify_run("tiny", "deepfm", 2021, out / "runs.jsonl", overrides=OVERRIDES)
    assert other.reproduced and not other.same_code
    assert "the row was recorded by 0.0.1+gdeadbeef00, the current code is" in "\n".join(
        other.report()
    )
    _rewrite(out, code="", test_logloss=other.recorded.test_logloss + 1e-3)
    missing = verify.verify_run("tiny", "deepfm", 2021, out / "runs.jsonl", overrides=OVERRIDES)
    text = "\n".join(missing.report())
    assert "the row records none" in text
    assert "NOT reproduced (difference above 1e-06): the row is stale" in text


def test_unknown_row_names_what_is_recorded(recorded: tuple[Path, BenchmarkRun]) -> None:
    out, _ = recorded
    res = CliRunner().invoke(
        app, ["benchmark", "--output", str(out), "--verify", "deepfm", "--seed", "7"]
    )
    assert res.exit_code == 1
    assert "no row for deepfm seed 7 (seeds [2021])" in res.output
    missing = CliRunner().invoke(
        app, ["benchmark", "--output", str(out / "nowhere"), "--verify", "deepfm"]
    )
    assert missing.exit_code == 1 and "does not exist" in missing.output


def test_rows_record_their_machine_and_record_puts_verifications_in_the_code_column(
    recorded: tuple[Path, BenchmarkRun],
) -> None:
    from adrank.bench.provenance import STALE, VERIFIED_MARK, read_verifications, short_code
    from adrank.bench.report import aggregate, to_csv, to_markdown, write_report

    out, row = recorded
    assert f"({torch.get_num_threads()} threads)" in row.machine and "torch" in row.machine
    _rewrite(out, code="")  # a row recorded before rows carried a code version
    runs = list(read_results(out / "runs.jsonl").values())
    (unverified,) = aggregate(runs, "tiny", read_verifications(out))
    assert unverified.code == "–"
    assert "–: recorded without a code version" in to_markdown([unverified], "tiny")

    args = ["benchmark", "--dataset", "tiny", "--output", str(out), "--verify", "deepfm"]
    args += ["--record", *[x for o in OVERRIDES for x in ("--set", o)]]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert f"recorded in {out / 'verified.jsonl'}" in res.output
    (entry,) = read_verifications(out)
    assert entry.reproduced and entry.model == "deepfm" and entry.seed == 2021
    assert entry.recorded_code == "" and entry.code == runner.code_version()
    assert entry.machine == row.machine and abs(entry.auc_diff) <= 1e-6 and entry.date

    (lb_row,) = write_report(runs, "tiny", out)
    assert lb_row.code == f"{short_code(entry.code)} {VERIFIED_MARK}"
    md = (out / "leaderboard.md").read_text()
    assert f"| {lb_row.code} |" in md and "re-trained one of them bit for bit" in md
    assert f"Machine (recorded by the runs): {row.machine}" in md
    header, line = (r.split(",") for r in to_csv([lb_row]).splitlines()[:2])
    assert line[header.index("code")] == lb_row.code

    # a failed verification, the latest one, marks the row stale
    _rewrite(out, test_auc=row.test_auc + 1e-3)
    assert CliRunner().invoke(app, args).exit_code == 1
    assert [v.reproduced for v in read_verifications(out)] == [True, False]
    (stale,) = aggregate(runs, "tiny", read_verifications(out))
    assert stale.code == STALE and "did not reproduce the row" in to_markdown([stale], "tiny")


def test_code_cells_prefer_the_rows_own_versions() -> None:
    from adrank.bench.provenance import Verification, code_cells

    good = Verification("a", 2021, True, "0.1.0+gfeed", "", "m", 0.9, 0.0, 0.0)
    cells = code_cells(
        [("a", ""), ("a", ""), ("b", "0.1.0+g111"), ("b", "0.1.0+g222"), ("b", "0.1.0+g111"),
         ("c", "")],
        [good, dataclasses.replace(good, model="b", code="0.1.0+g999")],
    )  # fmt: skip
    assert cells == {"a": "gfeed ‡", "b": "g111, g222", "c": "–"}
    failed = dataclasses.replace(good, reproduced=False, code="0.1.0+gbad")
    assert code_cells([("a", "")], [good, failed]) == {"a": "stale ✗"}
    assert code_cells([("a", "")], [failed, good]) == {"a": "gfeed ‡"}


def test_a_row_from_another_cpu_is_named_and_judged_against_the_seed_spread(
    recorded: tuple[Path, BenchmarkRun],
) -> None:
    out, row = recorded
    assert not verify.verify_run(
        "tiny", "deepfm", 2021, out / "runs.jsonl", overrides=OVERRIDES
    ).other_cpu  # the row's machine is this one
    _rewrite(out, machine="Other CPU 9000, 2 cores, torch 2.13.0+cpu (2 threads), Python 3.11",
             test_auc=row.test_auc + 2e-3)  # fmt: skip
    with open(out / "runs.jsonl", "a") as fh:  # a second seed: a spread of 1e-3
        other_seed = dataclasses.replace(
            row, seed=2022, test_auc=row.test_auc + 2e-3 - 2**0.5 * 1e-3
        )
        fh.write(json.dumps(dataclasses.asdict(other_seed)) + "\n")
    result = verify.verify_run("tiny", "deepfm", 2021, out / "runs.jsonl", overrides=OVERRIDES)
    assert result.other_cpu and result.recorded_cpu == "Other CPU 9000"
    assert not result.reproduced and result.seed_std == pytest.approx(1e-3, rel=1e-6)
    text = "\n".join(result.report())
    assert "CPU: the row was trained on Other CPU 9000, this re-run on " in text
    assert "test AUC std over its seeds: 0.001000" in text
    assert text.splitlines()[-2].startswith("CPU: ")
    assert text.splitlines()[-1] == (
        "NOT reproduced bit for bit on this CPU: the AUC difference is 2x the model's spread "
        "over seeds; to check the row itself, re-run it on its CPU (Other CPU 9000)"
    )
