"""The impression log: one JSON line per ``/v1/rank`` request (``adrank serve
--impression-log DIR``; the record format is in ``docs/serving.md``, "Impression log").

Off-policy evaluation and incremental training read it. Writing never blocks or fails a
request:

* the request thread only puts a record *builder* on a bounded queue (``put_nowait``); a
  full queue drops the record and counts it;
* one background thread builds the records, encodes them (finite numbers only) and appends
  whole lines to the active file ``impressions-<UTC start>-<pid>-<seq>.jsonl.active``, then
  flushes. A failed write is truncated back to the last whole line, and its records are
  counted as dropped;
* the active file is closed and renamed to ``....jsonl`` when it reaches ``max_bytes`` or
  ``max_seconds``, and at shutdown. A ``.jsonl`` file is complete and never changes; only
  the ``.active`` file grows (a reader tailing it must skip an incomplete last line).
  ``.active`` files left by a process that died are finished at the next start.

:func:`read_impressions` reads the records back, oldest file first.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from adrank.serve.ranking import AdCandidate, PairIndex, select_creatives

logger = logging.getLogger(__name__)

RECORD_FORMAT = 1
PREFIX = "impressions-"
SUFFIX = ".jsonl"
ACTIVE = ".active"
DROP_REASONS = ("queue_full", "write_error", "encode_error")

RecordBuilder = Callable[[], Mapping[str, Any]]


def prepare_log_directory(directory: str | Path) -> Path:
    """Create ``directory`` if needed and check that files can be created in it; raises
    ValueError with a one-line message (it is a file, cannot be created, is not writable)."""
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise ValueError(f"impression log {path} is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-check-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"impression log: cannot create files in {path}: {exc.strerror}") from exc
    return path


class ImpressionLog:
    """A rotating JSONL log written by a background thread (see the module docstring)."""

    def __init__(
        self,
        directory: str | Path,
        *,
        max_bytes: int = 64 << 20,
        max_seconds: float = 3600.0,
        queue_size: int = 10_000,
    ) -> None:
        if max_bytes < 1 or max_seconds <= 0 or queue_size < 1:
            raise ValueError("max_bytes, max_seconds and queue_size must be positive")
        self.directory = prepare_log_directory(directory)
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self._queue: queue.Queue[RecordBuilder | None] = queue.Queue(queue_size)
        self._lock = threading.Lock()
        self.written = 0
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self._file: Any = None
        self._path: Path | None = None
        self._size = 0
        self._opened = 0.0
        self._seq = 0
        self._last_warning = 0.0
        finish_stale(self.directory)
        self._thread = threading.Thread(target=self._run, name="impression-log", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------- request side -----
    def submit(self, build: RecordBuilder) -> bool:
        """Queue one record (built later by the writer thread); False if it was dropped."""
        try:
            self._queue.put_nowait(build)
            return True
        except queue.Full:
            self._count("queue_full")
            return False

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "written": self.written,
                "dropped": dict(self.dropped),
                "queued": self._queue.qsize(),
            }

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, finish the active file and stop the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)

    # -------------------------------------------------------------- writer side -----
    def _count(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.dropped[reason] += n

    def _warn(self, message: str, *args: Any, exc_info: bool = False) -> None:
        now = time.monotonic()
        if now - self._last_warning > 60:
            self._last_warning = now
            logger.warning(message, *args, exc_info=exc_info)

    def _run(self) -> None:
        stop = False
        while not stop:
            try:
                first = self._queue.get(timeout=min(1.0, self.max_seconds))
            except queue.Empty:
                self._rotate_if_due()
                continue
            batch = [first]
            while len(batch) < 1000:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = None in batch
            try:
                self._write([b for b in batch if b is not None])
                self._rotate_if_due()
            except Exception:  # the writer must outlive any bug in a record
                self._warn("impression log: writer error", exc_info=True)
        self._finish()

    def _encode(self, build: RecordBuilder) -> bytes | None:
        try:
            line = json.dumps(build(), allow_nan=False, separators=(",", ":"))
        except Exception:  # a record that cannot be built or encoded: count, go on
            self._count("encode_error")
            self._warn("impression log: a record could not be encoded", exc_info=True)
            return None
        return (line + "\n").encode()

    def _write(self, builders: Sequence[RecordBuilder]) -> None:
        """Append whole lines, rotating as soon as the file reaches ``max_bytes``."""
        chunk: list[bytes] = []
        size = 0
        for build in builders:
            line = self._encode(build)
            if line is None:
                continue
            chunk.append(line)
            size += len(line)
            if self._size + size >= self.max_bytes:
                self._append(chunk)
                self._finish()
                chunk, size = [], 0
        if chunk:
            self._append(chunk)

    def _append(self, lines: list[bytes]) -> None:
        data = b"".join(lines)
        try:
            if self._file is None:
                self._open()
            self._file.write(data)
            self._file.flush()
        except OSError as exc:
            self._count("write_error", len(lines))
            self._warn("impression log: cannot write to %s: %s", self.directory, exc)
            self._recover()
            return
        self._size += len(data)
        with self._lock:
            self.written += len(lines)

    def _open(self) -> None:
        self._seq += 1
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        name = f"{PREFIX}{stamp}Z-{os.getpid()}-{self._seq:04d}{SUFFIX}{ACTIVE}"
        self._path = self.directory / name
        self._file = open(self._path, "ab")  # noqa: SIM115 - kept open across batches
        self._size = self._file.tell()
        self._opened = time.monotonic()

    def _recover(self) -> None:
        """After a failed write: cut the active file back to its last whole line."""
        if self._file is None:
            return
        try:
            self._file.truncate(self._size)
            self._file.seek(self._size)
        except OSError:
            self._finish()  # give up on this file; the next record opens another

    def _rotate_if_due(self) -> None:
        if self._file is None:
            return
        age = time.monotonic() - self._opened
        if self._size >= self.max_bytes or age >= self.max_seconds:
            self._finish()

    def _finish(self) -> None:
        if self._file is None or self._path is None:
            return
        try:
            self._file.close()
            if self._size:
                os.replace(self._path, self._path.with_name(self._path.name[: -len(ACTIVE)]))
            else:
                self._path.unlink(missing_ok=True)
        except OSError as exc:
            self._warn("impression log: cannot finish %s: %s", self._path, exc)
        self._file = self._path = None
        self._size = 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def finish_stale(directory: Path) -> list[Path]:
    """Finish ``.active`` files of processes that are gone: cut a trailing partial line and
    rename them to ``.jsonl``. Returns the finished files."""
    done = []
    for path in sorted(directory.glob(f"{PREFIX}*{SUFFIX}{ACTIVE}")):
        try:
            pid = int(path.name.split("-")[2])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and _pid_alive(pid):
            continue
        data = path.read_bytes()
        keep = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(keep)
        target = path.with_name(path.name[: -len(ACTIVE)])
        os.replace(path, target)
        done.append(target)
        logger.info("impression log: finished %s left by process %d", target.name, pid)
    return done


def read_impressions(directory: str | Path, *, active: bool = False) -> Iterator[dict[str, Any]]:
    """Every record of the finished files, oldest first (``active=True``: also the whole
    lines of files still being written)."""
    paths = sorted(Path(directory).glob(f"{PREFIX}*{SUFFIX}"))
    if active:
        paths += sorted(Path(directory).glob(f"{PREFIX}*{SUFFIX}{ACTIVE}"))
    for path in paths:
        with open(path, "rb") as f:
            for line in f:
                if line.endswith(b"\n"):
                    yield json.loads(line)


# ---------------------------------------------------------------------- records -----
def utc_time(timestamp: float) -> str:
    """ISO 8601 UTC with milliseconds, e.g. ``2026-11-28T10:01:02.345Z``."""
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def rank_record(
    *,
    request_id: str,
    timestamp: float,
    model_version: str,
    model: str,
    request: Any,
    ads: Sequence[AdCandidate],
    outputs: Mapping[str, np.ndarray],
    auction_outputs: Mapping[str, np.ndarray],
    slots: Sequence[Any],
) -> dict[str, Any]:
    """One ``/v1/rank`` record (format in ``docs/serving.md``). ``request`` is the
    :class:`~adrank.serve.payloads.RankRequest` and ``ads`` its candidates as the auction
    saw them; ``outputs`` holds every output (name -> (P,)) of the scored (ad, creative)
    pairs in request order, ``auction_outputs`` the ones the auction ranked on, and
    ``slots`` the filled :class:`~adrank.serve.ranking.SlotResult` list."""
    ad_idx = [i for i, ad in enumerate(ads) for _ in ad.creatives or (None,)]
    creative_idx = [j for ad in ads for j in (range(len(ad.creatives)) or (-1,))]
    index = PairIndex(np.asarray(ad_idx, np.int64), np.asarray(creative_idx, np.int64))
    chosen = select_creatives(ads, auction_outputs, index)
    columns = {name: np.asarray(v, dtype=np.float64).tolist() for name, v in outputs.items()}
    candidates = []
    pair = 0
    for cand, scored in zip(request.candidates, chosen, strict=True):
        creatives = []
        chosen_pair = pair
        for creative in cand.creatives or ():
            if creative.creative_id == scored.creative_id:
                chosen_pair = pair
            scores = {name: col[pair] for name, col in columns.items()}
            creatives.append(
                {
                    "creative_id": creative.creative_id,
                    "features": creative.features,
                    "scores": scores,
                }
            )
            pair += 1
        if not creatives:
            pair += 1
        entry = {
            "ad_id": cand.ad_id,
            "bid": cand.bid,
            "billing": cand.billing,
            "features": cand.features,
            "creative_id": scored.creative_id,
            "scores": {name: col[chosen_pair] for name, col in columns.items()},
            "score": scored.score,
        }
        if creatives:
            entry["creatives"] = creatives
        candidates.append(entry)
    return {
        "format": RECORD_FORMAT,
        "request_id": request_id,
        "time": utc_time(timestamp),
        "timestamp": round(timestamp, 6),
        "model_version": model_version,
        "model": model,
        "context": request.context,
        "slots_requested": request.slots,
        "reserve_ecpm": request.reserve_ecpm,
        "reserve_price": request.reserve_price,
        "candidates": candidates,
        "slots": [
            {
                "slot": s.slot,
                "ad_id": s.ad_id,
                "creative_id": s.creative_id,
                "billing": s.billing,
                "billing_event": s.billing_event,
                "score": s.score,
                "price": s.price,
            }
            for s in slots
        ],
    }
