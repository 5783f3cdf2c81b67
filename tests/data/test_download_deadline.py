"""A whole-transfer deadline for downloads, against a real HTTP server on 127.0.0.1 that
sends one byte a second (per-read timeouts never fire), and the temp file's fsync."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adrank.data.datasets.download import (
    DEADLINE_ENV,
    DownloadError,
    download_file,
    resolve_deadline,
)

BODY = b"label,a\n" + b"1,x\n" * 40


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/csv")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        if self.path == "/fast.csv":
            self.wfile.write(BODY)
            return
        for i in range(len(BODY)):  # /trickle.csv: one byte a second
            if self.server.stop.is_set():  # type: ignore[attr-defined]
                return
            try:
                self.wfile.write(BODY[i : i + 1])
                self.wfile.flush()
            except OSError:  # the client gave up
                return
            self.server.stop.wait(1.0)  # type: ignore[attr-defined]

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.stop = threading.Event()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.stop.set()  # type: ignore[attr-defined]
        httpd.shutdown()
        httpd.server_close()


def test_a_trickling_server_fails_at_the_deadline_and_leaves_nothing(
    server: str, tmp_path: Path
) -> None:
    dest = tmp_path / "data" / "train.csv"
    dest.parent.mkdir()
    dest.write_bytes(b"the previous good copy\n")
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match=r"did not finish within its deadline of 2s") as exc:
        download_file(f"{server}/trickle.csv", dest, None, timeout=30, deadline=2)
    elapsed = time.monotonic() - t0
    assert elapsed < 15  # generous: without the deadline this would take 168 s
    assert f"of {len(BODY)}" in str(exc.value) and "\n" not in str(exc.value)
    assert dest.read_bytes() == b"the previous good copy\n"  # untouched
    assert sorted(p.name for p in dest.parent.iterdir()) == ["train.csv"]  # no temp files


def test_the_deadline_comes_from_the_environment(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DEADLINE_ENV, "1.5")
    with pytest.raises(DownloadError, match=r"deadline of 1.5s"):
        download_file(f"{server}/trickle.csv", tmp_path / "t.csv", None, timeout=30)
    assert list(tmp_path.iterdir()) == []


def test_a_transfer_within_its_deadline_is_stored_and_verified(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "fast.csv.gz"
    md5 = hashlib.md5(BODY).hexdigest()
    assert download_file(f"{server}/fast.csv", dest, md5, deadline=30) == dest
    import gzip

    assert gzip.decompress(dest.read_bytes()) == BODY


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "inf", "soon"])
def test_a_bad_deadline_is_refused_in_one_line(bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEADLINE_ENV, bad)
    with pytest.raises(ValueError, match=rf"\${DEADLINE_ENV} must be a .*number of seconds"):
        resolve_deadline(None)
    monkeypatch.delenv(DEADLINE_ENV)
    assert resolve_deadline(None) is None and resolve_deadline(3) == 3.0
    with pytest.raises(ValueError, match="deadline must be a positive number"):
        resolve_deadline(0)


def test_the_content_is_on_disk_before_it_is_renamed_into_place(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real os.fsync runs on the temp file, while the destination does not exist yet."""
    dest = tmp_path / "fast.csv"
    synced: list[tuple[str, bool]] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), dest.exists()))
        real(fd)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name the synced file")
    monkeypatch.setattr(os, "fsync", fsync)
    download_file(f"{server}/fast.csv", dest, None)
    temp = [name for name, existed in synced if name.endswith(".part")]
    assert temp and not any(existed for name, existed in synced if name.endswith(".part"))
    assert dest.read_bytes() == BODY
