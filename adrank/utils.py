"""Small shared helpers: atomic writes, seeding, hashing of inputs."""

from __future__ import annotations

import hashlib
import os
import random
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


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` on a temp file in ``path``'s directory, then rename it onto
    ``path``. Readers never see a partially written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        # mkstemp creates 0600 files; give the result the usual umask-based permissions.
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


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
