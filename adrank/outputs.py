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
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adrank.utils import default_dir_mode

__all__ = ["MARKER", "OutputDirError", "claim_dir", "publish_dir", "read_marker"]

MARKER = ".adrank"


class OutputDirError(RuntimeError):
    """An output path would overwrite or delete something adrank did not create."""


def read_marker(path: Path) -> dict[str, Any] | None:
    """The marker of an adrank output directory, or ``None`` if it has none."""
    marker = Path(path) / MARKER
    if not marker.is_file():
        return None
    try:
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


def _refuse(path: Path, why: str) -> OutputDirError:
    return OutputDirError(
        f"refusing to write into {path}: {why}. adrank only writes into new or empty "
        f"directories, or into ones it created itself (they hold a '{MARKER}' marker); "
        "choose another output path"
    )


def claim_dir(path: str | Path, kind: str, legacy_entries: frozenset[str] = frozenset()) -> Path:
    """Create ``path`` (or adopt it if empty) as an adrank ``kind`` output, or reuse it if it
    already is one; raise :class:`OutputDirError` otherwise. Returns the path.

    ``legacy_entries``: a directory written before markers existed, holding nothing but
    these names, is adopted (a marker is added)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise _refuse(path, "it is a file")
    marker = read_marker(path) if path.exists() else None
    if marker is not None:
        if marker.get("kind") != kind:
            raise _refuse(path, f"it is an adrank {marker.get('kind')!r} output, not a {kind!r}")
        return path
    if path.exists() and any(path.iterdir()):
        names = sorted(p.name for p in path.iterdir())
        if not legacy_entries or not set(names) <= legacy_entries:
            raise _refuse(
                path, f"it is not empty and was not created by adrank (it holds {names[:5]})"
            )
    path.mkdir(parents=True, exist_ok=True)
    _write_marker(path, kind)
    return path


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
    path = Path(path).absolute()
    if path.exists() and not path.is_dir():
        raise _refuse(path, "it is a file")
    path.parent.mkdir(parents=True, exist_ok=True)
    _check_replaceable(path, kind, legacy_entries)  # fail before doing the work
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        default_dir_mode(tmp)  # mkdtemp's 0700 would make the output private
        build(tmp)
        _write_marker(tmp, kind, [p.name for p in tmp.iterdir() if p.name != MARKER])
        _swap_into_place(tmp, path, kind, legacy_entries)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _check_replaceable(path: Path, kind: str, legacy_entries: frozenset[str]) -> None:
    if not path.exists() or not any(path.iterdir()):
        return
    marker = read_marker(path)
    names = {p.name for p in path.iterdir()}
    if marker is None and legacy_entries and names <= legacy_entries:
        return
    if marker is None:
        shown = sorted(p.name for p in path.iterdir())[:5]
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
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
    old.rmdir()
    os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)  # only adrank's own entries (checked above)
