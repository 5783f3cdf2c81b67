"""Download dataset files with checksums, atomically.

Checksum convention: every md5 here (the ``md5`` argument and :attr:`RemoteFile.md5`) is the
md5 of the **uncompressed content** of the file, i.e. ``zcat FILE | md5sum`` for a stored
``.gz`` file. It does not depend on how the file travels (plain, gzip, inside a zip) or on how
it is stored, so a downloaded file and a copy from ``shared/data`` verify against the same md5.

Storage convention: a destination ending in ``.gz`` is written gzip-compressed (level 9, no
name, mtime 0, like ``gzip -9n``); any other destination is written as plain content.

Nothing is written at the destination until the whole transfer succeeded and the md5
matched: data streams into temp files in the destination's directory and is moved into place
with ``os.replace``. Temp files are removed on every error.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import tempfile
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

    Raises:
        DownloadError: HTTP error (e.g. 404), unreachable host, the connection dropped
            before ``Content-Length`` bytes arrived, or the destination's folder cannot be
            written (read-only, not a folder, disk full). No file is left behind.
        ChecksumError: the content's md5 or size differs. No file is left behind.
    """
    dest = Path(dest)
    kind = _decompress_kind(decompress, archive_member)
    with _temp_path(dest, ".download", url) as raw:
        content_type = _fetch(url, raw, timeout=timeout, progress=progress)
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
) -> None:
    """Make sure every file ``builder`` needs is under ``data_dir``.

    A file counts as present at ``data_dir/path`` or at the same path without ``.gz``.
    Missing files with a source URL are downloaded (when ``download``), stored
    gzip-compressed at ``data_dir/path`` and verified against the md5 of their uncompressed
    content. Files from one zip archive are fetched once. Missing optional files are fetched
    on a best-effort basis (failures are logged, not raised).

    Args:
        verify: also check the md5 of files already present (slower; off by default).

    Raises:
        DatasetUnavailableError: a required file is missing and ``download`` is off, it has
            no public source, or its download failed; the message names every expected file.
        ChecksumError: a downloaded (or, with ``verify``, present) file has the wrong md5.
    """
    data_dir = Path(data_dir)
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
        _download_all(missing, data_dir, timeout=timeout, progress=progress)
    except DownloadError as exc:
        still = [f for f in required if find_file(data_dir, f.path) is None]
        raise unavailable_error(builder, data_dir, still, f"download failed: {exc}") from exc
    try:
        _download_all([f for f in missing_optional if f.url], data_dir, timeout, progress)
    except DownloadError as exc:
        logger.warning("optional file of dataset %r not downloaded: %s", builder.name, exc)


# ---- internals --------------------------------------------------------------------------
def _download_all(files: list[RemoteFile], data_dir: Path, timeout: float, progress: bool) -> None:
    """Download ``files``; files that are members of the same zip URL share one transfer."""
    by_url: dict[str, list[RemoteFile]] = {}
    for f in files:
        by_url.setdefault(f.url, []).append(f)
    for url, group in by_url.items():
        first_dest = data_dir / group[0].path
        with _temp_path(first_dest, ".download", url) as raw:
            content_type = _fetch(url, raw, timeout=timeout, progress=progress)
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


def _fetch(url: str, target: Path, timeout: float, progress: bool) -> str:
    """Stream ``url`` into ``target`` and return the response's ``Content-Type``; raise
    :class:`DownloadError` on any failure, including a transfer shorter than the announced
    ``Content-Length`` and a failure to write ``target``."""
    from adrank import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"adrank/{__version__}"})
    logger.info("downloading %s", url)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"HTTP {exc.code} ({exc.reason}) for {url}") from exc
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"cannot download {url}: {reason}") from exc
    received = 0
    with response:
        length = response.headers.get("Content-Length")
        content_type = response.headers.get("Content-Type", "")
        expected = int(length) if length and length.isdigit() else None
        try:
            with open(target, "wb") as out, _progress(url, expected, progress) as advance:
                while True:
                    try:
                        block = response.read(CHUNK)
                    except (http.client.HTTPException, OSError) as exc:
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
    with open(tmp, "wb") as fh:
        if dest.name.endswith(".gz"):
            with gzip.GzipFile(filename="", mode="wb", fileobj=fh, compresslevel=9, mtime=0) as gz:
                yield gz
        else:
            yield fh


def _check(what: str, got_md5: str, got_size: int, md5: str | None, size: int | None) -> None:
    if size is not None and got_size != size:
        raise ChecksumError(
            f"{what}: uncompressed size is {got_size} bytes, expected {size} "
            f"(md5 {got_md5}, expected {md5 or 'unchecked'})"
        )
    if md5 and got_md5 != md5.lower():
        raise ChecksumError(f"{what}: md5 of the uncompressed content is {got_md5}, expected {md5}")
