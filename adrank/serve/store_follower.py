"""``adrank serve --store``: a server that follows a model store (``docs/serving.md``,
"Following a model store").

Every worker process runs one :class:`StoreFollower`, a daemon thread that reads the served
model's ``latest`` pointer (:mod:`adrank.serve.model_store`) every ``poll_interval``
seconds, independently of the other workers:

* ``latest`` names the serving version, or a version this worker already refused: nothing
  to do (a refused version is remembered for the life of the worker, never retried);
* ``latest`` names a higher version: it is loaded and passed through the swap gate
  (:func:`adrank.serve.swap_gate.load_checked`, via the app's ``ModelHolder.reload``). A
  model that passes replaces the serving one by swapping a reference: requests already
  running finish on the old model, none is dropped. A model that fails to load, reads other
  inputs or fails its smoke prediction is **refused**: logged, counted in ``/metrics`` and
  remembered, and the old one keeps serving;
* ``latest`` names a *lower* version: an operator rolled back (``adrank rollback``). This is
  the one deliberate backward move; the worker follows it through the same gate (a version
  it refused before stays refused).

So a worker only ever moves to versions that passed the gate, and only forward except when
``latest`` itself was moved back. At start the worker serves ``latest``, or when that
version fails the gate the newest lower version that passes (the refusals are remembered).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adrank.serve.model_root import ModelRoot, ModelRootError
from adrank.serve.model_store import StoreError, latest_version, model_dir, versions
from adrank.serve.swap_gate import SwapRefused, load_checked

if TYPE_CHECKING:
    from adrank.serve.holder import ModelHolder
    from adrank.serve.predictor import Predictor

logger = logging.getLogger(__name__)

#: Seconds between two reads of ``latest`` (``adrank serve --poll-interval``).
DEFAULT_POLL_INTERVAL = 1.0


def version_of(reference: str) -> int | None:
    """The version number a ``NAME/N`` reference names (None for anything else)."""
    last = reference.rsplit("/", 1)[-1]
    return int(last) if last.isdigit() and not last.startswith("0") else None


def start_version(
    root: ModelRoot, name: str, **predictor_kwargs: Any
) -> tuple[str, Predictor, dict[int, str]]:
    """The version a worker starts on -> (reference, predictor, refused {version: reason}):
    ``latest``, else the newest lower version that passes the gate (smoke prediction)."""
    directory = model_dir(root.path, name)
    latest = latest_version(directory)
    if latest is None:
        raise ValueError(
            f"the store {root.path} has no published version of {name!r} "
            f"(adrank publish RUN_DIR --store {root.path} --name {name})"
        )
    refused: dict[int, str] = {}
    for version in [latest, *(v for v in reversed(versions(directory)) if v < latest)]:
        reference = f"{name}/{version}"
        try:
            path = root.resolve(reference)
            return reference, load_checked(path, None, label=reference, **predictor_kwargs), refused
        except (SwapRefused, ModelRootError) as exc:
            refused[version] = str(exc)
            logger.warning("store: refused %s at start: %s", reference, exc)
    raise ValueError(
        f"no published version of {name!r} in {root.path} passes the swap gate: "
        + "; ".join(f"{v}: {why}" for v, why in refused.items())
    )


class StoreFollower:
    """Polls ``latest`` of model ``name`` and swaps through ``holder`` (module docstring)."""

    def __init__(
        self,
        holder: ModelHolder,
        name: str,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        refused: dict[int, str] | None = None,
    ) -> None:
        if not poll_interval > 0:
            raise ValueError(f"the poll interval must be positive seconds, got {poll_interval}")
        self.holder = holder
        self.name = name
        self.poll_interval = float(poll_interval)
        self.directory: Path = model_dir(holder.root.path, name)
        self.refused: dict[int, str] = dict(refused or {})
        self.latest: int | None = self.version
        self.polls = 0
        self.poll_errors = 0
        self.swaps = 0
        self.rollbacks = 0
        self._last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def version(self) -> int | None:
        """The serving version number."""
        return version_of(self.holder.serving()[1])

    def poll(self) -> str:
        """Read ``latest`` once and act on it -> what happened: ``unchanged``, ``refused``
        (now or before), ``swapped``, ``rolled back`` or ``error`` (an unreadable pointer)."""
        self.polls += 1
        try:
            latest = latest_version(self.directory)
        except (StoreError, OSError) as exc:
            self.poll_errors += 1
            if str(exc) != self._last_error:  # log a persisting problem once
                logger.warning("store: cannot read %s: %s", self.directory, exc)
                self._last_error = str(exc)
            return "error"
        self._last_error = ""
        self.latest = latest
        current = self.version
        if latest is None or latest == current:
            return "unchanged"
        if latest in self.refused:
            return "refused"
        reference = f"{self.name}/{latest}"
        try:
            old, new = self.holder.reload(reference)
        except (SwapRefused, ModelRootError) as exc:
            self.refused[latest] = str(exc)
            logger.warning(
                "store: refused %s (worker %d keeps serving %s/%s): %s",
                reference,
                os.getpid(),
                self.name,
                current,
                exc,
            )
            return "refused"
        backward = current is not None and latest < current
        self.swaps += 1
        self.rollbacks += backward
        logger.info(
            "store: worker %d %s %s/%s -> %s (%s -> %s)",
            os.getpid(),
            "rolled back" if backward else "moved",
            self.name,
            current,
            latest,
            old,
            new,
        )
        return "rolled back" if backward else "swapped"

    def _run(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.poll()
            except Exception:  # the follower must never die: log and poll again
                self.poll_errors += 1
                logger.exception("store: poll of %s failed", self.directory)

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="adrank-store-follower", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def status(self) -> dict[str, Any]:
        """For ``/healthz``: the name, serving and latest versions, and refusals."""
        return {
            "name": self.name,
            "version": self.version,
            "latest": self.latest,
            "poll_interval": self.poll_interval,
            "refused": {str(v): why for v, why in sorted(self.refused.items())},
            "pid": os.getpid(),
        }

    def metric_values(self) -> dict[str, tuple[str, str, float]]:
        """For ``/metrics`` (per worker: each worker follows the store on its own)."""
        return {
            "adrank_store_version": ("gauge", "The served store version.", self.version or 0),
            "adrank_store_latest": (
                "gauge",
                "The version latest named at the last poll.",
                self.latest or 0,
            ),
            "adrank_store_swaps_total": (
                "counter",
                "Store versions swapped in (rollbacks included).",
                self.swaps,
            ),
            "adrank_store_rollbacks_total": (
                "counter",
                "Swaps to a lower version (latest moved back).",
                self.rollbacks,
            ),
            "adrank_store_refused_total": (
                "counter",
                "Store versions refused (failed to load, other inputs, failed smoke "
                "prediction, or missing); each is refused once and not retried.",
                len(self.refused),
            ),
            "adrank_store_polls_total": ("counter", "Reads of latest.", self.polls),
            "adrank_store_poll_errors_total": (
                "counter",
                "Polls that could not read latest or failed.",
                self.poll_errors,
            ),
        }
