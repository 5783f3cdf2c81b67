"""The run directory / model artifact, and loading the splits of prepared data.

This module is neutral ground: training (:mod:`adrank.pipeline`), calibration, export and
serving all read and write artifacts through it, and none of them imports another's entry
points.

One directory holds everything needed to score raw records exactly as in training::

    manifest.json      format version, adrank version, model name, file list, metrics
    config.yaml        the RunConfig (model hyperparameters + training settings)
    schema.yaml        the raw-data schema
    processor/         the fitted FeatureProcessor (JSON + Arrow vocabularies)
    feature_map.json   model inputs
    model.pt           best weights (a plain state_dict: tensors only, loaded weights_only)
    metrics.json       validation/test metrics and training statistics
    calibration.json   optional calibration map (``adrank calibrate``)
    model.torchscript.pt / model.onnx   optional exports (``adrank export``)

``manifest.json`` is written last and atomically, so a directory with a manifest is
complete. Loading checks the format version and every listed file. Later additions
(calibration, exports) are written first and then listed by rewriting the manifest
atomically (:func:`update_manifest`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml

from adrank.config import RunConfig
from adrank.data.batches import TensorData
from adrank.data.feature_map import FeatureMap
from adrank.data.prepare import PreparedData
from adrank.data.processor import FeatureProcessor
from adrank.debias.position import build_position_model
from adrank.models.base import CTRModel
from adrank.utils import (
    atomic_write,
    atomic_write_text,
    content_digest,
    default_dir_mode,
    swap_dir,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

ARTIFACT_FORMAT_VERSION = 2
#: run directories of these format versions load (v1: single-task, feature map v1)
READABLE_ARTIFACT_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
CALIBRATION_FILE = "calibration.json"
REQUIRED_FILES = ("config.yaml", "schema.yaml", "feature_map.json", "model.pt", "metrics.json")


class ArtifactError(RuntimeError):
    """A run directory is missing, incomplete or of another format version."""


@dataclass
class Artifact:
    """A loaded run directory."""

    directory: Path
    manifest: dict[str, Any]
    config: RunConfig
    feature_map: FeatureMap
    processor: FeatureProcessor
    model: CTRModel
    metrics: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None


def write_artifact(
    run_dir: str | Path,
    *,
    config: RunConfig,
    processor_dir: Path,
    feature_map: FeatureMap,
    model: CTRModel,
    metrics: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write all artifact files into ``run_dir`` and finish with ``manifest.json``."""
    from adrank import __version__

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    processor = FeatureProcessor.load(processor_dir)
    atomic_write_text(
        run_dir / "schema.yaml", yaml.safe_dump(processor.schema.to_dict(), sort_keys=False)
    )
    target = run_dir / "processor"
    if target.is_symlink():
        raise ArtifactError(
            f"{target} is a symbolic link (to {os.readlink(target)}); adrank does not write "
            "through or replace links in a run directory: remove it or choose another run "
            "directory"
        )
    if Path(processor_dir).resolve() != target.resolve():
        _replace_dir(Path(processor_dir), target)
    feature_map.save(run_dir / "feature_map.json")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write(run_dir / "model.pt", lambda p: torch.save(state, p))
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2, default=float))
    manifest = {
        "format_version": ARTIFACT_FORMAT_VERSION,
        "adrank_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": config.model,
        "dataset": config.dataset,
        "files": [*REQUIRED_FILES, "processor/processor.json"],
        "metrics": {k: metrics.get(k) for k in ("valid", "test") if k in metrics},
        "calibration": None,
        **(extra or {}),
    }
    atomic_write_text(run_dir / MANIFEST, json.dumps(manifest, indent=2, default=float))
    return run_dir


def _replace_dir(source: Path, target: Path) -> None:
    """Copy the folder ``source`` to ``target`` through a private temp folder and swap it
    in with renames: a reader sees the old or the new folder, two writers never share a
    temp folder, and a failed copy leaves the old folder in place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        default_dir_mode(tmp)
        if target.exists():
            swap_dir(tmp, target)  # the run's own processor: not the user's
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    path = run_dir / MANIFEST
    if not run_dir.is_dir():
        raise ArtifactError(f"run directory not found: {run_dir}")
    if not path.exists():
        raise ArtifactError(
            f"{run_dir} has no {MANIFEST}: it is not a finished adrank run (was training "
            "interrupted? resume it with `adrank train ... --resume`)"
        )
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} cannot be read: it is truncated or not JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path} holds a {type(manifest).__name__}, not a run manifest")
    version = manifest.get("format_version")
    if version not in READABLE_ARTIFACT_VERSIONS:
        raise ArtifactError(
            f"{path}: artifact format version {version!r} is not supported by this adrank "
            f"(reads {list(READABLE_ARTIFACT_VERSIONS)}); re-export the run with a matching "
            "version"
        )
    missing = [f for f in manifest.get("files", []) if not (run_dir / f).exists()]
    if missing:
        raise ArtifactError(f"{run_dir} is incomplete: missing {missing}")
    return manifest


def load_artifact(run_dir: str | Path, device: str = "cpu") -> Artifact:
    """Load and validate a run directory; the model is in eval mode on ``device``."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    config = RunConfig.load(run_dir / "config.yaml")
    feature_map = _load_part(run_dir / "feature_map.json", FeatureMap.load)
    processor = _load_part(run_dir / "processor", FeatureProcessor.load)
    # a position-feature model (train.position_method=feature) scores at its fixed position
    model = build_position_model(config.model, feature_map, config.params, config.train)
    weights = run_dir / "model.pt"
    try:
        state = torch.load(weights, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises OSError, EOFError, KeyError, RuntimeError, ...
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else "no data"
        raise ArtifactError(
            f"{weights} cannot be read: it is truncated or not saved weights "
            f"({type(exc).__name__}: {first})"
        ) from exc
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ArtifactError(
            f"{weights} does not hold the weights of this run's {config.model!r} model "
            f"(config.yaml, feature_map.json): {' '.join(str(exc).split())[:300]}"
        ) from exc
    model.to(device).eval()
    metrics = _load_part(run_dir / "metrics.json", _read_json)
    calibration = None
    if manifest.get("calibration"):
        calibration = _load_part(run_dir / manifest["calibration"], _read_json)
        from adrank.serve.calibration import READABLE_CALIBRATION_VERSIONS

        if calibration.get("version") not in READABLE_CALIBRATION_VERSIONS:
            raise ArtifactError(
                f"{run_dir / manifest['calibration']}: calibration format version "
                f"{calibration.get('version')!r} is not supported (reads "
                f"{list(READABLE_CALIBRATION_VERSIONS)}); re-run `adrank calibrate`"
            )
    return Artifact(run_dir, manifest, config, feature_map, processor, model, metrics, calibration)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _load_part(path: Path, load: Callable[[Path], T]) -> T:
    """``load(path)``, with a damaged file (truncated JSON, a processor missing a key) an
    :class:`ArtifactError` naming it instead of the parser's bare error."""
    try:
        return load(path)
    except ArtifactError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        first = (str(exc).strip().splitlines() or ["no detail"])[0][:200]
        raise ArtifactError(f"{path} is damaged ({type(exc).__name__}: {first})") from exc


def update_manifest(
    run_dir: str | Path, updates: dict[str, Any], add_files: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Merge ``updates`` into a finished run's manifest and list ``add_files`` (which must
    already exist) in it; the manifest is rewritten atomically. Returns the new manifest."""
    run_dir = Path(run_dir)
    read_manifest(run_dir)  # a clear error for a missing or unfinished run first
    with _manifest_lock(run_dir):  # two updates at once (calibrate + export) both land
        manifest = read_manifest(run_dir)
        missing = [f for f in add_files if not (run_dir / f).exists()]
        if missing:
            raise ArtifactError(f"cannot list {missing} in {run_dir / MANIFEST}: not written")
        manifest.update(updates)
        files = list(manifest.get("files", []))
        manifest["files"] = files + [f for f in add_files if f not in files]
        atomic_write_text(run_dir / MANIFEST, json.dumps(manifest, indent=2, default=float))
    return manifest


#: Seconds :func:`update_manifest` waits for another process's manifest update.
MANIFEST_LOCK_TIMEOUT_S = 60.0


@contextlib.contextmanager
def _manifest_lock(run_dir: Path) -> Iterator[None]:
    """An exclusive lock on the run directory itself (``fcntl.flock`` on its descriptor:
    no file is added) for a read-modify-write of the manifest; waits a bounded time."""
    import fcntl  # POSIX only, like the model store's lock

    fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        deadline = time.monotonic() + MANIFEST_LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ArtifactError(
                        f"{run_dir / MANIFEST} is being updated by another process for over "
                        f"{MANIFEST_LOCK_TIMEOUT_S:.0f}s; try again when it has finished"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def save_calibration(run_dir: str | Path, calibration: dict[str, Any]) -> Path:
    """Write ``calibration.json`` atomically, then reference it from the manifest (so a
    reader sees either the old or the new calibration, never a half-written one)."""
    run_dir = Path(run_dir)
    read_manifest(run_dir)  # refuse to touch anything that is not a finished run
    path = run_dir / CALIBRATION_FILE
    atomic_write_text(path, json.dumps(calibration, indent=2, default=float))
    update_manifest(
        run_dir,
        {"calibration": CALIBRATION_FILE, "calibration_method": calibration.get("method")},
        add_files=(CALIBRATION_FILE,),
    )
    return path


def open_prepared_data(
    artifact: Artifact,
    *,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    prepared: str | Path | None = None,
) -> Any:
    """The prepared data a run was trained on: ``prepared`` when given (the folder moved),
    else the directory recorded in the manifest, or (when it is gone) the run's dataset
    prepared again (reusing the cache when possible). Data encoded by another processor
    than the run's own are refused (:func:`check_same_processor`)."""
    from adrank.data.prepare import prepare_dataset

    recorded = artifact.manifest.get("prepared_data")
    if prepared is not None:
        if not Path(prepared, "stats.json").is_file():
            raise FileNotFoundError(f"--prepared {prepared} holds no prepared data (stats.json)")
        prepared = PreparedData.open(prepared)
    elif recorded and Path(recorded, "stats.json").exists():
        prepared = PreparedData.open(recorded)
    elif artifact.config.dataset:
        prepared = prepare_dataset(artifact.config.dataset, data_dir=data_dir, cache_dir=cache_dir)
    else:
        raise FileNotFoundError(
            f"{artifact.directory}: the prepared data it was trained on "
            f"({recorded or 'not recorded'}) is gone and the run names no dataset to rebuild it; "
            "if the folder moved, give its new place with --prepared DIR"
        )
    check_same_processor(artifact, prepared)
    return prepared


def _processor_digest(folder: Path) -> str:
    return content_digest(p for p in Path(folder).rglob("*") if p.is_file())


def check_same_processor(artifact: Artifact, prepared: PreparedData) -> None:
    """Refuse prepared data encoded by another processor than the run's own: the folder was
    prepared again since the run was trained (other vocabularies: every id would mean
    something else, and the metrics or a calibration fitted on them would be silently
    wrong)."""
    own = artifact.directory / "processor"
    theirs = Path(prepared.processor_dir)
    if not own.is_dir() or not theirs.is_dir():
        return
    if _processor_digest(own) != _processor_digest(theirs):
        raise ArtifactError(
            f"{prepared.directory} was prepared again after {artifact.directory} was trained: "
            "its processor differs from the run's (other vocabularies, so its ids mean other "
            "values), and scoring its rows with this model would give wrong results. Restore "
            "the prepared data the run was trained on, or train the run again on this data"
        )


def artifact_digest(run_dir: str | Path, manifest: dict[str, Any]) -> str:
    """Short content hash of what determines the served scores: the weights and the
    calibration map (used as the model version by the Predictor and the HTTP service)."""
    run_dir = Path(run_dir)
    paths = [run_dir / "model.pt"]
    if manifest.get("calibration"):
        paths.append(run_dir / manifest["calibration"])
    return content_digest(paths)[:12]


def load_split(prepared: PreparedData, split: str) -> TensorData:
    """One split of prepared data, in memory."""
    if split not in prepared.splits:
        raise KeyError(
            f"split {split!r} not in {prepared.directory} (has {sorted(prepared.splits)}); "
            f"choose one with --split {sorted(prepared.splits)[-1]}"
        )
    return TensorData.from_parquet(prepared.splits[split], prepared.feature_map)
