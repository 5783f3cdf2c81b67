"""Claims of the model store with real processes: a publisher killed with SIGKILL
mid-publish no longer costs its version number forever (its stale claim and temporary
directory are removed by the next publisher), claims that may still be live are never
taken, publishers racing over a stale claim still get distinct numbers, a reader following
``latest`` during publishes never sees half a version, and a publish that cannot write
fails in one line leaving the store as it was."""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from adrank.artifact import read_manifest
from adrank.serve import model_store
from adrank.serve.model_root import ModelRoot
from adrank.serve.model_store import latest_version, versions

ROOT = Path(__file__).resolve().parents[2]
ADRANK = [sys.executable, "-m", "adrank"]

#: A publisher whose copy stops after the first file (a flag file says so) until killed.
STUCK_PUBLISHER = """
import shutil, sys, time
from pathlib import Path
from adrank.serve import model_store
real = shutil.copy2
def stuck(src, dst, *args, **kwargs):
    real(src, dst, *args, **kwargs)
    Path(sys.argv[3]).write_text("copying")
    time.sleep(120)
model_store.shutil.copy2 = stuck
model_store.publish(sys.argv[1], sys.argv[2], check=False)
"""

PUBLISHER = """
import sys
from adrank.serve.model_store import publish
print(publish(sys.argv[1], sys.argv[2], check=False).version)
"""


def publish(run: Path, store: Path, *args: Any, **kwargs: Any) -> Any:
    """The store's publish without the model check: the runs here are stand-ins (a
    manifest and the files it lists), which is all numbering, claims and copying need."""
    return model_store.publish(run, store, *args, check=False, **kwargs)


def stand_in_run(path: Path, payload: int = 1000) -> Path:
    """A finished run directory as the store sees it: a manifest and the files it lists."""
    path.mkdir(parents=True)
    (path / "weights.bin").write_bytes(os.urandom(payload))
    (path / "manifest.json").write_text(json.dumps({"format_version": 2, "files": ["weights.bin"]}))
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _stuck_publisher(run: Path, store: Path, flag: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", STUCK_PUBLISHER, str(run), str(store), str(flag)], env=_env()
    )
    deadline = time.monotonic() + 60
    while not flag.exists():
        assert proc.poll() is None, "the publisher exited before copying"
        assert time.monotonic() < deadline, "the publisher never started copying"
        time.sleep(0.05)
    return proc


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_publisher_killed_mid_publish_does_not_cost_its_number(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run, store = stand_in_run(tmp_path / "run"), tmp_path / "store"
    model = store / "default"
    proc = _stuck_publisher(run, store, tmp_path / "copying")
    claim = json.loads((model / ".1.claim").read_text())
    assert claim["pid"] == proc.pid and claim["host"] == socket.gethostname()
    assert list(model.glob(".1.*.tmp"))  # its half-made version
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    with caplog.at_level(logging.WARNING, logger="adrank.serve.model_store"):
        done = publish(run, store)
    assert (done.version, done.latest) == (1, 1)  # was 2: number 1 skipped forever
    assert versions(model) == [1] and latest_version(model) == 1
    assert not list(model.glob(".*.claim")) and not list(model.glob(".*.tmp"))
    assert f"pid {proc.pid}" in caplog.text and "version 1 is free again" in caplog.text
    assert publish(run, store).version == 2


def test_a_claim_of_a_running_publisher_is_never_taken(tmp_path: Path) -> None:
    run, store = stand_in_run(tmp_path / "run"), tmp_path / "store"
    model = store / "default"
    proc = _stuck_publisher(run, store, tmp_path / "copying")
    try:
        assert publish(run, store).version == 2  # 1 is claimed by a live publisher
        assert (model / ".1.claim").exists() and list(model.glob(".1.*.tmp"))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert publish(run, store).version == 3  # the dead claim 1 is cleared, not reused
    assert versions(model) == [2, 3] and latest_version(model) == 3
    assert not list(model.glob(".*.claim")) and not list(model.glob(".*.tmp"))


@pytest.mark.parametrize(
    "claim",
    [
        pytest.param(lambda: json.dumps({"pid": _dead_pid(), "host": "elsewhere"}), id="host"),
        pytest.param(
            lambda: json.dumps({"pid": os.getppid(), "host": socket.gethostname()}), id="live-pid"
        ),
        pytest.param(lambda: f"{_dead_pid()}\n", id="pid-only"),  # written by older adrank
        pytest.param(lambda: "", id="empty"),  # a publisher between create and write
    ],
)
def test_claims_that_may_be_live_are_kept(tmp_path: Path, claim) -> None:
    run, store = stand_in_run(tmp_path / "run"), tmp_path / "store"
    publish(run, store)
    model = store / "default"
    text = claim()
    (model / ".2.claim").write_text(text)
    assert publish(run, store).version == 3
    assert (model / ".2.claim").read_text() == text


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_claim_whose_pid_now_belongs_to_a_newer_process_is_stale(tmp_path: Path) -> None:
    """The dead publisher's pid was given to a process that started after the claim."""
    run, store = stand_in_run(tmp_path / "run"), tmp_path / "store"
    publish(run, store)
    model = store / "default"
    reused = {"pid": os.getppid(), "host": socket.gethostname(), "created": 1_000_000.0}
    (model / ".2.claim").write_text(json.dumps(reused))
    assert publish(run, store).version == 2
    assert not list(model.glob(".*.claim"))


def test_publishers_racing_over_a_stale_claim_get_distinct_numbers(tmp_path: Path) -> None:
    run, store = stand_in_run(tmp_path / "run"), tmp_path / "store"
    publish(run, store)
    model = store / "default"
    stale = {"pid": _dead_pid(), "host": socket.gethostname(), "created": 0}
    (model / ".2.claim").write_text(json.dumps(stale))
    (model / ".2.abcdefgh.tmp").mkdir(mode=0o555)  # what the dead publisher had copied
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PUBLISHER, str(run), str(store)],
            env=_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    got = sorted(int(p.communicate(timeout=120)[0]) for p in procs)
    assert all(p.returncode == 0 for p in procs)
    assert got == [2, 3, 4] and versions(model) == [1, 2, 3, 4]
    assert latest_version(model) == 4
    assert not list(model.glob(".*.claim")) and not list(model.glob(".*.tmp"))


def test_a_reader_following_latest_never_sees_half_a_version(tmp_path: Path) -> None:
    run, store = stand_in_run(tmp_path / "run", payload=4 << 20), tmp_path / "store"
    publish(run, store)
    loop = PUBLISHER.replace("print(", "[print(") + " for _ in range(8)]"
    proc = subprocess.Popen([sys.executable, "-c", loop, str(run), str(store)], env=_env())
    root, seen, reads = ModelRoot(store), [1], 0
    try:
        while proc.poll() is None or reads == 0:
            served = root.resolve("default")
            manifest = read_manifest(served)  # every listed file is there
            assert (served / "weights.bin").stat().st_size == 4 << 20 and manifest["files"]
            number = int(served.name)
            assert number >= seen[-1]  # latest only moves forward
            seen.append(number)
            reads += 1
    finally:
        proc.wait(120)
    assert proc.returncode == 0 and reads > 0
    assert latest_version(store / "default") == 9 and versions(store / "default")[-1] == 9


def test_a_publish_that_cannot_write_fails_in_one_line_and_changes_nothing(
    tmp_path: Path, synthetic_runs: Any
) -> None:
    small = stand_in_run(tmp_path / "small")
    big = synthetic_runs.run_a  # a real run: `adrank publish` checks that the model loads
    cap = (big / "model.pt").stat().st_size // 2
    store = tmp_path / "store"
    publish(small, store)

    def limit() -> None:  # writes past the cap fail with EFBIG (disk full, as far as we care)
        resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))

    res = subprocess.run(
        [*ADRANK, "publish", str(big), "--store", str(store)],
        preexec_fn=limit,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert "cannot publish" in res.stderr and "nothing was published" in res.stderr
    model = store / "default"
    assert versions(model) == [1] and latest_version(model) == 1
    assert not list(model.glob(".*.claim")) and not list(model.glob(".*.tmp"))
    assert publish(big, store).version == 2  # the number was not lost either


def test_cli_says_each_publish_and_rollback_once(tmp_path: Path, synthetic_runs: Any) -> None:
    """``adrank publish`` printed its line and then the store's INFO log line saying the
    same; the store still logs it for code that publishes (and restores its level)."""
    store = tmp_path / "store"
    for run in (synthetic_runs.run_a, synthetic_runs.run_b):
        res = subprocess.run([*ADRANK, "publish", str(run), "--store", str(store)],
                             capture_output=True, text=True, env=_env(), timeout=120)  # fmt: skip
        assert res.returncode == 0, res.stderr
        assert (res.stdout + res.stderr).count("published") == 1, res.stdout + res.stderr
    res = subprocess.run([*ADRANK, "rollback", "--store", str(store), "--to", "1"],
                         capture_output=True, text=True, env=_env(), timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert (res.stdout + res.stderr).count("latest 2 -> 1") == 1, res.stdout + res.stderr


def test_publish_warns_when_the_new_version_drops_the_calibration(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A warm-started run carries no calibration.json: published over a calibrated latest,
    the served pCTR changed scale (0.79 -> 0.51 on one request) without a word."""
    calibrated = stand_in_run(tmp_path / "calibrated")
    (calibrated / "calibration.json").write_text("{}")
    manifest = json.loads((calibrated / "manifest.json").read_text())
    manifest["files"].append("calibration.json")
    (calibrated / "manifest.json").write_text(json.dumps(manifest))
    store = tmp_path / "store"
    with caplog.at_level(logging.WARNING, logger="adrank.serve.model_store"):
        publish(calibrated, store)
        assert "calibrated" not in caplog.text
        publish(stand_in_run(tmp_path / "plain"), store)
    assert "is not calibrated, but default's latest version is" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="adrank.serve.model_store"):
        publish(stand_in_run(tmp_path / "plain2"), store)  # the latest is plain now
    assert "calibrated" not in caplog.text
