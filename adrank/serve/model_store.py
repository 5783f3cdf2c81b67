"""The model store: numbered, immutable versions of a model in the model root, and the
``latest`` pointer that servers follow (``docs/serving.md``, "Following a model store").

The store is a model root (:mod:`adrank.serve.model_root`); a model in it is a versioned
model, laid out like TF Serving's model base paths::

    STORE/
      NAME/                   default name: "default"
        .adrank               marker: an adrank "model_store" directory
        1/  2/  3/ ...        complete run directories, read-only once published
        latest                one version number ("3\\n"), replaced atomically

:func:`publish` copies a finished run directory into ``NAME/.N.<random>.tmp``, makes it
read-only, renames it to ``NAME/N`` and then moves ``latest`` to ``N``. The number is
claimed first with an exclusive create of ``NAME/.N.claim`` (``O_CREAT | O_EXCL``), so
concurrent publishers never get the same number, and a reader never sees half a version.
``latest`` only moves forward when publishing: a publisher that finishes after a later one
leaves ``latest`` on the later version. :func:`rollback` is the one deliberate backward
move; it never deletes a version. Pointer updates hold an advisory lock
(``fcntl.flock`` on ``NAME/.lock``; POSIX only).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from adrank.artifact import MANIFEST, REQUIRED_FILES
from adrank.outputs import MARKER, OutputDirError, claim_dir, read_marker
from adrank.serve.model_root import LATEST, ModelRoot, is_version, set_latest

logger = logging.getLogger(__name__)

#: The marker kind of a versioned model directory written by :func:`publish`.
STORE_KIND = "model_store"
#: The model name used when none is given (TF Serving's default model name).
DEFAULT_NAME = "default"
_LOCK = ".lock"
_CLAIM = ".{}.claim"
#: Run-directory entries that are not part of a served model (training state, test scores).
_SKIPPED = frozenset({"checkpoint.pt", "best.pt", "test_predictions.npy", MARKER})


class StoreError(ValueError):
    """A publish or rollback the store refuses; the message says why."""


@dataclass(frozen=True)
class Published:
    """What :func:`publish` did: the new version, its directory, and ``latest`` after it."""

    version: int
    path: Path
    latest: int


def model_dir(store: str | Path, name: str = DEFAULT_NAME) -> Path:
    """The directory of versioned model ``name`` in ``store`` (checked like a reference)."""
    store = Path(store)
    if not store.is_dir():
        raise StoreError(f"the store {store} is not a directory")
    rel = ModelRoot(store).check_reference(name)
    if is_version(rel.name):
        raise StoreError(f"model name {name!r} ends in a number, which would read as a version")
    return store / rel


def versions(directory: str | Path) -> list[int]:
    """The published versions of a versioned model directory, ascending."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if is_version(p.name))


def latest_version(directory: str | Path) -> int | None:
    """The version ``latest`` names (else the highest version; None when there is none).
    Raises :class:`StoreError` for a pointer that does not hold a version number."""
    pointer = Path(directory) / LATEST
    try:
        text = pointer.read_text().strip()
    except FileNotFoundError:
        found = versions(directory)
        return found[-1] if found else None
    if not is_version(text):
        raise StoreError(f"{pointer} holds {text[:40]!r}, not a version number")
    return int(text)


def publish(run_dir: str | Path, store: str | Path, name: str = DEFAULT_NAME) -> Published:
    """Copy the finished run ``run_dir`` into ``store`` as the next version of ``name`` and
    move ``latest`` to it unless a later version is already there (module docstring)."""
    run_dir = Path(run_dir)
    files = _run_files(run_dir)
    Path(store).mkdir(parents=True, exist_ok=True)
    target = model_dir(store, name)
    _claim_model_dir(target)
    try:  # a malformed pointer is refused before a version is made, not after
        latest_version(target)
    except StoreError as exc:
        raise StoreError(
            f"{exc}: nothing was published; point it at a published version first "
            f"(adrank rollback --store {store} --name {name} --to N)"
        ) from None
    version = _claim_number(target)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".tmp", dir=target))
        try:
            for rel in files:
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(run_dir / rel, dest)
            _make_read_only(tmp)
            os.rename(tmp, target / str(version))  # the claim keeps the number ours
        except BaseException:
            _make_writable(tmp)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    finally:
        (target / _CLAIM.format(version)).unlink(missing_ok=True)
    with _locked(target):
        current = latest_version(target) if (target / LATEST).exists() else None
        if current is None or version > current:
            set_latest(target, version)
            current = version
    logger.info("published %s as %s/%d (latest: %d)", run_dir, name, version, current)
    return Published(version, target / str(version), current)


def rollback(store: str | Path, to: int, name: str = DEFAULT_NAME) -> tuple[int | None, int]:
    """Point ``latest`` of ``name`` at the published version ``to`` -> (previous, to).
    Nothing is deleted; publishing again moves ``latest`` past ``to`` as usual. A pointer
    that holds no version number is replaced too (``previous`` is then ``None``)."""
    target = model_dir(store, name)
    found = versions(target)
    if not found:
        raise StoreError(f"{target} holds no published versions")
    if to not in found or not (target / str(to) / MANIFEST).is_file():
        raise StoreError(f"{name} has no version {to} (published: {_ranges(found)})")
    with _locked(target):
        try:
            previous = latest_version(target)
        except StoreError as exc:  # rollback is how an operator repairs the pointer
            logger.warning("%s; replacing it with %d", exc, to)
            previous = None
        set_latest(target, to)
    logger.info("rolled %s back: latest %s -> %d", name, previous, to)
    return previous, to


# ------------------------------------------------------------------------ helpers -----
def _run_files(run_dir: Path) -> list[Path]:
    """The files of a finished run directory that make up the served model (relative)."""
    manifest_path = run_dir / MANIFEST
    if not manifest_path.is_file():
        raise StoreError(f"{run_dir} has no {MANIFEST}: it is not a finished adrank run directory")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StoreError(f"{manifest_path} is not readable JSON: {exc}") from exc
    stream = manifest.get("stream") or {}
    if stream.get("servable") is False:
        raise StoreError(
            f"{run_dir} holds one part of a {stream.get('strategy')!r} stream model (its "
            "scores also need parts a run directory does not hold); servers would refuse it, "
            "so it is not published"
        )
    listed = [*manifest.get("files", REQUIRED_FILES), MANIFEST]
    missing = sorted(f for f in listed if not (run_dir / f).is_file())
    if missing:
        raise StoreError(f"{run_dir} is missing {missing}: not a finished run directory")
    out = []
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if path.is_file() and rel.parts[0] not in _SKIPPED and not rel.parts[0].startswith("."):
            out.append(rel)
    return out


def _claim_model_dir(target: Path) -> None:
    """Make ``target`` an adrank model-store directory, refusing a run directory and any
    non-empty directory that is neither a store nor a hand-made versioned model."""
    if (target / MANIFEST).exists():
        raise StoreError(
            f"{target} is a run directory, not a versioned model: publish under another --name"
        )
    marker = read_marker(target) if target.is_dir() else None
    if marker is not None and marker.get("kind") == STORE_KIND:
        return
    names = [p.name for p in target.iterdir()] if target.is_dir() else []
    legacy = frozenset(n for n in names if is_version(n) or n == LATEST)
    try:
        claim_dir(target, STORE_KIND, legacy_entries=legacy or frozenset({LATEST}))
    except OutputDirError as exc:
        raise StoreError(str(exc)) from exc


def _claim_number(target: Path) -> int:
    """The next free version number, claimed by an exclusive create of its claim file.

    The number is above every version, claim and the number ``latest`` names: a version
    deleted by hand while ``latest`` still names it is never numbered again (a server still
    serving it would take the new one for the one it has, and ``latest`` would not move)."""
    while True:
        taken = versions(target)
        claimed = [int(p.name[1:-6]) for p in target.glob(".*.claim") if is_version(p.name[1:-6])]
        named = _pointer_number(target)
        number = max([0, *taken, *claimed, *([named] if named else [])]) + 1
        try:
            fd = os.open(target / _CLAIM.format(number), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            continue  # another publisher claimed it first: take the next one
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
        if (target / str(number)).exists():  # made by hand meanwhile
            (target / _CLAIM.format(number)).unlink(missing_ok=True)
            continue
        return number


def _pointer_number(target: Path) -> int | None:
    """The number ``latest`` holds, or None (no pointer, or not a number)."""
    try:
        text = (target / LATEST).read_text().strip()
    except OSError:
        return None
    return int(text) if is_version(text) else None


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    import fcntl

    with open(target / _LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_READ_ONLY_FILE = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
_READ_ONLY_DIR = _READ_ONLY_FILE | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH


def _make_read_only(root: Path) -> None:
    """Files 0444 and directories 0555, deepest first (the version directory last)."""
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        path.chmod(_READ_ONLY_DIR if path.is_dir() else _READ_ONLY_FILE)
    root.chmod(_READ_ONLY_DIR)


def _make_writable(root: Path) -> None:
    with contextlib.suppress(OSError):
        for path in [root, *root.rglob("*")]:
            if path.is_dir():
                path.chmod(path.stat().st_mode | stat.S_IWUSR)


def _ranges(found: list[int]) -> str:
    return ", ".join(str(v) for v in found) if len(found) <= 12 else f"{found[0]}..{found[-1]}"


__all__ = [
    "DEFAULT_NAME",
    "STORE_KIND",
    "Published",
    "StoreError",
    "latest_version",
    "model_dir",
    "publish",
    "rollback",
    "versions",
]
