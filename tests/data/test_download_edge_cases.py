"""Download edge cases against a real HTTP server on 127.0.0.1: a cache directory that cannot
be written, a disk that fills up mid-download (a file-size limit in a child process), an
HTML error page served with status 200, leftovers of an interrupted download, and two
processes downloading the same file at once."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import sys
import textwrap
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import pytest

from adrank.data.datasets import (
    ChecksumError,
    DatasetUnavailableError,
    DownloadError,
    RemoteFile,
    download_file,
    ensure_files,
)
from adrank.data.datasets.base import DatasetBuilder
from adrank.data.schema import CategoricalFeature, Schema

#: plain content of every served file: 200 kB, compresses to almost nothing
DATA = b"".join(f"{i % 7}\tuser{i % 13}\titem{i % 11}\n".encode() for i in range(10_000))
MD5 = hashlib.md5(DATA).hexdigest()
HTML = b"<!DOCTYPE html><html><body>Rate limit exceeded, try again later</body></html>"


def _zip(member: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member, data)
    return buf.getvalue()


ZIPPED = _zip("pack/data.tsv", DATA)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/error-page.tsv":
            body, kind = HTML, "text/html; charset=utf-8"
        elif self.path == "/pack.zip":
            body, kind = ZIPPED, "application/zip"
        else:
            body, kind = DATA, "text/plain"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def base_url() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


class _OneFile(DatasetBuilder):
    name = "one_file_for_tests"
    description = "test builder"

    def __init__(self, url: str) -> None:
        self.files = (RemoteFile("one/data.tsv.gz", url, MD5, len(DATA)),)
        self.optional_files = ()

    def schema(self) -> Schema:
        return Schema(labels=("label",), features=(CategoricalFeature("x"),))

    def build_splits(
        self, data_dir: Path, seed: int | None = None, bad_rows: str = "error"
    ) -> dict[str, pl.DataFrame]:
        raise NotImplementedError("only its files are used here")


# ---- a cache directory that cannot be written -------------------------------------------
def test_unwritable_cache_dir_is_a_download_error_naming_url_and_dir(
    base_url: str, tmp_path: Path
) -> None:
    blocker = tmp_path / "cache"  # a regular file where the cache directory should be
    blocker.write_bytes(b"a user's file")
    url = f"{base_url}/data.tsv"
    with pytest.raises(DownloadError) as info:
        download_file(url, blocker / "one" / "data.tsv.gz", MD5)
    assert url in str(info.value) and str(blocker / "one") in str(info.value)
    assert blocker.read_bytes() == b"a user's file"  # never touched

    with pytest.raises(DatasetUnavailableError) as unavailable:
        ensure_files(_OneFile(url), blocker)
    assert url in str(unavailable.value) and "[MISSING]" in str(unavailable.value)
    assert blocker.read_bytes() == b"a user's file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_cache_dir_is_a_download_error(base_url: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o555)
    try:
        with pytest.raises(DownloadError, match="Permission denied") as info:
            download_file(f"{base_url}/data.tsv", cache / "data.tsv.gz", MD5)
        assert f"{base_url}/data.tsv" in str(info.value)
        assert _names(cache) == []
    finally:
        cache.chmod(0o755)


# ---- a full disk: a file-size limit in a child process -----------------------------------
def _download_with_size_limit(url: str, dest: Path, limit: int, member: str | None) -> str:
    """Run download_file in a child process whose files may not grow past ``limit`` bytes
    (writes then fail with EFBIG, like a full disk); return its error line."""
    script = textwrap.dedent(f"""
        import resource, signal, sys
        from adrank.data.datasets import download_file
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
        try:
            download_file({url!r}, {str(dest)!r}, {MD5!r}, archive_member={member!r})
        except Exception as exc:
            print(f"{{type(exc).__name__}}: {{exc}}")
            sys.exit(3)
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr[-2000:]
    return proc.stdout.strip()


@pytest.mark.skipif(sys.platform != "linux", reason="uses RLIMIT_FSIZE")
@pytest.mark.parametrize(
    ("path", "member", "dest_name"),
    [
        ("data.tsv", None, "data.tsv"),  # fails while the transfer is written
        ("pack.zip", "pack/data.tsv", "data.tsv"),  # the zip fits; its extraction does not
    ],
)
def test_full_disk_is_reported_as_a_local_write_error(
    base_url: str, tmp_path: Path, path: str, member: str | None, dest_name: str
) -> None:
    url = f"{base_url}/{path}"
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "keep.txt").write_text("a user's file")
    message = _download_with_size_limit(url, cache / dest_name, len(DATA) // 4, member)
    assert message.startswith("DownloadError:"), message
    assert url in message and "File too large" in message
    # it is the local disk, not the transfer or the content, that failed
    assert "interrupted" not in message and "decode" not in message
    assert str(cache) in message
    assert _names(cache) == ["keep.txt"]  # no partial file, the user's file kept


# ---- an HTML error page served with status 200 ---------------------------------------------
def test_html_page_with_status_200_is_rejected_and_named(base_url: str, tmp_path: Path) -> None:
    url = f"{base_url}/error-page.tsv"
    with pytest.raises(ChecksumError) as info:
        download_file(url, tmp_path / "data.tsv.gz", MD5, size=len(DATA))
    message = str(info.value)
    assert url in message and f"expected {len(DATA)}" in message
    assert "text/html" in message  # says what the server actually sent
    assert _names(tmp_path) == []


# ---- leftovers of an interrupted download; two processes at once --------------------------
def test_leftovers_of_an_interrupted_download_are_neither_used_nor_deleted(
    base_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "one"
    folder.mkdir()
    stale = {".data.tsv.gz.k1l2m3.download": DATA[:999], ".data.tsv.gz.x9y8z7.part": b"\x1f\x8b"}
    for name, content in stale.items():
        (folder / name).write_bytes(content)
    ensure_files(_OneFile(f"{base_url}/data.tsv"), tmp_path)
    assert gzip.decompress((folder / "data.tsv.gz").read_bytes()) == DATA
    # another process may still be writing them: they are left alone
    assert _names(folder) == sorted(["data.tsv.gz", *stale])


def test_two_processes_downloading_the_same_dataset(base_url: str, tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys
        from adrank.data.datasets import ensure_files
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_download_edge_cases import _OneFile
        ensure_files(_OneFile({base_url + "/data.tsv"!r}), {str(tmp_path)!r}, verify=True)
    """)
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
    assert gzip.decompress((tmp_path / "one" / "data.tsv.gz").read_bytes()) == DATA
    assert _names(tmp_path / "one") == ["data.tsv.gz"]
