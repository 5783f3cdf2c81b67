"""Nothing of the user's is ever deleted: a foreign file in each target adrank writes (run
directory, prepared data, model export, dataset export, benchmark output, prediction
output) survives, and adrank's own outputs are still replaced or resumed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from adrank.bench.runner import claim_benchmark_dir
from adrank.cli import app
from adrank.data.export import export_splits
from adrank.data.schema import CategoricalFeature, NumericFeature, Schema
from adrank.outputs import MARKER, OutputDirError, read_marker

SCHEMA = """
tasks: [{name: click, label: click}]
transforms:
  - {name: hour_of_day, fn: substring, input: hour, start: 6, length: 2}
  - {name: weekday, fn: datetime_part, input: hour, format: "%y%m%d%H", part: weekday}
  - {name: views, fn: log_square_bucket, input: views}
features:
  - {name: ad, type: categorical}
  - {name: hour_of_day, type: categorical}
  - {name: weekday, type: categorical}
  - {name: views, type: categorical}
"""
FAST = ["--set", "train.max_epochs=1", "--set", "train.num_threads=1",
        "--set", "train.batch_size=64"]  # fmt: skip
KEEP = "the user's own file"


def _csv(path: Path, n: int, header: bool = True) -> Path:
    lines = ["click,ad,hour,views"] if header else []
    for i in range(n):
        lines.append(f"{int(i % 3 == 0)},a{i % 7},141021{i % 24:02d},{'' if i % 9 == 0 else i}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run trained through the CLI on raw rows with declared transforms."""
    tmp = tmp_path_factory.mktemp("safety")
    (tmp / "schema.yaml").write_text(SCHEMA)
    args = ["prepare", "--schema", str(tmp / "schema.yaml"), "--output", str(tmp / "data")]
    for split, n in (("train", 300), ("valid", 60), ("test", 60)):
        args += [f"--{split}", str(_csv(tmp / f"{split}.csv", n))]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    out = tmp / "run"
    res = CliRunner().invoke(
        app,
        ["train", "--prepared", str(tmp / "data"), "--model", "lr", "--run-dir", str(out), *FAST],
    )
    assert res.exit_code == 0, res.output
    return out


def _keep(folder: Path, name: str = "notes.txt") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(KEEP)
    return folder / name


def test_train_into_a_folder_of_the_users_is_refused(run: Path, tmp_path: Path) -> None:
    notes = _keep(tmp_path / "mine")
    res = CliRunner().invoke(
        app,
        ["train", "--prepared", str(run.parent / "data"), "--model", "lr", "--run-dir",
         str(tmp_path / "mine"), *FAST],
    )  # fmt: skip
    assert res.exit_code != 0 and "not created by adrank" in res.output
    assert notes.read_text() == KEEP and sorted(p.name for p in notes.parent.iterdir()) == [
        "notes.txt"
    ]


def test_train_overwrite_restarts_a_finished_run_and_keeps_foreign_files(
    run: Path, tmp_path: Path
) -> None:
    data = str(run.parent / "data")
    out = tmp_path / "run"
    train = ["train", "--prepared", data, "--model", "lr", "--run-dir", str(out), *FAST]
    assert CliRunner().invoke(app, train).exit_code == 0
    notes = _keep(out, "analysis.ipynb")
    res = CliRunner().invoke(app, train)
    assert res.exit_code != 0 and "--overwrite" in res.output  # a finished run is kept
    res = CliRunner().invoke(app, [*train, "--overwrite"])
    assert res.exit_code == 0, res.output
    assert notes.read_text() == KEEP and (out / "manifest.json").exists()
    assert not (out / ".adrank-replaced").exists()  # the replaced run is gone once done
    res = CliRunner().invoke(app, [*train, "--overwrite", "--resume"])
    assert res.exit_code != 0 and "at most one of --resume" in res.output


def test_train_overwrite_that_fails_puts_the_earlier_run_back(run: Path, tmp_path: Path) -> None:
    """--overwrite takes effect only when the new run finishes: a run that diverges (a real
    failure mid-training) leaves the earlier finished run exactly as it was."""
    out = tmp_path / "run"
    train = ["train", "--prepared", str(run.parent / "data"), "--model", "lr", "--run-dir",
             str(out), *FAST]  # fmt: skip
    assert CliRunner().invoke(app, train).exit_code == 0
    before = {
        p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".adrank.lock"
    }
    res = CliRunner().invoke(app, [*train, "--overwrite", "--set", "train.learning_rate=1e38"])
    assert res.exit_code != 0 and "loss is nan" in res.output
    assert "put back" in res.output
    after = {
        p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".adrank.lock"
    }
    assert after == before and (out / "processor" / "processor.json").is_file()
    assert not (out / ".adrank-replaced").exists()
    from adrank.serve.predictor import Predictor

    assert Predictor.load(out) is not None  # the earlier run still loads


def test_model_export_keeps_foreign_files_and_writes_the_manifest_last(
    run: Path, tmp_path: Path
) -> None:
    notes = _keep(run, "my_notes.txt")
    try:
        res = CliRunner().invoke(app, ["export", str(run), "--format", "torchscript"])
        assert res.exit_code == 0, res.output
        manifest = json.loads((run / "manifest.json").read_text())
        assert "model.torchscript.pt" in manifest["files"] and "torchscript" in manifest["exports"]
        assert notes.read_text() == KEEP
        assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    finally:
        notes.unlink()


def test_predict_output_never_replaces_a_users_file(run: Path, tmp_path: Path) -> None:
    raw = run.parent / "test.csv"
    out = tmp_path / "scored.csv"
    out.write_text(KEEP)
    predict = ["predict", str(run), "--input", str(raw), "--output", str(out)]
    res = CliRunner().invoke(app, predict)
    assert res.exit_code != 0 and "already exists" in res.output and "--overwrite" in res.output
    assert out.read_text() == KEEP
    res = CliRunner().invoke(app, ["predict", str(run), "--input", str(raw), "--output",
                                   str(raw), "--overwrite"])  # fmt: skip
    assert res.exit_code != 0 and "is the input file" in res.output
    assert CliRunner().invoke(app, [*predict, "--overwrite"]).exit_code == 0
    scored = pl.read_csv(out)
    assert scored.height == 60 and "pctr" in scored.columns
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scored.csv"]  # no temp leftovers


def test_predict_reads_headerless_raw_rows_with_columns_and_separator(
    run: Path, tmp_path: Path
) -> None:
    """Raw rows (the transform inputs ``hour`` and ``views``, not the derived columns) as
    people have them: no header, another separator; the scores equal the header CSV's."""
    ref = tmp_path / "ref.csv"
    res = CliRunner().invoke(
        app, ["predict", str(run), "--input", str(run.parent / "test.csv"), "--output", str(ref)]
    )
    assert res.exit_code == 0, res.output
    frame = pl.read_csv(run.parent / "test.csv", infer_schema=False)
    bare = tmp_path / "bare.txt"
    frame.write_csv(bare, separator="|", include_header=False)
    out = tmp_path / "bare_scored.csv"
    base = ["predict", str(run), "--input", str(bare), "--output", str(out)]
    res = CliRunner().invoke(app, [*base, "--separator", "|"])
    assert res.exit_code != 0 and "--columns" in res.output  # first line is data: say so
    cols = ["--columns", ",".join(frame.columns), "--separator", "|"]
    res = CliRunner().invoke(app, [*base, "--header", "no", *cols])
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(pl.read_csv(out)["pctr"], pl.read_csv(ref)["pctr"], atol=1e-9)
    res = CliRunner().invoke(app, [*base, *cols, "--overwrite"])  # auto: the line is data
    assert res.exit_code == 0, res.output


def test_dataset_export_is_published_and_never_over_foreign_files(tmp_path: Path) -> None:
    schema = Schema(
        labels=("y",), features=(CategoricalFeature("a"), NumericFeature("b")), name="toy"
    )
    split = pl.DataFrame({"y": [0, 1], "a": ["x", "z"], "b": [1.0, 2.0]})
    mine = tmp_path / "mine"
    notes = _keep(mine)
    with pytest.raises(OutputDirError, match="not created by adrank"):
        export_splits({"test": split}, schema, mine)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"] and notes.read_text() == KEEP
    out = tmp_path / "export"
    paths = export_splits({"train": split, "test": split}, schema, out)
    assert paths["test"] == out.absolute() / "test.csv" and read_marker(out) is not None
    export_splits({"test": split.head(1)}, schema, out)  # an earlier export is replaced
    assert pl.read_csv(out / "test.csv").height == 1 and not (out / "train.csv").exists()
    notes = _keep(out)
    with pytest.raises(OutputDirError, match="did not write there"):
        export_splits({"test": split}, schema, out)
    assert notes.read_text() == KEEP and pl.read_csv(out / "test.csv").height == 1
    legacy = tmp_path / "legacy"  # an export written before markers existed
    legacy.mkdir()
    (legacy / "test.csv").write_text("y,a,b\n")
    export_splits({"test": split}, schema, legacy)
    assert pl.read_csv(legacy / "test.csv").height == 2


@pytest.mark.integration
def test_datasets_export_cli_on_real_rows(data_dir: Path, tmp_path: Path) -> None:
    """``adrank datasets export criteo``: raw integers (the bucketing is a declared
    transform), never into a folder of the user's, and over its own earlier export."""
    notes = _keep(tmp_path / "mine")
    env = {"ADRANK_DATA_DIR": str(data_dir)}
    base = ["datasets", "export", "criteo", "--no-download", "--output"]
    res = CliRunner().invoke(app, [*base, str(tmp_path / "mine")], env=env)
    assert res.exit_code != 0 and "not created by adrank" in res.output
    assert sorted(p.name for p in notes.parent.iterdir()) == ["notes.txt"]
    for _ in range(2):
        res = CliRunner().invoke(app, [*base, str(tmp_path / "out")], env=env)
        assert res.exit_code == 0, res.output
    test = pl.read_csv(tmp_path / "out" / "test.csv", infer_schema=False)
    assert test.height == 391 and test["I1"].null_count() > 0  # raw: missing stays missing


def test_prepare_and_export_refuse_a_bad_output_before_reading_input(tmp_path: Path) -> None:
    """The output is checked first: with an input that cannot be read (a missing training
    file, absent dataset files), the error is still the output's, so a bad --output never
    costs the reading and processing of a large input."""
    (tmp_path / "schema.yaml").write_text(SCHEMA)
    blocker = tmp_path / "a_file"
    blocker.write_text(KEEP)
    notes = _keep(tmp_path / "mine")
    missing = str(tmp_path / "missing.csv")
    for output, reason in ((blocker / "data", "is a file, not a folder"),
                           (notes.parent, "not created by adrank")):  # fmt: skip
        res = CliRunner().invoke(
            app,
            ["prepare", "--schema", str(tmp_path / "schema.yaml"), "--train", missing,
             "--output", str(output)],
        )  # fmt: skip
        assert res.exit_code != 0 and reason in " ".join(res.output.split()), res.output
        res = CliRunner().invoke(
            app,
            ["datasets", "export", "criteo", "--no-download", "--data-dir",
             str(tmp_path / "nodata"), "--output", str(output)],
        )  # fmt: skip
        assert res.exit_code != 0 and reason in " ".join(res.output.split()), res.output
    assert blocker.read_text() == KEEP and sorted(p.name for p in notes.parent.iterdir()) == [
        "notes.txt"
    ]
    assert not (tmp_path / "nodata").exists()


def test_benchmark_dir_claims_adopts_legacy_results_and_refuses_foreign(tmp_path: Path) -> None:
    new = claim_benchmark_dir(tmp_path / "bench")
    assert read_marker(new)["kind"] == "benchmark"
    assert claim_benchmark_dir(new) == new  # resumable
    legacy = tmp_path / "frappe"  # benchmarks/results/frappe as committed before markers
    legacy.mkdir()
    for name in ("runs.jsonl", "leaderboard.md", "leaderboard.csv", "tuning_x_h100.jsonl",
                 "dropout_ab.md"):  # fmt: skip
        (legacy / name).write_text("{}")
    (legacy / "runs").mkdir()
    claim_benchmark_dir(legacy)
    assert (legacy / MARKER).exists() and (legacy / "runs.jsonl").read_text() == "{}"
    mine = tmp_path / "mine"
    _keep(mine)
    (mine / "runs.jsonl").write_text("{}")
    with pytest.raises(OutputDirError, match="not created by adrank"):
        claim_benchmark_dir(mine)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt", "runs.jsonl"]


@pytest.mark.parametrize(
    "name",
    [
        "frappe", "frappe_funnel", "movielens_100k", "movielens_100k_nohist", "sequences",
        "multidomain/movielens_100k_domains_thin/pooled",
    ],
)  # fmt: skip
def test_committed_leaderboards_resume_from_a_fresh_clone(tmp_path: Path, name: str) -> None:
    """A clean clone has no markers: `adrank benchmark --output benchmarks/results/NAME`
    (the README's reproduce command) must still accept every file committed there."""
    import shutil
    import subprocess

    root = Path(__file__).resolve().parent.parent
    committed = subprocess.run(
        ["git", "-C", str(root), "ls-files", f"benchmarks/results/{name}"],
        capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip
    if not committed:
        pytest.skip("not a git checkout")
    copy = tmp_path / name
    for rel in committed:
        target = copy / Path(rel).relative_to(f"benchmarks/results/{name}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel, target)
    claim_benchmark_dir(copy)
    assert (copy / MARKER).exists()


def test_benchmark_cli_refuses_a_folder_of_the_users(tmp_path: Path) -> None:
    notes = _keep(tmp_path / "mine")
    res = CliRunner().invoke(
        app,
        ["benchmark", "--dataset", "frappe", "--models", "lr", "--seeds", "1", "--output",
         str(tmp_path / "mine")],
    )  # fmt: skip
    assert res.exit_code != 0 and "not created by adrank" in res.output
    assert sorted(p.name for p in notes.parent.iterdir()) == ["notes.txt"]


def test_nproc_launcher_passes_overwrite_to_the_workers(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import adrank.train.launch as launch

    seen: list[list[str]] = []
    monkeypatch.setattr(launch, "launch_cli", lambda nproc, argv: seen.append(argv))
    train = ["train", "--prepared", str(run.parent / "data"), "--model", "lr", "--run-dir",
             str(run), "--nproc", "2", *FAST]  # fmt: skip
    res = CliRunner().invoke(app, train)
    assert res.exit_code != 0 and "already holds a finished run" in res.output and not seen
    res = CliRunner().invoke(app, [*train, "--overwrite"])
    assert res.exit_code == 0, res.output
    assert "--overwrite" in seen[0] and "--resume" not in seen[0]


def test_a_failed_distributed_training_says_whether_to_resume(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failure message said "rerun with --resume" even when no epoch had finished (and
    --resume then started from scratch); the CLI now looks for the run's checkpoint."""
    import adrank.train.launch as launch

    def failed(nproc: int, argv: list[str]) -> None:
        raise launch.DistributedTrainingError("distributed training failed: rank 1", 1, 13)

    monkeypatch.setattr(launch, "launch_cli", failed)
    fresh = tmp_path / "fresh"
    train = ["train", "--prepared", str(run.parent / "data"), "--model", "lr", "--nproc", "2",
             *FAST]  # fmt: skip
    res = CliRunner().invoke(app, [*train, "--run-dir", str(fresh)])
    assert res.exit_code == 1 and "nothing to resume" in res.output, res.output
    (fresh / "checkpoint.pt").parent.mkdir(exist_ok=True)
    (fresh / "checkpoint.pt").write_bytes(b"an epoch's checkpoint")
    res = CliRunner().invoke(app, [*train, "--run-dir", str(fresh), "--resume"])
    assert res.exit_code == 1 and "rerun with --resume to continue" in res.output, res.output


@pytest.mark.parametrize("mine", ["processor/notes.txt", "config.yaml"])
def test_training_never_adopts_a_users_folder_named_like_run_files(
    run: Path, tmp_path: Path, mine: str
) -> None:
    """An unmarked folder holding only names a run writes (a user's ``processor/`` or
    ``config.yaml``) was adopted as a run from before output markers, and training then
    replaced the user's ``processor/`` folder or overwrote their ``config.yaml``."""
    folder = tmp_path / "mine"
    (folder / mine).parent.mkdir(parents=True, exist_ok=True)
    (folder / mine).write_text(KEEP_TEXT)
    res = CliRunner().invoke(
        app, ["train", "--prepared", str(run.parent / "data"), "--model", "lr", "--run-dir",
              str(folder), *FAST],
    )  # fmt: skip
    assert res.exit_code == 1 and "not created by adrank" in res.output, res.output
    assert (folder / mine).read_text() == KEEP_TEXT
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert files == [mine]  # nothing added (no marker, no lock), nothing replaced


KEEP_TEXT = "the user's own file\n"


def test_a_train_refused_after_claiming_a_new_run_dir_leaves_nothing(
    run: Path, tmp_path: Path
) -> None:
    """A setting refused once the folder is claimed (an unknown model parameter) used to
    leave a new run directory holding only adrank's marker and lock."""
    out = tmp_path / "runs" / "t1"
    res = CliRunner().invoke(
        app,
        ["train", "--prepared", str(run.parent / "data"), "--model", "lr", "--run-dir",
         str(out), *FAST, "--set", "params.foo=1"],
    )  # fmt: skip
    assert res.exit_code != 0 and "foo" in res.output
    assert not out.exists()
    existing = tmp_path / "mine"  # a folder that existed before is left as it was
    existing.mkdir()
    res = CliRunner().invoke(
        app,
        ["train", "--prepared", str(run.parent / "data"), "--model", "lr", "--run-dir",
         str(existing), *FAST, "--set", "params.foo=1"],
    )  # fmt: skip
    assert res.exit_code != 0 and existing.is_dir()
