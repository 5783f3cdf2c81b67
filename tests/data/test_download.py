"""Downloads against a real HTTP server on 127.0.0.1: checksums, truncation, 404, zip
members, ``ensure_files`` and the dataset registry."""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import socket
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import pytest

from adrank.data.datasets import (
    ChecksumError,
    DatasetBuilder,
    DatasetUnavailableError,
    DownloadError,
    RemoteFile,
    available_datasets,
    download_file,
    ensure_files,
    get_dataset,
    resolve_data_dir,
    verify_file,
)
from adrank.data.schema import CategoricalFeature, Schema


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@dataclass
class FileServer:
    base: str
    files: dict[str, bytes]
    truncated: dict[str, bytes]
    requests: list[str] = field(default_factory=list)

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        state: FileServer = self.server.state  # type: ignore[attr-defined]
        name = self.path.lstrip("/")
        state.requests.append(name)
        if name in state.files:
            body = state.files[name]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif name in state.truncated:
            # announce the full length, send half, then drop the connection
            body = state.truncated[name]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
        else:
            self.send_error(404, "Not Found")

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture
def server() -> Iterator[FileServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    state = FileServer(f"http://127.0.0.1:{httpd.server_address[1]}", {}, {})
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _content(n_rows: int = 2000) -> bytes:
    return "".join(f"{i}\tuser{i % 17}\titem{i % 31}\n" for i in range(n_rows)).encode()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# ---- download_file ----------------------------------------------------------------------
def test_download_stores_gzip_and_verifies_md5(server: FileServer, tmp_path: Path) -> None:
    data = _content()
    server.files["a.tsv"] = data
    dest = tmp_path / "ds" / "a.tsv.gz"
    assert download_file(server.url("a.tsv"), dest, md5(data)) == dest
    assert gzip.decompress(dest.read_bytes()) == data
    assert _leftovers(dest.parent) == ["a.tsv.gz"]  # no temp files
    verify_file(dest, md5(data), len(data))


def test_download_plain_destination_and_gzip_source(server: FileServer, tmp_path: Path) -> None:
    data = _content(300)
    server.files["b.tsv"] = data
    server.files["c.tsv.gz"] = gzip.compress(data)
    plain = download_file(server.url("b.tsv"), tmp_path / "b.tsv", md5(data))
    assert plain.read_bytes() == data
    # a gzip source is verified on its uncompressed content and re-stored as gzip
    dest = download_file(server.url("c.tsv.gz"), tmp_path / "c.tsv.gz", md5(data), decompress="gz")
    assert gzip.decompress(dest.read_bytes()) == data


def test_checksum_mismatch_leaves_no_file(server: FileServer, tmp_path: Path) -> None:
    server.files["a.tsv"] = _content()
    dest = tmp_path / "ds" / "a.tsv.gz"
    with pytest.raises(ChecksumError, match="md5 of the uncompressed content is"):
        download_file(server.url("a.tsv"), dest, "0" * 32)
    assert _leftovers(dest.parent) == []


def test_size_mismatch_is_a_checksum_error(server: FileServer, tmp_path: Path) -> None:
    data = _content(50)
    server.files["a.tsv"] = data
    with pytest.raises(ChecksumError, match=f"expected {len(data) + 1}"):
        download_file(server.url("a.tsv"), tmp_path / "a.tsv", md5(data), size=len(data) + 1)
    assert _leftovers(tmp_path) == []


def test_interrupted_transfer_raises_and_leaves_no_partial_file(
    server: FileServer, tmp_path: Path
) -> None:
    data = _content(5000)
    server.truncated["big.tsv"] = data
    dest = tmp_path / "ds" / "big.tsv.gz"
    with pytest.raises(DownloadError, match=r"truncated|interrupted") as info:
        download_file(server.url("big.tsv"), dest, md5(data), timeout=10)
    assert server.url("big.tsv") in str(info.value)
    assert _leftovers(dest.parent) == []


def test_http_404_is_a_clear_error(server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404") as info:
        download_file(server.url("nope.csv"), tmp_path / "nope.csv.gz", None)
    assert "nope.csv" in str(info.value)
    assert isinstance(info.value, DatasetUnavailableError)
    assert _leftovers(tmp_path) == []


def test_unreachable_host_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DownloadError, match="cannot download"):
        download_file(f"http://127.0.0.1:{port}/x.csv", tmp_path / "x.csv", None, timeout=5)


def test_zip_member_extraction(server: FileServer, tmp_path: Path) -> None:
    inner = _content(400)
    server.files["bundle.zip"] = _zip({"Bundle/data/log.csv": inner, "Bundle/README.txt": b"hi"})
    dest = download_file(
        server.url("bundle.zip"), tmp_path / "log.csv.gz", md5(inner),
        archive_member="Bundle/data/log.csv",
    )  # fmt: skip
    assert gzip.decompress(dest.read_bytes()) == inner
    with pytest.raises(DownloadError, match=r"no member 'Bundle/missing\.csv'"):
        download_file(
            server.url("bundle.zip"), tmp_path / "m.csv.gz", None,
            archive_member="Bundle/missing.csv",
        )  # fmt: skip
    assert _leftovers(tmp_path) == ["log.csv.gz"]


# ---- ensure_files -----------------------------------------------------------------------
class _FakeBuilder(DatasetBuilder):
    name = "fake_for_tests"
    description = "test builder"

    def __init__(
        self, files: tuple[RemoteFile, ...], optional: tuple[RemoteFile, ...] = ()
    ) -> None:
        self.files = files
        self.optional_files = optional

    def schema(self) -> Schema:
        return Schema(labels=("label",), features=(CategoricalFeature("x"),))

    def build_splits(
        self, data_dir: Path, seed: int | None = None, bad_rows: str = "error"
    ) -> dict[str, pl.DataFrame]:
        frame = pl.DataFrame({"label": [1], "x": ["a"]})
        return {"train": frame, "valid": frame, "test": frame}


def _fake_dataset(server: FileServer) -> tuple[_FakeBuilder, dict[str, bytes]]:
    plain, member_a, member_b = _content(100), _content(200), _content(300)
    server.files["plain.tsv"] = plain
    server.files["pack.zip"] = _zip({"pack/a.tsv": member_a, "pack/b.tsv": member_b})
    files = (
        RemoteFile("fake/plain.tsv.gz", server.url("plain.tsv"), md5(plain), len(plain)),
        RemoteFile("fake/raw/a.tsv.gz", server.url("pack.zip"), md5(member_a), None, "pack/a.tsv"),
        RemoteFile("fake/raw/b.tsv.gz", server.url("pack.zip"), md5(member_b), None, "pack/b.tsv"),
    )
    return _FakeBuilder(files), {"plain": plain, "a": member_a, "b": member_b}


def test_ensure_files_downloads_once_into_gz_layout(server: FileServer, tmp_path: Path) -> None:
    builder, contents = _fake_dataset(server)
    ensure_files(builder, tmp_path)
    assert gzip.decompress((tmp_path / "fake/plain.tsv.gz").read_bytes()) == contents["plain"]
    assert gzip.decompress((tmp_path / "fake/raw/a.tsv.gz").read_bytes()) == contents["a"]
    assert gzip.decompress((tmp_path / "fake/raw/b.tsv.gz").read_bytes()) == contents["b"]
    assert sorted(server.requests) == ["pack.zip", "plain.tsv"]  # the zip is fetched once
    ensure_files(builder, tmp_path, verify=True)  # present files: nothing is fetched again
    assert len(server.requests) == 2
    assert _leftovers(tmp_path / "fake/raw") == ["a.tsv.gz", "b.tsv.gz"]


def test_ensure_files_accepts_plain_copies(server: FileServer, tmp_path: Path) -> None:
    builder, contents = _fake_dataset(server)
    (tmp_path / "fake/raw").mkdir(parents=True)
    (tmp_path / "fake/plain.tsv").write_bytes(contents["plain"])
    (tmp_path / "fake/raw/a.tsv").write_bytes(contents["a"])
    (tmp_path / "fake/raw/b.tsv.gz").write_bytes(gzip.compress(contents["b"]))
    ensure_files(builder, tmp_path, download=False, verify=True)
    assert server.requests == []


def test_ensure_files_without_download_names_missing_files(
    server: FileServer, tmp_path: Path
) -> None:
    builder, _ = _fake_dataset(server)
    with pytest.raises(DatasetUnavailableError) as info:
        ensure_files(builder, tmp_path, download=False)
    message = str(info.value)
    for f in builder.files:
        assert str(tmp_path / f.path) in message
    assert "ADRANK_DATA_DIR" in message and "--data-dir" in message
    assert server.requests == []


def test_ensure_files_download_failure_is_unavailable(server: FileServer, tmp_path: Path) -> None:
    builder, _ = _fake_dataset(server)
    del server.files["pack.zip"]
    with pytest.raises(DatasetUnavailableError, match="HTTP 404") as info:
        ensure_files(builder, tmp_path)
    assert "[MISSING]" in str(info.value) and "fake/raw/a.tsv.gz" in str(info.value)
    assert not (tmp_path / "fake/raw/a.tsv.gz").exists()


def test_ensure_files_checksum_error_propagates(server: FileServer, tmp_path: Path) -> None:
    data = _content(10)
    server.files["x.tsv"] = data
    builder = _FakeBuilder((RemoteFile("fake/x.tsv.gz", server.url("x.tsv"), "f" * 32),))
    with pytest.raises(ChecksumError):
        ensure_files(builder, tmp_path)
    assert not (tmp_path / "fake/x.tsv.gz").exists()


def test_ensure_files_verify_detects_corrupt_local_file(server: FileServer, tmp_path: Path) -> None:
    builder, contents = _fake_dataset(server)
    ensure_files(builder, tmp_path)
    (tmp_path / "fake/plain.tsv.gz").write_bytes(gzip.compress(contents["plain"] + b"extra\n"))
    with pytest.raises(ChecksumError, match=r"plain\.tsv\.gz"):
        ensure_files(builder, tmp_path, verify=True)


def test_ensure_files_file_without_source(tmp_path: Path) -> None:
    builder = _FakeBuilder((RemoteFile("fake/private.csv.gz", "", ""),))
    with pytest.raises(DatasetUnavailableError, match="no public download"):
        ensure_files(builder, tmp_path)


def test_optional_file_failure_only_warns(
    server: FileServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = _content(10)
    server.files["req.tsv"] = data
    builder = _FakeBuilder(
        (RemoteFile("fake/req.tsv.gz", server.url("req.tsv"), md5(data)),),
        optional=(RemoteFile("fake/opt.tsv.gz", server.url("missing.tsv"), ""),),
    )
    with caplog.at_level(logging.WARNING):
        ensure_files(builder, tmp_path)
    assert (tmp_path / "fake/req.tsv.gz").exists()
    assert not (tmp_path / "fake/opt.tsv.gz").exists()
    assert "optional file" in caplog.text


# ---- registry and data dir -----------------------------------------------------------------
def test_registry_lists_every_dataset() -> None:
    expected = {"frappe", "frappe_x1", "movielenslatest_x1", "criteo", "avazu",
                "movielens_100k", "open_bandit", "ali_ccp", "aliexpress"}  # fmt: skip
    assert expected <= set(available_datasets())
    for name in expected:
        builder = get_dataset(name)
        assert builder.name == name
        schema = builder.schema()
        assert builder.raw_feature_columns() == [f.name for f in schema.features]
        for f in (*builder.files, *builder.optional_files):
            assert not Path(f.path).is_absolute()
            assert f.md5 == "" or len(f.md5) == 32
    with pytest.raises(KeyError, match=r"available datasets:.*frappe"):
        get_dataset("no_such_dataset")


def test_resolve_data_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ADRANK_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "cli") == tmp_path / "cli"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("ADRANK_DATA_DIR")
    assert resolve_data_dir() == Path("~/.cache/adrank").expanduser()
