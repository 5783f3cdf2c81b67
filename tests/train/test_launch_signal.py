"""SIGTERM to ``adrank train --nproc 2``: real workers, one line, the resume hint.

Before, the launcher's ``SignalException`` surfaced as a 40-line traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from adrank.data.prepare import PreparedData
from tests.test_bench_verify import prepared  # noqa: F401 (module-scoped tiny data)


def test_sigterm_to_a_distributed_training_is_one_line_and_says_how_to_resume(
    prepared: PreparedData,  # noqa: F811
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    argv = [
        sys.executable, "-m", "adrank", "train", "--model", "lr", "--prepared",
        str(prepared.directory), "--run-dir", str(run), "--nproc", "2",
        "--set", "train.max_epochs=400", "--set", "train.patience=400",
        "--set", "train.batch_size=64", "--set", "train.num_threads=1",
    ]  # fmt: skip
    env = os.environ | {"COLUMNS": "200"}
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.monotonic() + 180
    while not (run / "checkpoint.pt").exists():  # an epoch finished: there is a checkpoint
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no epoch finished in 180 s"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, (out, err)
    assert "interrupted by SIGTERM: the workers were stopped" in err
    assert "rerun with --resume to continue from the last checkpoint" in err
    assert "Traceback" not in out + err
