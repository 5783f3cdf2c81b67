"""Output directories that never destroy what the user owns.

Every directory adrank writes carries a marker file (``.adrank``) from its creation, naming
what kind of output it is and the top-level entries adrank put there. Two ways to write:

* :func:`claim_dir` for resumable outputs (run directories, benchmark outputs): the
  directory is created with a marker, or reused when it already has one of the same kind, or
  is empty. A non-empty directory without a marker is refused with a message.
* :func:`publish_dir` for one-shot outputs (prepared data, exports): the result is built in a
  temporary sibling and renamed into place. An existing target is replaced only when it is
  an adrank output of the same kind holding nothing but the entries adrank wrote there;
  otherwise the new result is discarded and the foreign files are named in the error.

Files inside are written atomically by their writers (:func:`adrank.utils.atomic_write`).

Concurrency: :func:`publish_dir` holds an exclusive lock beside the target
(``.NAME.adrank-lock``, ``fcntl.flock``) while it builds and swaps, so a second adrank
process writing the same output fails at once with :class:`OutputDirError` naming the
first (pid, host), and the result is always one complete build. A resumable output can be
held the same way for as long as a process writes into it (:func:`hold_dir`, or
``claim_dir(..., hold=True)``: a lock file ``.adrank.lock`` inside it), which keeps two
trainings from mixing their files in one run directory. The kernel drops these locks when
the process dies (even by SIGKILL), so a crash never leaves an output locked.

Errors: a folder that cannot be created or written (read-only, a file in the way, disk
full) is an :class:`OutputDirError` with a one-line reason, and a one-shot output is then
left exactly as it was.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from adrank.utils import WriteError, default_dir_mode, swap_dir

__all__ = [
    "HOLD_LOCK",
    "MARKER",
    "OutputDirError",
    "check_publishable",
    "claim_dir",
    "dir_busy",
    "hold_dir",
    "publish_dir",
    "read_marker",
    "release_dir",
]

MARKER = ".adrank"
#: The lock file inside a held output directory (:func:`hold_dir`).
HOLD_LOCK = ".adrank.lock"
#: errno values that mean "this location cannot be written", not "the input is bad".
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EIO})


class OutputDirError(RuntimeError):
    """An output path would overwrite or delete something adrank did not create."""


def read_marker(path: Path) -> dict[str, Any] | None:
    """The marker of an adrank output directory, or ``None`` if it has none."""
    marker = Path(path) / MARKER
    try:
        if not marker.is_file():
            return None
        data = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _write_marker(path: Path, kind: str, entries: list[str] | None = None) -> None:
    from adrank import __version__
    from adrank.utils import atomic_write_text

    data = {
        "kind": kind,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "adrank_version": __version__,
        "entries": sorted(entries) if entries is not None else None,
    }
    atomic_write_text(path / MARKER, json.dumps(data, indent=2))


def _is_write_error(exc: OSError, folder: Path) -> bool:
    """Whether ``exc`` is a failure to write into ``folder`` (disk full, file too large,
    read-only) rather than, say, an input file that cannot be read."""
    if exc.errno in _WRITE_ERRNOS:
        return True
    if exc.errno in (errno.EACCES, errno.EPERM) and exc.filename is not None:
        return Path(os.fsdecode(exc.filename)).absolute().is_relative_to(folder)
    return False


def _cannot_write(path: Path, exc: OSError, what: str = "") -> OutputDirError:
    """A one-line error for a folder that cannot be created or written."""
    reason = f"[Errno {exc.errno}] {os.strerror(exc.errno)}" if exc.errno else str(exc)
    name = exc.path if isinstance(exc, WriteError) else exc.filename
    where = f" ({name})" if name and str(name) != str(path) else ""
    return OutputDirError(f"cannot write {path}: {reason}{where}{what}")


def _refuse(path: Path, why: str) -> OutputDirError:
    return OutputDirError(
        f"refusing to write into {path}: {why}. adrank only writes into new or empty "
        f"directories, or into ones it created itself (they hold a '{MARKER}' marker); "
        "choose another output path"
    )


def claim_dir(
    path: str | Path,
    kind: str,
    legacy_entries: frozenset[str] = frozenset(),
    *,
    hold: bool = False,
) -> Path:
    """Create ``path`` (or adopt it if empty) as an adrank ``kind`` output, or reuse it if it
    already is one; raise :class:`OutputDirError` otherwise. Returns the path.

    ``legacy_entries``: a directory written before markers existed, holding nothing but
    these names, is adopted (a marker is added).

    ``hold``: also hold the directory for this process (:func:`hold_dir`) until
    :func:`release_dir` or the process exits; another process holding it is an
    :class:`OutputDirError` (it is checked before anything is written)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise _refuse(path, "it is a file")
    marker = read_marker(path) if path.exists() else None
    if marker is not None:
        if marker.get("kind") != kind:
            raise _refuse(path, f"it is an adrank {marker.get('kind')!r} output, not a {kind!r}")
        if hold:
            hold_dir(path)
        return path
    names = _listing(path)
    if names and not (legacy_entries and set(names) <= legacy_entries):
        raise _refuse(path, f"it is not empty and was not created by adrank (it holds {names[:5]})")
    try:
        path.mkdir(parents=True, exist_ok=True)
        if hold:
            hold_dir(path)
        _write_marker(path, kind)
    except FileExistsError as exc:  # a file where a parent folder should be
        raise _refuse(path, f"{exc.filename} is a file, not a folder") from None
    except NotADirectoryError as exc:
        raise _refuse(path, f"a part of it is a file, not a folder ({exc.filename})") from None
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    return path


#: what a :class:`~adrank.train.trainer.Trainer` writes into its ``run_dir``
TRAINER_FILES = ("checkpoint.pt", "best.pt", "metrics.jsonl")


def claim_trainer_dir(path: str | Path) -> Path:
    """The ``run_dir`` of a :class:`~adrank.train.trainer.Trainer` used on its own: a new or
    empty folder becomes an adrank run folder (:func:`claim_dir`), a run folder is reused,
    and any other folder is used as it is unless it holds a file the Trainer would replace
    (:data:`TRAINER_FILES`) that adrank did not write, which is refused."""
    path = Path(path)
    # claim_dir creates a new folder, reuses a run folder and refuses a file in the way
    if not path.is_dir() or read_marker(path) is not None or not _listing(path):
        return claim_dir(path, "run")
    theirs = [name for name in TRAINER_FILES if (path / name).exists()]
    if theirs:
        raise _refuse(
            path,
            f"it holds {theirs}, which the Trainer would replace, and adrank did not create "
            "the folder; give a new or empty run_dir",
        )
    return path


def _listing(path: Path) -> list[str]:
    """The sorted entry names of ``path`` ([] when it does not exist); a folder that cannot
    be listed is an :class:`OutputDirError`, not a traceback."""
    try:
        return sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    except OSError as exc:
        raise _cannot_write(path, exc, " (it cannot be listed)") from None


# ----------------------------------------------------------------------- locks -----
#: Directories this process holds (:func:`hold_dir`): resolved path -> open lock file.
_HELD: dict[Path, IO[str]] = {}


def _owner_text() -> str:
    return json.dumps(
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )


def _owner_of(handle: IO[str]) -> str:
    """'pid N on HOST since T' from a lock file's content (best effort)."""
    try:
        handle.seek(0)
        data = json.loads(handle.read() or "{}")
        return f"pid {data['pid']} on {data['host']} since {data['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _try_lock(lock_path: Path) -> IO[str] | None:
    """Open ``lock_path`` (created if missing) and lock it exclusively without waiting ->
    the open handle, or None when another process holds it. Handles a lock file that its
    previous holder removed meanwhile (the lock would then be on a deleted file)."""
    import fcntl

    for _ in range(20):
        # O_NOFOLLOW: a link planted at the lock's name never gets a user's file truncated
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        handle = os.fdopen(fd, "r+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        except BaseException:
            handle.close()
            raise
        try:
            same = os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            handle.seek(0)
            handle.truncate()
            handle.write(_owner_text())
            handle.flush()
            return handle
        handle.close()  # locked a file its holder had just removed: take the new one
    raise OutputDirError(f"cannot lock {lock_path}: it keeps being replaced")


def _busy(path: Path, lock_path: Path) -> OutputDirError:
    with contextlib.suppress(OSError), open(lock_path) as handle:
        who = _owner_of(handle)
        return OutputDirError(
            f"{path} is being written by another adrank process ({who}); wait for it to "
            "finish or choose another output path"
        )
    return OutputDirError(f"{path} is being written by another adrank process")


def hold_dir(path: str | Path) -> Path:
    """Hold the output directory ``path`` for this process until :func:`release_dir` or the
    process exits (the kernel releases the lock even after SIGKILL). Holding it again in
    the same process is a no-op. Raises :class:`OutputDirError` (naming the holder's pid
    and host) when another process holds it, or when it cannot be written."""
    path = Path(path)
    key = path.resolve()
    if key in _HELD:
        return path
    try:
        handle = _try_lock(path / HOLD_LOCK)
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    if handle is None:
        raise _busy(path, path / HOLD_LOCK)
    _HELD[key] = handle
    return path


def release_dir(path: str | Path) -> None:
    """Release a directory held by :func:`hold_dir` (no-op when not held). The lock file
    stays: removing it could let two processes hold two different files."""
    handle = _HELD.pop(Path(path).resolve(), None)
    if handle is not None:
        handle.close()


def dir_busy(path: str | Path) -> str | None:
    """Who holds ``path`` when another process does ('pid N on HOST since T'), else None."""
    path = Path(path)
    if path.resolve() in _HELD or not (path / HOLD_LOCK).is_file():
        return None
    import fcntl

    try:
        with open(path / HOLD_LOCK) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _owner_of(handle)
            return None
    except OSError:
        return None


@contextlib.contextmanager
def _sibling_lock(path: Path) -> Iterator[None]:
    """Exclusive lock on ``.NAME.adrank-lock`` beside ``path`` while a one-shot output is
    built and swapped in; removed afterwards (:func:`_try_lock` copes with that)."""
    lock_path = path.parent / f".{path.name}.adrank-lock"
    try:
        handle = _try_lock(lock_path)
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    if handle is None:
        raise _busy(path, lock_path)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            lock_path.unlink()  # while still holding it: see _try_lock
        handle.close()


def _foreign_entries(path: Path, marker: dict[str, Any]) -> list[str]:
    """Entries of an adrank output directory that adrank did not write there."""
    known = set(marker.get("entries") or ()) | {MARKER}
    return sorted(p.name for p in path.iterdir() if p.name not in known)


def publish_dir(
    path: str | Path,
    kind: str,
    build: Callable[[Path], None],
    legacy_entries: frozenset[str] = frozenset(),
) -> Path:
    """Build a one-shot output with ``build(tmp_dir)`` beside ``path``, then rename it into
    place (see the module docstring for when an existing ``path`` may be replaced).

    ``legacy_entries``: an unmarked directory holding nothing but these names (an output
    written before markers existed) may be replaced too."""
    path = check_publishable(path, kind, legacy_entries)  # fail before doing the work
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise _refuse(path, "a part of its parent is a file, not a folder") from None
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    with _sibling_lock(path):
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        except OSError as exc:
            raise _cannot_write(path, exc) from None
        try:
            default_dir_mode(tmp)  # mkdtemp's 0700 would make the output private
            build(tmp)
            _write_marker(tmp, kind, [p.name for p in tmp.iterdir() if p.name != MARKER])
            _swap_into_place(tmp, path, kind, legacy_entries)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if _is_write_error(exc, path.parent):  # disk full, file too large, read-only
                kept = " (it was left as it was)" if path.exists() else ""
                raise _cannot_write(path, exc, kept) from exc
            raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return path


def check_publishable(
    path: str | Path, kind: str, legacy_entries: frozenset[str] = frozenset()
) -> Path:
    """What :func:`publish_dir` checks before it builds, without writing anything: the
    target is not a file, may be replaced (see the module docstring), and its nearest
    existing parent is a folder this process can write into. Commands call it before they
    read their input, so a bad ``--output`` fails at once, not after the work. Returns the
    path ``publish_dir`` writes (a symbolic link's target)."""
    path = Path(path).absolute()
    if path.is_symlink():  # write where the link points; never replace the link itself
        if not path.exists():
            raise _refuse(path, f"it is a symbolic link to {os.readlink(path)}, which is missing")
        path = path.resolve()
    if path.exists() and not path.is_dir():
        raise _refuse(path, "it is a file")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise _refuse(path, f"a part of its parent is a file, not a folder ({parent})")
    if not os.access(parent, os.W_OK | os.X_OK):
        read_only = errno.EROFS if _read_only(parent) else errno.EACCES
        raise _cannot_write(path, OSError(read_only, os.strerror(read_only), str(parent)))
    _check_replaceable(path, kind, legacy_entries)
    return path


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _check_replaceable(path: Path, kind: str, legacy_entries: frozenset[str]) -> None:
    listed = _listing(path)
    if not listed:
        return
    marker = read_marker(path)
    names = set(listed)
    if marker is None and legacy_entries and names <= legacy_entries:
        return
    if marker is None:
        shown = listed[:5]
        raise _refuse(path, f"it is not empty and was not created by adrank (it holds {shown})")
    if marker.get("kind") != kind:
        raise _refuse(path, f"it is an adrank {marker.get('kind')!r} output, not a {kind!r}")
    foreign = _foreign_entries(path, marker)
    if foreign:
        raise _refuse(path, f"it holds files adrank did not write there: {foreign[:5]}")


def _swap_into_place(tmp: Path, path: Path, kind: str, legacy_entries: frozenset[str]) -> None:
    if not path.exists():
        os.replace(tmp, path)
        return
    _check_replaceable(path, kind, legacy_entries)  # again: it may have changed meanwhile
    if not any(path.iterdir()):
        path.rmdir()
        os.replace(tmp, path)
        return
    swap_dir(tmp, path)  # only adrank's own entries (checked above)
