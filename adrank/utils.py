"""Small shared helpers: atomic writes, seeding, hashing of inputs."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import resource
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once at import, before any threads.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def default_dir_mode(path: Path) -> None:
    """Give a directory made by ``tempfile.mkdtemp`` (mode 0700) the usual umask-based
    permissions before it is renamed into place as a user's output."""
    os.chmod(path, 0o777 & ~_UMASK)


class WriteError(OSError, RuntimeError):
    """A file could not be written (disk full, file size limit, read-only folder). The
    message is one line naming the file; the file's previous content, if any, is intact.
    An :class:`OSError` (``errno`` set) and a :class:`RuntimeError`, so callers catching
    either report it as a plain error. ``path``: the file that could not be written."""

    def __init__(self, code: int, message: str, path: Path) -> None:
        super().__init__(code, message)
        self.path = path


def _write_error(path: Path, exc: BaseException, tmp: Path | None = None) -> WriteError | None:
    """``exc`` as a :class:`WriteError` when it is (or, for a library that hides the OS
    error in its own exception, likely was) a failure to write; else None."""
    if isinstance(exc, WriteError):
        return None  # already says which file
    code = exc.errno if isinstance(exc, OSError) else None
    if code is None and tmp is not None and not isinstance(exc, KeyboardInterrupt | SystemExit):
        try:  # torch, pyarrow, ... report a failed write in their own words
            limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
            if limit != resource.RLIM_INFINITY and tmp.stat().st_size >= limit:
                code = errno.EFBIG
            elif os.statvfs(tmp.parent).f_bavail == 0:
                code = errno.ENOSPC
        except OSError:
            pass
    if code in (errno.EACCES, errno.EPERM) and isinstance(exc, OSError):
        name = exc.filename
        if name is not None and not Path(os.fsdecode(name)).absolute().is_relative_to(
            path.parent.absolute()
        ):
            return None  # another file (an input?) could not be opened: not a write error
    elif code not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EIO):
        return None
    reason = os.strerror(code)
    detail = "" if isinstance(exc, OSError) else f" ({type(exc).__name__}: {exc})"
    kept = "; its previous version was kept" if path.exists() else ""
    return WriteError(code, f"cannot write {path}: {reason}{detail}{kept}", path)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` on a temp file in ``path``'s directory, flush it to disk,
    then rename it onto ``path``. Readers never see a partially written file, and a crash
    (power loss included) leaves the old or the new content, never a truncated file.

    A failure to write (disk full, file size limit, read-only folder) raises
    :class:`WriteError` with a one-line message; the temp file is removed and ``path`` is
    left as it was. A symbolic link at ``path`` is replaced by the file, never written
    through: the file it pointed at is not touched."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise (_write_error(path, exc) or exc) from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        # mkstemp creates 0600 files; give the result the usual umask-based permissions.
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        fsync_file(tmp_path)
        os.replace(tmp_path, path)
    except BaseException as exc:
        error = _write_error(path, exc, tmp_path)
        tmp_path.unlink(missing_ok=True)
        if error is not None:
            raise error from exc
        raise


def fsync_file(path: Path) -> None:
    """Flush a written file's data to disk (before it is renamed over a good one)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def swap_dir(new: Path, target: Path) -> None:
    """Put the folder ``new`` in place of the existing folder ``target`` with renames (a
    reader sees one or the other); if the second rename fails, ``target`` is put back. The
    old folder is then removed: callers pass only folders adrank wrote."""
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    old.rmdir()
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(Path(path), lambda p: p.write_text(text))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(Path(path), lambda p: p.write_bytes(data))


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def file_digest(paths: Iterable[Path], extra: str = "") -> str:
    """SHA-256 over file names, sizes, mtimes and an extra string: a cheap cache key for
    raw inputs. Content changes that keep size and mtime are not detected; use
    :func:`content_digest` where that matters."""
    h = hashlib.sha256(extra.encode())
    for p in sorted(Path(x) for x in paths):
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def content_digest(paths: Iterable[Path], extra: str = "", chunk: int = 1 << 20) -> str:
    """SHA-256 over the bytes of files (sorted by path) plus an extra string."""
    h = hashlib.sha256(extra.encode())
    for p in sorted(Path(x) for x in paths):
        h.update(p.name.encode())
        with open(p, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()[:16]


def error_text(exc: BaseException) -> str:
    """The message of ``exc`` for a user: a ``KeyError``'s own text, not the repr that
    ``str(KeyError)`` gives (``"'unknown model ...'"``); every other error as ``str``."""
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc)
