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

A claim file holds its publisher's pid and host (JSON) and is locked (``fcntl.flock``) by
that publisher until it has finished. A publisher killed mid-publish (SIGKILL, a crash,
power loss) leaves its claim behind, and the kernel drops the lock: such a **stale** claim
(unlocked, written by a process of this host that no longer runs) is removed by the next
publisher, with the dead publisher's temporary directory, so its number is used again
instead of being skipped forever. A claim from another host, from a process still running,
or in the older pid-only format is never taken.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from adrank.artifact import CALIBRATION_FILE, MANIFEST, REQUIRED_FILES
from adrank.outputs import MARKER, OutputDirError, claim_dir, read_marker
from adrank.serve.model_root import LATEST, ModelRoot, is_version, set_latest
from adrank.utils import fsync_file

if TYPE_CHECKING:
    from adrank.serve.predictor import Predictor

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


def input_changes(
    store: str | Path, name: str, run_dir: str | Path, candidate: Predictor | None = None
) -> list[str]:
    """How the model in ``run_dir`` (``candidate``, when already loaded) would change what
    clients of ``name``'s latest version send and get (the swap gate's signature,
    :mod:`adrank.serve.swap_gate`); empty when nothing changes or nothing is published yet."""
    from adrank.serve.predictor import Predictor
    from adrank.serve.swap_gate import serving_signature, signature_differences

    try:
        target = model_dir(store, name)
        latest = latest_version(target) if target.is_dir() else None
    except StoreError:  # no store yet, or a bad pointer: publish itself says so
        return []
    if latest is None or (target / str(latest)).resolve() == Path(run_dir).resolve():
        return []
    try:
        serving = serving_signature(Predictor.load(target / str(latest)))
        candidate = candidate or Predictor.load(run_dir)
    except Exception as exc:  # a model that does not load: the swap gate judges it
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        logger.warning("could not compare %s with %s/%d: %s", run_dir, name, latest, first)
        return []
    return signature_differences(serving, serving_signature(candidate))


def _incompatible(what: str, changes: list[str], advice: str) -> StoreError:
    """The refusal of a model whose inputs or outputs differ from the latest version's."""
    return StoreError(
        f"{what} reads or gives other fields than the latest version ("
        + "; ".join(changes[:5])
        + f"): servers following the store would refuse it{advice}"
    )


def _checked(run_dir: Path, what: str) -> Predictor:
    """The model in ``run_dir`` through the swap gate's own checks (it loads; one all-null
    record scores finite probabilities), or a :class:`StoreError`: servers would refuse it."""
    from adrank.serve.swap_gate import SwapRefused, load_checked

    try:
        return load_checked(run_dir)
    except SwapRefused as exc:
        raise StoreError(
            f"{what}: {exc}. Servers following the store would refuse it; nothing was changed"
        ) from None


def publish(
    run_dir: str | Path,
    store: str | Path,
    name: str = DEFAULT_NAME,
    *,
    allow_incompatible: bool = False,
    check: bool = True,
) -> Published:
    """Copy the finished run ``run_dir`` into ``store`` as the next version of ``name`` and
    move ``latest`` to it unless a later version is already there (module docstring).

    A model whose inputs or outputs differ from the latest version's (:func:`input_changes`)
    is refused unless ``allow_incompatible``: a server following the store refuses to swap
    it in, but one started later would serve it to clients of the old one. With ``check``
    (the default; ``adrank publish`` always checks) a model the swap gate would refuse (it
    does not load, or scores a non-finite value) is refused first."""
    run_dir = Path(run_dir)
    files = _run_files(run_dir)
    candidate = _checked(run_dir, f"cannot publish {run_dir}") if check else None
    changes = input_changes(store, name, run_dir, candidate)
    if changes and not allow_incompatible:
        raise _incompatible(
            f"{run_dir}",
            changes,
            ", and one started later would serve it to the old clients. Publish it under "
            "another --name, or pass --allow-incompatible",
        )
    if changes:
        logger.warning("publishing %s with other inputs or outputs: %s", run_dir, changes[:5])
    if _drops_calibration(store, name, run_dir):
        logger.warning(
            "%s is not calibrated, but %s's latest version is: served scores change scale "
            "(run `adrank calibrate %s` first, unless that is intended)",
            run_dir,
            name,
            run_dir,
        )
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
    claim = _CLAIMS.pop((target, version), None)
    try:
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".tmp", dir=target))
        except OSError as exc:
            raise _write_failed(run_dir, name, version, exc) from exc
        try:
            for rel in files:
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(run_dir / rel, dest)
                fsync_file(dest)  # on disk before `latest` can name it
            _make_read_only(tmp)
            os.rename(tmp, target / str(version))  # the claim keeps the number ours
        except BaseException as exc:
            _make_writable(tmp)
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError):
                raise _write_failed(run_dir, name, version, exc) from exc
            raise
    finally:
        (target / _CLAIM.format(version)).unlink(missing_ok=True)  # while still locked
        if claim is not None:
            os.close(claim)
    with _locked(target):
        current = latest_version(target) if (target / LATEST).exists() else None
        if current is None or version > current:
            set_latest(target, version)
            current = version
    logger.info("published %s as %s/%d (latest: %d)", run_dir, name, version, current)
    return Published(version, target / str(version), current)


def _drops_calibration(store: str | Path, name: str, run_dir: Path) -> bool:
    """Whether ``name``'s latest version has a calibration that ``run_dir`` lacks (a warm
    start or a retrain published without ``adrank calibrate``)."""
    try:
        target = model_dir(store, name)
        current = latest_version(target) if (target / LATEST).exists() else None
    except StoreError:
        return False  # a new store; publish refuses a malformed pointer itself
    return (
        current is not None
        and (target / str(current) / CALIBRATION_FILE).is_file()
        and not (run_dir / CALIBRATION_FILE).is_file()
    )


def rollback(
    store: str | Path,
    to: int,
    name: str = DEFAULT_NAME,
    *,
    allow_incompatible: bool = False,
    check: bool = True,
) -> tuple[int | None, int]:
    """Point ``latest`` of ``name`` at the published version ``to`` -> (previous, to).
    Nothing is deleted; publishing again moves ``latest`` past ``to`` as usual. A pointer
    that holds no version number is replaced too (``previous`` is then ``None``).

    With ``check`` a version the swap gate would refuse is refused (servers would stay on
    the old one while ``latest`` named it), and so is one whose inputs or outputs differ
    from the latest version's, unless ``allow_incompatible``."""
    target = model_dir(store, name)
    found = versions(target)
    if not found:
        raise StoreError(f"{target} holds no published versions")
    if to not in found or not (target / str(to) / MANIFEST).is_file():
        raise StoreError(f"{name} has no version {to} (published: {_ranges(found)})")
    if check:
        candidate = _checked(target / str(to), f"cannot roll {name} back to {to}")
        changes = input_changes(store, name, target / str(to), candidate)
        if changes and not allow_incompatible:
            raise _incompatible(
                f"{name}/{to}", changes, ". Pass --allow-incompatible to move latest anyway"
            )
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


def _write_failed(run_dir: Path, name: str, version: int, exc: OSError) -> StoreError:
    reason = f"[Errno {exc.errno}] {os.strerror(exc.errno)}" if exc.errno else str(exc)
    where = f" ({exc.filename})" if exc.filename else ""
    return StoreError(
        f"cannot publish {run_dir} as {name}/{version}: {reason}{where}; nothing was "
        "published and latest was not moved"
    )


def _claimed_numbers(target: Path) -> list[int]:
    return [int(p.name[1:-6]) for p in target.glob(".*.claim") if is_version(p.name[1:-6])]


#: (model directory, number) -> the open, locked claim file of a publish in progress.
_CLAIMS: dict[tuple[Path, int], int] = {}


def _claim_number(target: Path) -> int:
    """The next free version number, claimed by an exclusive create of its claim file. The
    claim's open descriptor, which holds its lock until the publish ends, is left in
    ``_CLAIMS`` for :func:`publish`.

    The number is above every version, claim and the number ``latest`` names: a version
    deleted by hand while ``latest`` still names it is never numbered again (a server still
    serving it would take the new one for the one it has, and ``latest`` would not move).
    Stale claims (module docstring) are removed first, so a dead publisher's number is
    used again."""
    import fcntl

    while True:
        _remove_stale_claims(target)
        taken = versions(target)
        named = _pointer_number(target)
        number = max([0, *taken, *_claimed_numbers(target), *([named] if named else [])]) + 1
        path = target / _CLAIM.format(number)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except FileExistsError:
            continue  # another publisher claimed it first: take the next one
        try:
            # Blocking: another publisher checking whether this claim is stale may hold the
            # lock for an instant; it reads an empty claim, which is never stale.
            fcntl.flock(fd, fcntl.LOCK_EX)
            owner = {"pid": os.getpid(), "host": socket.gethostname(), "created": time.time()}
            os.write(fd, json.dumps(owner).encode())
        except BaseException:
            path.unlink(missing_ok=True)
            os.close(fd)
            raise
        if (target / str(number)).exists():  # made by hand meanwhile
            path.unlink(missing_ok=True)
            os.close(fd)
            continue
        _CLAIMS[(target, number)] = fd
        return number


def _publisher_alive(pid: int, claimed_at: float | None) -> bool:
    """Whether the process that wrote a claim at ``claimed_at`` may still run: ``pid``
    exists, and (where ``/proc`` tells) it did not start after the claim was written (a
    process that did is another one that was given the dead publisher's pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it runs, as another user
        pass
    if not isinstance(claimed_at, int | float):
        return True
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return True  # cannot tell: assume it is the publisher
    return started <= claimed_at + 1.0  # btime and the tick count are coarse


def _stale_claim(path: Path) -> tuple[int, dict] | None:
    """(locked descriptor, owner) when ``path`` is a stale claim (module docstring), else
    None. The caller then holds the claim's lock: it alone may remove it."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # locked: its publisher is still at work
        os.close(fd)
        return None
    try:
        same = os.stat(path).st_ino == os.fstat(fd).st_ino  # not removed and made again
        owner = json.loads(os.read(fd, 4096) or b"null") if same else None
    except (OSError, ValueError):
        owner = None
    if (
        isinstance(owner, dict)
        and isinstance(owner.get("pid"), int)
        and owner.get("host") == socket.gethostname()
        and owner["pid"] != os.getpid()
        and not _publisher_alive(owner["pid"], owner.get("created"))
    ):
        return fd, owner
    os.close(fd)  # live, another host's, or an older pid-only claim: never taken
    return None


def _remove_stale_claims(target: Path) -> None:
    """Remove the claims, and temporary directories, of publishers that died mid-publish."""
    for number in _claimed_numbers(target):
        path = target / _CLAIM.format(number)
        stale = _stale_claim(path)
        if stale is None:
            continue
        fd, owner = stale
        try:
            for tmp in target.glob(f".{number}.*.tmp"):  # made only by the claim's holder
                if tmp.is_dir() and not tmp.is_symlink():
                    _make_writable(tmp)
                    shutil.rmtree(tmp, ignore_errors=True)
            path.unlink(missing_ok=True)  # while holding its lock
        finally:
            os.close(fd)
        logger.warning(
            "removed the stale claim of %s/%d: its publisher (pid %d on %s) died before it "
            "finished%s",
            target.name,
            number,
            owner["pid"],
            owner["host"],
            "" if (target / str(number)).exists() else f"; version {number} is free again",
        )


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
            if path.is_dir() and not path.is_symlink():  # never chmod through a link
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
