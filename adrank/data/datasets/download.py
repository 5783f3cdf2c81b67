"""Download dataset files with checksums, atomically.

Checksum convention: every md5 here (the ``md5`` argument and :attr:`RemoteFile.md5`) is the
md5 of the **uncompressed content** of the file, i.e. ``zcat FILE | md5sum`` for a stored
``.gz`` file. It does not depend on how the file travels (plain, gzip, inside a zip) or on how
it is stored, so a downloaded file and a copy from ``shared/data`` verify against the same md5.

Storage convention: a destination ending in ``.gz`` is written gzip-compressed (level 9, no
name, mtime 0, like ``gzip -9n``); any other destination is written as plain content.

Nothing is written at the destination until the whole transfer succeeded and the md5
matched: data streams into temp files in the destination's directory, is flushed to disk
(``fsync``) and is moved into place with ``os.replace``. Temp files are removed on every
error.

Timeouts: ``timeout`` bounds each network read, so a server that stops sending fails after
``timeout`` seconds; a server that keeps sending a trickle (a byte a second) never trips it.
``deadline`` bounds a whole transfer (connection to last byte); its default comes from
``$ADRANK_DOWNLOAD_DEADLINE_S`` (unset: no deadline).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import math
import os
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Literal

from adrank.data.datasets.base import (
    ChecksumError,
    DatasetBuilder,
    DatasetUnavailableError,
    RemoteFile,
    find_file,
    unavailable_error,
)

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
Decompress = Literal["gz", "zip"]
#: The environment variable that sets the default ``deadline`` of a transfer, in seconds.
DEADLINE_ENV = "ADRANK_DOWNLOAD_DEADLINE_S"


class DownloadError(DatasetUnavailableError):
    """A download failed: HTTP error, unreachable host, or an interrupted/truncated transfer."""


def download_file(
    url: str,
    dest: Path,
    md5: str | None,
    *,
    timeout: float = 60,
    progress: bool = False,
    decompress: Decompress | None = None,
    archive_member: str | None = None,
    size: int | None = None,
    deadline: float | None = None,
) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``.

    Args:
        url: ``http(s)://`` or ``file://`` URL.
        dest: where to store the content; gzip-compressed if its name ends in ``.gz``.
        md5: expected md5 of the uncompressed content (``None`` or ``""``: not checked).
        timeout: socket timeout in seconds.
        progress: show a rich progress bar (otherwise progress is logged).
        decompress: ``"gz"`` if the remote file is gzip-compressed, ``"zip"`` if it is a zip
            archive (then ``archive_member`` names the member; implied by ``archive_member``).
        size: expected uncompressed size in bytes (not checked if ``None``).
        deadline: seconds the whole transfer may take, however steadily data arrives
            (``None``: ``$ADRANK_DOWNLOAD_DEADLINE_S``, else no limit).

    Raises:
        DownloadError: HTTP error (e.g. 404), unreachable host, the connection dropped
            before ``Content-Length`` bytes arrived, the transfer passed its ``deadline``,
            or the destination's folder cannot be written (read-only, not a folder, disk
            full). No file is left behind.
        ValueError: ``deadline`` (or ``$ADRANK_DOWNLOAD_DEADLINE_S``) is not a positive
            number of seconds.
        ChecksumError: the content's md5 or size differs. No file is left behind.
    """
    dest = Path(dest)
    kind = _decompress_kind(decompress, archive_member)
    limit = resolve_deadline(deadline)
    with _temp_path(dest, ".download", url) as raw:
        content_type = _fetch(url, raw, timeout=timeout, progress=progress, deadline=limit)
        _store(raw, dest, md5, size, kind, archive_member, url, content_type)
    return dest


def verify_file(path: Path, md5: str | None, size: int | None = None) -> None:
    """Check the md5 (and size) of a file's uncompressed content (``.gz`` files are read
    through gzip); raise :class:`ChecksumError` naming the file on mismatch."""
    path = Path(path)
    digest, n = hashlib.md5(), 0
    kind: Decompress | None = "gz" if path.name.endswith(".gz") else None
    with _open_content(path, kind, None, str(path)) as fh:
        try:
            while block := fh.read(CHUNK):
                digest.update(block)
                n += len(block)
        except (OSError, EOFError) as exc:
            raise ChecksumError(f"{path}: cannot read/decompress: {exc}") from exc
    _check(str(path), digest.hexdigest(), n, md5, size)


def ensure_files(
    builder: DatasetBuilder,
    data_dir: Path,
    download: bool = True,
    *,
    timeout: float = 60,
    progress: bool = False,
    verify: bool = False,
    deadline: float | None = None,
) -> None:
    """Make sure every file ``builder`` needs is under ``data_dir``.

    A file counts as present at ``data_dir/path`` or at the same path without ``.gz``.
    Missing files with a source URL are downloaded (when ``download``), stored
    gzip-compressed at ``data_dir/path`` and verified against the md5 of their uncompressed
    content. Files from one zip archive are fetched once. Missing optional files are fetched
    on a best-effort basis (failures are logged, not raised).

    Args:
        verify: also check the md5 of files already present (slower; off by default).
        deadline: seconds each transfer may take in all (:func:`download_file`).

    Raises:
        DatasetUnavailableError: a required file is missing and ``download`` is off, it has
            no public source, or its download failed; the message names every expected file.
        ChecksumError: a downloaded (or, with ``verify``, present) file has the wrong md5.
    """
    data_dir = Path(data_dir)
    limit = resolve_deadline(deadline)
    required = builder.expected_files(data_dir)
    if verify:
        for f in (*required, *builder.optional_files):
            found = find_file(data_dir, f.path)
            if found is not None and f.md5:
                verify_file(found, f.md5, f.size)
    missing = [f for f in required if find_file(data_dir, f.path) is None]
    missing_optional = [f for f in builder.optional_files if find_file(data_dir, f.path) is None]
    if missing and not download:
        raise unavailable_error(builder, data_dir, missing, "downloading is disabled")
    if not download:
        return
    no_source = [f.path for f in missing if not f.url]
    if no_source:
        raise unavailable_error(builder, data_dir, missing, f"no public download for {no_source}")
    try:
        _download_all(missing, data_dir, timeout=timeout, progress=progress, deadline=limit)
    except DownloadError as exc:
        still = [f for f in required if find_file(data_dir, f.path) is None]
        raise unavailable_error(builder, data_dir, still, f"download failed: {exc}") from exc
    try:
        _download_all([f for f in missing_optional if f.url], data_dir, timeout, progress, limit)
    except DownloadError as exc:
        logger.warning("optional file of dataset %r not downloaded: %s", builder.name, exc)


# ---- internals --------------------------------------------------------------------------
def resolve_deadline(deadline: float | None) -> float | None:
    """``deadline``, else ``$ADRANK_DOWNLOAD_DEADLINE_S`` (unset or empty: ``None``),
    checked to be a positive, finite number of seconds."""
    source = "deadline"
    if deadline is None:
        text = os.environ.get(DEADLINE_ENV, "").strip()
        if not text:
            return None
        source = f"${DEADLINE_ENV}"
        try:
            deadline = float(text)
        except ValueError:
            raise ValueError(f"{source} must be a number of seconds, got {text!r}") from None
    if isinstance(deadline, bool) or not (
        isinstance(deadline, int | float) and math.isfinite(deadline) and deadline > 0
    ):
        raise ValueError(f"{source} must be a positive number of seconds, got {deadline!r}")
    return float(deadline)


def _download_all(
    files: list[RemoteFile],
    data_dir: Path,
    timeout: float,
    progress: bool,
    deadline: float | None = None,
) -> None:
    """Download ``files``; files that are members of the same zip URL share one transfer."""
    by_url: dict[str, list[RemoteFile]] = {}
    for f in files:
        by_url.setdefault(f.url, []).append(f)
    for url, group in by_url.items():
        first_dest = data_dir / group[0].path
        with _temp_path(first_dest, ".download", url) as raw:
            content_type = _fetch(url, raw, timeout=timeout, progress=progress, deadline=deadline)
            for f in group:
                dest = data_dir / f.path
                kind = _decompress_kind(None, f.archive_member, url)
                _store(raw, dest, f.md5, f.size, kind, f.archive_member, url, content_type)
                logger.info("stored %s (md5 of content verified: %s)", dest, bool(f.md5))


def _decompress_kind(
    decompress: Decompress | None, archive_member: str | None, url: str = ""
) -> Decompress | None:
    if archive_member is not None:
        return "zip"
    if decompress is not None:
        if decompress not in ("gz", "zip"):
            raise ValueError(f"decompress must be 'gz', 'zip' or None, got {decompress!r}")
        return decompress
    return "gz" if url.endswith(".gz") else None


def _write_error(url: str, folder: Path, exc: OSError) -> DownloadError:
    """A local filesystem failure (read-only, not a folder, disk full) while storing ``url``:
    said to be local, so it is not mistaken for a network or content problem."""
    reason = f"[Errno {exc.errno}] {exc.strerror}" if exc.strerror else repr(exc)
    return DownloadError(f"cannot store {url} in {folder}: {reason} (a local write error)")


@contextmanager
def _temp_path(dest: Path, suffix: str, url: str) -> Iterator[Path]:
    """A fresh temp file next to ``dest`` (its folder created), always removed on exit."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent)
    except OSError as exc:
        raise _write_error(url, dest.parent, exc) from exc
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _fetch(
    url: str, target: Path, timeout: float, progress: bool, deadline: float | None = None
) -> str:
    """Stream ``url`` into ``target`` and return the response's ``Content-Type``; raise
    :class:`DownloadError` on any failure, including a transfer shorter than the announced
    ``Content-Length``, one still running ``deadline`` seconds after it started, and a
    failure to write ``target``."""
    from adrank import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"adrank/{__version__}"})
    logger.info("downloading %s", url)
    end = time.monotonic() + deadline if deadline is not None else None
    try:
        response = urllib.request.urlopen(request, timeout=_read_timeout(timeout, end))
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"HTTP {exc.code} ({exc.reason}) for {url}") from exc
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        if end is not None and time.monotonic() >= end:
            raise _past_deadline(url, deadline, 0, None) from exc
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"cannot download {url}: {reason}") from exc
    received = 0
    # read1: whatever has arrived (up to CHUNK), so the deadline is checked between reads
    # even when the server sends a byte at a time (read(CHUNK) would wait for all of it)
    read = getattr(response, "read1", None) or response.read
    with response:
        length = response.headers.get("Content-Length")
        content_type = response.headers.get("Content-Type", "")
        expected = int(length) if length and length.isdigit() else None
        try:
            with open(target, "wb") as out, _progress(url, expected, progress) as advance:
                while True:
                    try:
                        if end is not None:
                            if time.monotonic() >= end:
                                raise _past_deadline(url, deadline, received, expected)
                            _set_read_timeout(response, _read_timeout(timeout, end))
                        block = read(CHUNK)
                    except (http.client.HTTPException, OSError) as exc:
                        if end is not None and time.monotonic() >= end:
                            raise _past_deadline(url, deadline, received, expected) from exc
                        raise DownloadError(
                            f"transfer of {url} was interrupted after {received} bytes"
                            + (f" of {expected}" if expected is not None else "")
                            + f": {exc!r}"
                        ) from exc
                    if not block:
                        break
                    out.write(block)
                    received += len(block)
                    advance(len(block))
        except OSError as exc:  # writing the temp file, not the transfer, failed
            raise _write_error(url, target.parent, exc) from exc
    if expected is not None and received != expected:
        raise DownloadError(
            f"transfer of {url} is truncated: got {received} bytes, the server announced "
            f"Content-Length {expected}"
        )
    logger.info("downloaded %s (%d bytes)", url, received)
    return content_type


def _read_timeout(timeout: float, end: float | None) -> float:
    """The socket timeout for the next read: ``timeout``, cut to what is left before
    ``end`` (a monotonic time) when there is a deadline."""
    if end is None:
        return timeout
    return max(0.05, min(timeout, end - time.monotonic()))


def _set_read_timeout(response: object, seconds: float) -> None:
    """Set the socket timeout of an open HTTP response (a no-op for ``file://``)."""
    raw = getattr(getattr(response, "fp", None), "raw", None)
    sock = getattr(raw, "_sock", None)
    if sock is not None and hasattr(sock, "settimeout"):
        sock.settimeout(seconds)


def _past_deadline(
    url: str, deadline: float | None, received: int, expected: int | None
) -> DownloadError:
    of = f" of {expected}" if expected is not None else ""
    return DownloadError(
        f"transfer of {url} did not finish within its deadline of {deadline:g}s "
        f"({received} bytes{of} received; the server is sending too slowly). Raise it "
        f"with ${DEADLINE_ENV}, or try again later"
    )


@contextmanager
def _progress(url: str, total: int | None, enabled: bool) -> Iterator[Callable[[int], None]]:
    """Yield an ``advance(n_bytes)`` callback: a rich progress bar if enabled and
    available, otherwise debug logging every ~10%."""
    if enabled:
        try:
            from rich.progress import DownloadColumn, Progress, TransferSpeedColumn
        except ImportError:  # pragma: no cover - rich is a dependency
            enabled = False
    if enabled:
        with Progress(
            *Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(), transient=True
        ) as bar:
            task = bar.add_task(url.rsplit("/", 1)[-1], total=total)
            yield lambda n: bar.advance(task, n)
        return
    state = {"done": 0, "next": 0.1}

    def advance(n: int) -> None:
        state["done"] += n
        if total and state["done"] >= state["next"] * total:
            logger.debug("%s: %.0f%%", url, 100 * state["done"] / total)
            state["next"] += 0.1

    yield advance


def _store(
    raw: Path,
    dest: Path,
    md5: str | None,
    size: int | None,
    kind: Decompress | None,
    archive_member: str | None,
    url: str,
    content_type: str = "",
) -> None:
    """Extract/decompress the downloaded ``raw`` file, verify the content's md5/size and
    move it to ``dest`` (gzip-compressed if ``dest`` ends in ``.gz``)."""
    # an error page served with status 200 fails decoding or the checksum: say what it was
    sent = f" (the server sent {content_type})" if "html" in content_type.lower() else ""
    with _temp_path(dest, ".part", url) as out_tmp:
        digest, n = hashlib.md5(), 0
        try:
            with (
                _open_content(raw, kind, archive_member, url) as src,
                _open_dest(dest, out_tmp) as out,
            ):
                while True:
                    try:
                        block = src.read(CHUNK)
                    except (OSError, EOFError, zipfile.BadZipFile) as exc:
                        raise DownloadError(
                            f"cannot decode the content of {url}{sent}: {exc}"
                        ) from exc
                    if not block:
                        break
                    digest.update(block)
                    n += len(block)
                    out.write(block)
        except OSError as exc:  # writing the temp file failed
            raise _write_error(url, dest.parent, exc) from exc
        _check(f"{dest} (from {url}){sent}", digest.hexdigest(), n, md5, size)
        try:
            os.replace(out_tmp, dest)
        except OSError as exc:
            raise _write_error(url, dest.parent, exc) from exc
        _fsync_dir(dest.parent)


@contextmanager
def _open_content(
    raw: Path, kind: Decompress | None, member: str | None, url: str
) -> Iterator[IO[bytes]]:
    if kind == "gz":
        with gzip.open(raw, "rb") as fh:
            yield fh
    elif kind == "zip":
        try:
            archive = zipfile.ZipFile(raw)
        except zipfile.BadZipFile as exc:
            raise DownloadError(f"{url} is not a valid zip archive: {exc}") from exc
        with archive:
            if member is None or member not in archive.namelist():
                raise DownloadError(
                    f"zip archive {url} has no member {member!r}; members: {archive.namelist()}"
                )
            with archive.open(member) as fh:
                yield fh
    else:
        with open(raw, "rb") as fh:
            yield fh


@contextmanager
def _open_dest(dest: Path, tmp: Path) -> Iterator[IO[bytes]]:
    """The temp file ``tmp`` to write ``dest``'s content into (through gzip for ``.gz``);
    flushed to disk on a normal exit, so it is complete before it is renamed to ``dest``."""
    with open(tmp, "wb") as fh:
        if dest.name.endswith(".gz"):
            with gzip.GzipFile(filename="", mode="wb", fileobj=fh, compresslevel=9, mtime=0) as gz:
                yield gz
        else:
            yield fh
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check(what: str, got_md5: str, got_size: int, md5: str | None, size: int | None) -> None:
    if size is not None and got_size != size:
        raise ChecksumError(
            f"{what}: uncompressed size is {got_size} bytes, expected {size} "
            f"(md5 {got_md5}, expected {md5 or 'unchecked'})"
        )
    if md5 and got_md5 != md5.lower():
        raise ChecksumError(f"{what}: md5 of the uncompressed content is {got_md5}, expected {md5}")
