"""Start N training workers on this machine with torch.distributed's elastic launcher.

This is the machinery behind ``torchrun --standalone --nproc-per-node N`` (a c10d rendezvous
on a free localhost port), called from Python so ``adrank train --nproc N`` needs no extra
command. Each worker gets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` ... in its
environment and joins the process group in :func:`adrank.train.distributed.init_distributed`.

If any worker dies, the launcher stops the others and raises
:class:`DistributedTrainingError` naming the failed rank and its exit code: the job fails
instead of hanging. Multi-node jobs use ``torchrun`` directly (see ``docs/distributed.md``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from adrank.train.distributed import DEFAULT_TIMEOUT_S, TIMEOUT_ENV, check_timeout_s

__all__ = ["DistributedTrainingError", "launch", "launch_cli"]

logger = logging.getLogger(__name__)


class DistributedTrainingError(RuntimeError):
    """A worker of a distributed job failed; the other workers were stopped.

    Attributes:
        rank: global rank of the first worker that failed.
        exit_code: its exit code (negative: killed by that signal).
    """

    def __init__(self, message: str, rank: int, exit_code: int) -> None:
        super().__init__(message)
        self.rank = rank
        self.exit_code = exit_code


class DistributedInterrupted(RuntimeError):
    """The launcher itself got a signal (SIGTERM, SIGINT ...): the workers were stopped.

    Attributes:
        signum: the signal's number.
    """

    def __init__(self, signum: int) -> None:
        name = signal.Signals(signum).name if signum in iter(signal.Signals) else str(signum)
        super().__init__(f"interrupted by {name}: the workers were stopped")
        self.signum = signum


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the workers (they inherit the launcher's env)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by signal {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _failure_detail(error_file_data: dict[str, Any]) -> str:
    """The exception a failed worker recorded (``"ValueError: ..."``), or ``""``.

    A worker that exits with a code or a signal writes no error file; torch then fills in
    placeholder data (message ``"<NONE>"``) and a generic hint, which are not quoted. The
    recorded message is a string or ``{"message": ..., "extraInfo": {"py_callstack": ...}}``:
    only its first part is quoted (the traceback is in the worker's output).
    """
    message = error_file_data.get("message")
    if isinstance(message, dict):
        message = message.get("message")
    if not isinstance(message, str) or message == "<NONE>":
        return ""
    return message.strip()


def launch(
    nproc: int,
    entrypoint: Callable[..., Any] | str,
    args: Sequence[Any] = (),
    *,
    timeout_s: float | None = None,
    monitor_interval_s: float = 0.5,
) -> dict[int, Any]:
    """Run ``entrypoint(*args)`` in ``nproc`` worker processes and wait for all of them.

    Args:
        nproc: number of workers on this machine (>= 1).
        entrypoint: a picklable module-level function (run in a spawned process) or the path
            of an executable (e.g. ``sys.executable``, with ``args`` its arguments).
        args: arguments of the entrypoint, the same for every worker.
        timeout_s: collective timeout of the workers (passed as ``$ADRANK_DIST_TIMEOUT_S``);
            ``None``: the workers use ``$ADRANK_DIST_TIMEOUT_S`` if set, else 120 s.
        monitor_interval_s: how often the launcher checks whether a worker has died.

    Returns:
        global rank -> return value of the function (``None`` for an executable).

    Raises:
        DistributedTrainingError: a worker failed; the message names its rank and exit code.
        ValueError: ``nproc`` < 1, or ``timeout_s`` is not a finite number of seconds > 0.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    # None keeps the user's $ADRANK_DIST_TIMEOUT_S (the workers read and check it)
    env = {} if timeout_s is None else {TIMEOUT_ENV: str(check_timeout_s(timeout_s))}
    shown = env.get(TIMEOUT_ENV) or os.environ.get(TIMEOUT_ENV) or str(DEFAULT_TIMEOUT_S)
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"adrank-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # like torchrun --standalone: a free port
        max_restarts=0,  # a failed worker fails the job (the CLI says whether to --resume)
        monitor_interval=monitor_interval_s,
        start_method="spawn",
    )
    logger.info("launching %d workers (collective timeout %ss)", nproc, shown)
    try:
        with _environ(env):
            return elastic_launch(config, entrypoint)(*args)
    except SignalException as exc:  # the launcher was signalled; elastic stopped the workers
        raise DistributedInterrupted(int(exc.sigval)) from None
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        detail = _failure_detail(failure.error_file_data)
        detail = f": {detail}" if detail else ""
        raise DistributedTrainingError(
            f"distributed training failed: worker rank {rank} (local rank "
            f"{failure.local_rank}, pid {failure.pid}) {_describe_exit(failure.exitcode)}"
            f"{detail}; the other {nproc - 1} worker(s) were stopped. See that worker's "
            "output above for its error",
            rank=rank,
            exit_code=failure.exitcode,
        ) from None


def launch_cli(nproc: int, argv: Sequence[str], *, timeout_s: float | None = None) -> None:
    """Run ``python -m adrank ARGV`` in ``nproc`` workers (what ``adrank train --nproc``
    does); ``argv`` must not contain ``--nproc``."""
    if "--nproc" in argv or any(a.startswith("--nproc=") for a in argv):
        raise ValueError("argv for the workers must not contain --nproc (they would relaunch)")
    launch(nproc, sys.executable, ["-m", "adrank", *argv], timeout_s=timeout_s)
