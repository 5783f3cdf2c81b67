"""Outputs under concurrency and filesystem trouble, with real processes and real files:
two writers of one output (one wins, the other gets a one-line error naming it, never a
mix), a held run directory, manifest updates racing, a read-only folder, a write failing
midway (RLIMIT_FSIZE), symbolic links, and paths with spaces and non-ASCII characters."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adrank.artifact import update_manifest
from adrank.outputs import (
    HOLD_LOCK,
    MARKER,
    OutputDirError,
    claim_dir,
    dir_busy,
    hold_dir,
    publish_dir,
    release_dir,
)
from adrank.utils import atomic_write, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
KEEP = "the user's own file\n"

#: Builds a one-shot output in a child process and waits for the GO file before finishing.
SLOW_PUBLISH = """
import sys, time
from pathlib import Path
from adrank.outputs import publish_dir
target, ready, go = map(Path, sys.argv[1:4])
def build(tmp):
    (tmp / "a.txt").write_text("child")
    (tmp / "b.txt").write_text("child")
    ready.write_text("building")
    while not go.exists():
        time.sleep(0.02)
publish_dir(target, "prepared", build)
"""

HOLD = """
import sys, time
from pathlib import Path
from adrank.outputs import claim_dir
claim_dir(sys.argv[1], "run", hold=True)
Path(sys.argv[2]).write_text("held")
time.sleep(120)
"""

UPDATES = """
import sys
from adrank.artifact import update_manifest
for i in range(int(sys.argv[3])):
    update_manifest(sys.argv[1], {f"{sys.argv[2]}{i}": i})
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _child(script: str, *args: object, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], env=_env(), **kwargs)


def _wait_for(flag: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not flag.exists():
        assert proc.poll() is None, "the child exited early"
        assert time.monotonic() < deadline, "the child never got there"
        time.sleep(0.02)


def _build(text: str):
    def build(tmp: Path) -> None:
        (tmp / "a.txt").write_text(text)
        (tmp / "b.txt").write_text(text)

    return build


# ------------------------------------------------------------------ two writers -----
def test_two_processes_publishing_one_output_one_wins_the_other_is_refused(
    tmp_path: Path,
) -> None:
    target = tmp_path / "sp ace" / "prépared dàta"  # spaces and non-ASCII on the way
    ready, go = tmp_path / "ready", tmp_path / "go"
    proc = _child(SLOW_PUBLISH, target, ready, go)
    try:
        _wait_for(ready, proc)
        with pytest.raises(OutputDirError, match=rf"being written by another adrank process "
                           rf"\(pid {proc.pid} on ") as exc:  # fmt: skip
            publish_dir(target, "prepared", _build("parent"))
        assert "\n" not in str(exc.value)
    finally:
        go.write_text("go")
        assert proc.wait(60) == 0
    assert {p.name: p.read_text() for p in target.iterdir() if p.name != MARKER} == {
        "a.txt": "child",
        "b.txt": "child",
    }  # one complete build, not a mix
    assert sorted(p.name for p in target.parent.iterdir()) == ["prépared dàta"]  # no leftovers
    publish_dir(target, "prepared", _build("parent"))  # the lock went with the writer
    assert (target / "a.txt").read_text() == "parent"


def test_the_cli_refuses_a_second_prepare_into_an_output_being_written(tmp_path: Path) -> None:
    schema = tmp_path / "schema.yaml"
    schema.write_text("tasks: [{name: click, label: click}]\nfeatures:\n"
                      "  - {name: ad, type: categorical}\n")  # fmt: skip
    rows = "click,ad\n" + "".join(f"{i % 2},a{i % 5}\n" for i in range(40))
    for split in ("train", "valid"):
        (tmp_path / f"{split}.csv").write_text(rows)
    target, ready, go = tmp_path / "out", tmp_path / "ready", tmp_path / "go"
    proc = _child(SLOW_PUBLISH, target, ready, go)
    try:
        _wait_for(ready, proc)
        res = subprocess.run(
            [sys.executable, "-m", "adrank", "prepare", "--schema", str(schema),
             "--train", str(tmp_path / "train.csv"), "--valid", str(tmp_path / "valid.csv"),
             "--output", str(target)],
            capture_output=True, text=True, env=_env(), timeout=120,
        )  # fmt: skip
    finally:
        go.write_text("go")
        proc.wait(60)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "being written by another adrank process" in res.stderr
    assert (target / "a.txt").read_text() == "child"


def test_a_held_run_directory_is_refused_to_a_second_process_until_its_holder_dies(
    tmp_path: Path,
) -> None:
    run, held = tmp_path / "rün 1", tmp_path / "held"
    proc = _child(HOLD, run, held)
    try:
        _wait_for(held, proc)
        assert dir_busy(run) is not None and f"pid {proc.pid}" in dir_busy(run)
        with pytest.raises(OutputDirError, match=rf"another adrank process \(pid {proc.pid}"):
            claim_dir(run, "run", hold=True)
        assert claim_dir(run, "run") == run  # claiming without holding is unchanged
    finally:
        proc.send_signal(signal.SIGKILL)  # no cleanup runs: the kernel drops the lock
        proc.wait(30)
    assert dir_busy(run) is None
    assert claim_dir(run, "run", hold=True) == run
    assert hold_dir(run) == run  # holding again in the same process is a no-op
    release_dir(run)
    assert (run / HOLD_LOCK).exists() and (run / MARKER).exists()


def test_a_second_training_into_a_run_directory_being_trained_is_refused(
    tmp_path: Path,
) -> None:
    """``adrank train`` holds its run directory while it trains: two trainings into one
    directory mixed their files (config of one model, weights of the other)."""
    schema = tmp_path / "schema.yaml"
    schema.write_text("tasks: [{name: click, label: click}]\nfeatures:\n"
                      "  - {name: ad, type: categorical}\n")  # fmt: skip
    rows = "click,ad\n" + "".join(f"{i % 2},a{i % 5}\n" for i in range(40))
    for split in ("train", "valid"):
        (tmp_path / f"{split}.csv").write_text(rows)
    prepared = tmp_path / "prepared"
    subprocess.run(
        [sys.executable, "-m", "adrank", "prepare", "--schema", str(schema),
         "--train", str(tmp_path / "train.csv"), "--valid", str(tmp_path / "valid.csv"),
         "--output", str(prepared)],
        check=True, capture_output=True, env=_env(), timeout=120,
    )  # fmt: skip
    run, held = tmp_path / "run", tmp_path / "held"
    proc = _child(HOLD, run, held)  # stands in for a training in progress
    try:
        _wait_for(held, proc)
        res = subprocess.run(
            [sys.executable, "-m", "adrank", "train", "--prepared", str(prepared),
             "--model", "lr", "--run-dir", str(run), "--set", "train.max_epochs=1"],
            capture_output=True, text=True, env=_env(), timeout=120,
        )  # fmt: skip
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert f"being written by another adrank process (pid {proc.pid}" in res.stderr
    assert not (run / "model.pt").exists() and not (run / "config.yaml").exists()
    res = subprocess.run(
        [sys.executable, "-m", "adrank", "train", "--prepared", str(prepared),
         "--model", "lr", "--run-dir", str(run), "--set", "train.max_epochs=1"],
        capture_output=True, text=True, env=_env(), timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr  # the holder is gone: the directory is free
    assert (run / "model.pt").exists() and dir_busy(run) is None


def test_holding_refuses_a_users_folder_without_leaving_a_lock_file(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text(KEEP)
    with pytest.raises(OutputDirError, match="not empty and was not created by adrank"):
        claim_dir(mine, "run", hold=True)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_manifest_updates_from_two_processes_all_land(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"format_version": 2, "files": []}))
    procs = [_child(UPDATES, run, key, 40) for key in ("calibrate", "export")]
    assert [p.wait(120) for p in procs] == [0, 0]
    manifest = json.loads((run / "manifest.json").read_text())
    for key in ("calibrate", "export"):
        assert [manifest.get(f"{key}{i}") for i in range(40)] == list(range(40))  # none lost
    assert sorted(p.name for p in run.iterdir()) == ["manifest.json"]  # no lock file added
    update_manifest(run, {"more": 1})
    assert json.loads((run / "manifest.json").read_text())["more"] == 1


# -------------------------------------------------------------- write failures -----
def _fsize(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_write_failing_midway_keeps_the_previous_file_and_says_so(tmp_path: Path) -> None:
    good = tmp_path / "model.pt"
    good.write_bytes(b"previous good weights")
    script = (
        "import sys, torch\n"
        "from adrank.utils import atomic_write\n"
        "state = {'w': torch.zeros(50_000)}\n"
        "atomic_write(__import__('pathlib').Path(sys.argv[1]), lambda p: torch.save(state, p))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", script, str(good)],
        preexec_fn=_fsize(4096),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("adrank.utils.WriteError: [Errno 27] cannot write") and "model.pt" in last
    )
    assert "File too large" in last and "its previous version was kept" in last
    assert good.read_bytes() == b"previous good weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temp file


def test_a_one_shot_output_failing_midway_is_left_as_it_was(tmp_path: Path) -> None:
    target = publish_dir(tmp_path / "out", "prepared", _build("v1"))
    script = (
        "import sys\n"
        "from adrank.outputs import publish_dir, OutputDirError\n"
        "def build(tmp):\n"
        "    (tmp / 'a.txt').write_bytes(b'x' * 100_000)\n"
        "try:\n"
        "    publish_dir(sys.argv[1], 'prepared', build)\n"
        "except OutputDirError as exc:\n"
        "    print(exc)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", script, str(target)],
        preexec_fn=_fsize(10_000),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"cannot write {target}: [Errno 27] File too large")
    assert "it was left as it was" in res.stdout
    assert (target / "a.txt").read_text() == "v1" and (target / "b.txt").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_read_only_folder_is_a_one_line_error(tmp_path: Path) -> None:
    """Run without the right to write a 0555 folder (root: with CAP_DAC_OVERRIDE dropped)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    drop: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root without setpriv: a 0555 folder is writable")
        drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from adrank.outputs import claim_dir, publish_dir, OutputDirError\n"
        "from adrank.utils import atomic_write_text, WriteError\n"
        "ro = Path(sys.argv[1])\n"
        "for call in (lambda: claim_dir(ro / 'run', 'run'), lambda: claim_dir(ro, 'run'),\n"
        "             lambda: publish_dir(ro / 'out', 'prepared', lambda t: None),\n"
        "             lambda: atomic_write_text(ro / 'x.json', '{}')):\n"
        "    try:\n"
        "        call()\n"
        "    except (OutputDirError, WriteError) as exc:\n"
        "        print(type(exc).__name__, exc)\n"
    )
    try:
        res = subprocess.run(
            [*drop, sys.executable, "-c", script, str(ro)],
            capture_output=True, text=True, env=_env(), timeout=120,
        )  # fmt: skip
    finally:
        ro.chmod(0o755)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 4 and all("Permission denied" in line for line in lines), lines
    assert lines[0].startswith(f"OutputDirError cannot write {ro / 'run'}")
    assert lines[3].startswith(f"WriteError [Errno 13] cannot write {ro / 'x.json'}")
    assert list(ro.iterdir()) == []


# -------------------------------------------------------------- symbolic links -----
def test_a_symlinked_output_is_written_where_it_points_and_the_link_kept(
    tmp_path: Path,
) -> None:
    real = publish_dir(tmp_path / "disk" / "out", "prepared", _build("v1"))
    link = tmp_path / "out"
    link.symlink_to(real, target_is_directory=True)
    publish_dir(link, "prepared", _build("v2"))
    assert link.is_symlink() and (real / "a.txt").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk", "out"]
    assert sorted(p.name for p in (tmp_path / "disk").iterdir()) == ["out"]
    dangling = tmp_path / "gone"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(OutputDirError, match=r"symbolic link to .*nowhere, which is missing"):
        publish_dir(dangling, "prepared", _build("v3"))
    assert not (tmp_path / "nowhere").exists()


def test_a_link_inside_an_output_never_lets_a_write_reach_the_users_file(
    tmp_path: Path,
) -> None:
    users = tmp_path / "users_weights.pt"
    users.write_text(KEEP)
    run = claim_dir(tmp_path / "run", "run")
    (run / "model.pt").symlink_to(users)
    atomic_write(run / "model.pt", lambda p: p.write_bytes(b"new weights"))
    assert users.read_text() == KEEP  # replaced the link, not written through it
    assert (run / "model.pt").read_bytes() == b"new weights"
    # a one-shot output whose own entry became a link: replacing the output drops the link
    out = publish_dir(tmp_path / "out", "prepared", _build("v1"))
    (out / "a.txt").unlink()
    (out / "a.txt").symlink_to(users)
    publish_dir(out, "prepared", _build("v2"))
    assert users.read_text() == KEEP and (out / "a.txt").read_text() == "v2"
    atomic_write_text(run / "notes.txt", "x")
    assert users.read_text() == KEEP


def test_a_processor_link_in_a_run_directory_is_refused_and_its_target_kept(
    tmp_path: Path,
) -> None:
    """Training again into a run whose ``processor`` is a link to a folder of the user's:
    a one-line error, the folder and the link untouched, no temp folder left (it was a
    traceback, ``NotADirectoryError``, leaving ``.processor.tmp`` behind)."""
    from typer.testing import CliRunner

    from adrank.cli import app

    schema = tmp_path / "schema.yaml"
    schema.write_text("tasks: [{name: click, label: click}]\nfeatures:\n"
                      "  - {name: ad, type: categorical}\n")  # fmt: skip
    rows = "click,ad\n" + "".join(f"{i % 2},a{i % 5}\n" for i in range(60))
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.csv").write_text(rows)
    args = ["prepare", "--schema", str(schema), "--output", str(tmp_path / "data")]
    for split in ("train", "valid", "test"):
        args += [f"--{split}", str(tmp_path / f"{split}.csv")]
    assert CliRunner().invoke(app, args).exit_code == 0
    run = tmp_path / "run"
    train = ["train", "--prepared", str(tmp_path / "data"), "--model", "lr", "--run-dir",
             str(run), "--set", "train.max_epochs=1", "--set", "train.num_threads=1"]  # fmt: skip
    assert CliRunner().invoke(app, train).exit_code == 0
    users = tmp_path / "users_processor"
    users.mkdir()
    (users / "notes.txt").write_text(KEEP)
    shutil.rmtree(run / "processor")
    (run / "processor").symlink_to(users, target_is_directory=True)
    res = CliRunner().invoke(app, [*train, "--overwrite"])
    assert res.exit_code == 1
    assert "processor is a symbolic link" in res.output and "Traceback" not in res.output
    assert (run / "processor").is_symlink() and sorted(p.name for p in users.iterdir()) == [
        "notes.txt"
    ]
    assert (users / "notes.txt").read_text() == KEEP
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


def test_a_link_at_a_lock_files_name_is_never_written_through(tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    users.write_text(KEEP)
    run = claim_dir(tmp_path / "run", "run")
    (run / HOLD_LOCK).symlink_to(users)
    with pytest.raises(OutputDirError, match=r"cannot write .*run: \[Errno 40\]"):
        claim_dir(run, "run", hold=True)
    (tmp_path / ".out.adrank-lock").symlink_to(users)
    with pytest.raises(OutputDirError, match=r"cannot write .*out: \[Errno 40\]"):
        publish_dir(tmp_path / "out", "prepared", _build("v1"))
    assert users.read_text() == KEEP and not (tmp_path / "out").exists()
