"""Output directories never destroy what the user owns (markers, one-shot swaps, run dirs)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from adrank.outputs import MARKER, OutputDirError, claim_dir, publish_dir, read_marker
from adrank.pipeline import REPLACED, discard_replaced, prepare_run_dir, settle_replaced


def write_result(name: str, text: str):
    def build(tmp: Path) -> None:
        (tmp / name).write_text(text)

    return build


def test_claim_creates_adopts_empty_and_refuses_foreign(tmp_path: Path) -> None:
    new = claim_dir(tmp_path / "a" / "run", "run")
    assert read_marker(new)["kind"] == "run"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert claim_dir(empty, "run") == empty and (empty / MARKER).exists()
    assert claim_dir(new, "run") == new  # reuse (resumable)
    with pytest.raises(OutputDirError, match="adrank 'run' output, not a 'benchmark'"):
        claim_dir(new, "benchmark")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(OutputDirError, match=r"not empty and was not created by adrank.*notes"):
        claim_dir(mine, "run")
    assert (mine / "notes.txt").read_text() == "keep me"
    assert not (mine / MARKER).exists()


def test_publish_swaps_in_place_and_never_deletes_foreign_files(tmp_path: Path) -> None:
    target = tmp_path / "prepared"
    publish_dir(target, "prepared", write_result("train.parquet", "v1"))
    assert (target / "train.parquet").read_text() == "v1"
    assert read_marker(target)["entries"] == ["train.parquet"]
    publish_dir(target, "prepared", write_result("train.parquet", "v2"))  # replace own output
    assert (target / "train.parquet").read_text() == "v2"
    (target / "notes.txt").write_text("keep me")  # the user adds a file of their own
    with pytest.raises(OutputDirError, match=r"files adrank did not write there: \['notes.txt'\]"):
        publish_dir(target, "prepared", write_result("train.parquet", "v3"))
    assert (target / "notes.txt").read_text() == "keep me"
    assert (target / "train.parquet").read_text() == "v2"
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]  # no temp leftovers


def test_published_dir_gets_umask_permissions_not_mkdtemps_0700(tmp_path: Path) -> None:
    mask = os.umask(0o022)  # reading the umask means setting it
    os.umask(mask)
    target = publish_dir(tmp_path / "out", "prepared", write_result("a.txt", "x"))
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~mask  # not mkdtemp's 0o700


def test_publish_into_the_working_directory_is_refused(tmp_path: Path, monkeypatch) -> None:
    """The data-loss finding: ``--output .`` in a folder with the user's files."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("keep me")
    (tmp_path / "train.csv").write_text("y,x\n1,a\n")
    with pytest.raises(OutputDirError, match="not created by adrank"):
        publish_dir(Path("."), "prepared", write_result("train.parquet", "x"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "train.csv"]


def test_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    def broken(tmp: Path) -> None:
        (tmp / "half.parquet").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        publish_dir(tmp_path / "out", "export", broken)
    assert list(tmp_path.iterdir()) == []


def test_run_dir_with_checkpoint_needs_resume_or_overwrite(tmp_path: Path) -> None:
    run = claim_dir(tmp_path / "run", "run")
    (run / "checkpoint.pt").write_text("ckpt")
    (run / "my_analysis.ipynb").write_text("user file")
    with pytest.raises(OutputDirError, match="--resume to continue it or --overwrite"):
        prepare_run_dir(run, resume=False, overwrite=False)
    prepare_run_dir(run, resume=True, overwrite=False)
    assert (run / "checkpoint.pt").exists()
    prepare_run_dir(run, resume=False, overwrite=True)
    assert not (run / "checkpoint.pt").exists()
    assert (run / "my_analysis.ipynb").read_text() == "user file"  # only run files removed


def _fake_run(run: Path, tag: str) -> None:
    for name in ("manifest.json", "model.pt", "checkpoint.pt"):
        (run / name).write_text(tag)
    (run / "processor").mkdir()
    (run / "processor" / "processor.json").write_text(tag)


def test_overwrite_parks_the_earlier_run_and_a_failure_puts_it_back(tmp_path: Path) -> None:
    run = claim_dir(tmp_path / "run", "run")
    _fake_run(run, "old")
    (run / "notes.txt").write_text("user file")
    assert prepare_run_dir(run, resume=False, overwrite=True)
    assert sorted(p.name for p in (run / REPLACED).iterdir()) == [
        "checkpoint.pt", "manifest.json", "model.pt", "processor",
    ]  # fmt: skip
    assert not (run / "model.pt").exists() and (run / "notes.txt").exists()
    (run / "checkpoint.pt").write_text("new")
    (run / "metrics.jsonl").write_text("new")
    settle_replaced(run, OSError(28, "No space left on device"))
    assert (run / "model.pt").read_text() == "old" and (run / "checkpoint.pt").read_text() == "old"
    assert (run / "processor" / "processor.json").read_text() == "old"
    assert not (run / "metrics.jsonl").exists() and not (run / REPLACED).exists()
    assert (run / "notes.txt").read_text() == "user file"


def test_interrupted_overwrite_keeps_both_runs_until_one_finishes(tmp_path: Path) -> None:
    run = claim_dir(tmp_path / "run", "run")
    _fake_run(run, "old")
    prepare_run_dir(run, resume=False, overwrite=True)
    (run / "checkpoint.pt").write_text("new")
    settle_replaced(run, KeyboardInterrupt())  # Ctrl-C / SIGTERM: the new run is resumable
    assert (run / "checkpoint.pt").read_text() == "new"
    assert (run / REPLACED / "model.pt").read_text() == "old"
    with pytest.raises(OutputDirError, match="the run it replaced is kept in"):
        prepare_run_dir(run, resume=False, overwrite=False)
    # overwriting again replaces the unfinished run and keeps the finished one aside
    assert prepare_run_dir(run, resume=False, overwrite=True)
    assert not (run / "checkpoint.pt").exists()
    assert (run / REPLACED / "model.pt").read_text() == "old"
    # a finished run beside a stale parked one (its swap was cut short) supersedes it
    _fake_run(run, "newer")
    prepare_run_dir(run, resume=False, overwrite=True)
    assert (run / REPLACED / "model.pt").read_text() == "newer"
    discard_replaced(run)  # the new run finished
    assert not (run / REPLACED).exists()


def test_run_dirs_from_before_markers_are_adopted(tmp_path: Path) -> None:
    legacy = tmp_path / "old-run"
    legacy.mkdir()
    (legacy / "checkpoint.pt").write_text("ckpt")
    (legacy / "metrics.jsonl").write_text("{}")
    prepare_run_dir(legacy, resume=True, overwrite=False)
    assert read_marker(legacy)["kind"] == "run"
