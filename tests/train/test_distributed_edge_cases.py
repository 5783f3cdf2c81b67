"""Edge cases of ``adrank train --nproc N`` and :func:`adrank.train.launch.launch`: the
collective timeout set by the user, invalid timeouts, and the error a failing worker leaves.
Real worker processes (tiny ones: ``python -c`` or a module-level function, gloo on CPU)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from adrank.train.distributed import TIMEOUT_ENV, init_distributed
from adrank.train.launch import DistributedTrainingError, launch

pytestmark = pytest.mark.slow


def failing_rank_1_worker() -> str:
    """Rank 1 fails before joining; rank 0 joins and would wait for it."""
    if os.environ["RANK"] == "1":
        raise ValueError("bad config on rank 1")
    init_distributed()
    return "unreachable"


def test_user_timeout_env_reaches_the_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`adrank train --nproc N` launches an executable; $ADRANK_DIST_TIMEOUT_S set by the
    user must reach its workers instead of being replaced by the default."""
    monkeypatch.setenv(TIMEOUT_ENV, "7")
    script = (
        "import os, pathlib; "
        f"pathlib.Path({str(tmp_path)!r}, 'rank' + os.environ['RANK'])"
        f".write_text(os.environ.get({TIMEOUT_ENV!r}, 'unset'))"
    )
    launch(2, sys.executable, ["-c", script])
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["7", "7"]
    # an explicit timeout_s still wins
    launch(2, sys.executable, ["-c", script], timeout_s=9)
    assert [float((tmp_path / f"rank{r}").read_text()) for r in (0, 1)] == [9.0, 9.0]


@pytest.mark.parametrize("bad", [0, -5, float("nan"), float("inf")])
def test_invalid_timeout_is_refused_before_any_worker_starts(bad: float, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    with pytest.raises(ValueError, match="timeout"):
        launch(2, sys.executable, ["-c", f"open({str(marker)!r}, 'w')"], timeout_s=bad)
    assert not marker.exists()


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "soon"])
def test_invalid_timeout_env_is_a_clear_error_in_the_worker(
    bad: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TIMEOUT_ENV, bad)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(ValueError, match=TIMEOUT_ENV):
        init_distributed()


def test_worker_failing_at_start_is_named_without_noise() -> None:
    with pytest.raises(DistributedTrainingError) as info:
        launch(2, failing_rank_1_worker, timeout_s=30)
    message = str(info.value)
    assert info.value.rank == 1 and info.value.exit_code != 0
    assert "worker rank 1" in message
    # the worker's exception is quoted once, readably, not as a dict with a traceback
    assert "ValueError: bad config on rank 1" in message
    assert "py_callstack" not in message and "{" not in message


def test_worker_exiting_without_an_exception_gets_no_boilerplate() -> None:
    """A worker that exits with a code (as `adrank train` does after printing its error)
    leaves no error file: the message says so, without torch's "To enable traceback" link."""
    with pytest.raises(DistributedTrainingError) as info:
        launch(2, sys.executable, ["-c", "import os, sys; sys.exit(int(os.environ['RANK']) + 4)"])
    message = str(info.value)
    assert "exited with code" in message and info.value.exit_code in (4, 5)
    assert "To enable traceback" not in message
