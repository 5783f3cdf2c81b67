"""The run directory / model artifact.

One directory holds everything needed to score raw records exactly as in training::

    manifest.json      format version, adrank version, model name, file list, metrics
    config.yaml        the RunConfig (model hyperparameters + training settings)
    schema.yaml        the raw-data schema
    processor/         the fitted FeatureProcessor (JSON + Arrow vocabularies)
    feature_map.json   model inputs
    model.pt           best weights (a plain state_dict: tensors only, loaded weights_only)
    metrics.json       validation/test metrics and training statistics
    calibration.json   optional calibration map (``adrank calibrate``)

``manifest.json`` is written last and atomically, so a directory with a manifest is
complete. Loading checks the format version and every listed file.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from adrank.config import RunConfig
from adrank.data.feature_map import FeatureMap
from adrank.data.processor import FeatureProcessor
from adrank.models.base import CTRModel
from adrank.models.registry import build_model
from adrank.utils import atomic_write, atomic_write_text

logger = logging.getLogger(__name__)

ARTIFACT_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
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
    if Path(processor_dir).resolve() != (run_dir / "processor").resolve():
        tmp = run_dir / ".processor.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(processor_dir, tmp)
        shutil.rmtree(run_dir / "processor", ignore_errors=True)
        tmp.rename(run_dir / "processor")
    feature_map.save(run_dir / "feature_map.json")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write(run_dir / "model.pt", lambda p: torch.save(state, p))
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2, default=float))
    manifest = {
        "format_version": ARTIFACT_FORMAT_VERSION,
        "adrank_version": __version__,
        "model": config.model,
        "dataset": config.dataset,
        "files": [*REQUIRED_FILES, "processor/processor.json"],
        "metrics": {k: metrics.get(k) for k in ("valid", "test") if k in metrics},
        "calibration": None,
        **(extra or {}),
    }
    atomic_write_text(run_dir / MANIFEST, json.dumps(manifest, indent=2, default=float))
    return run_dir


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
    manifest = json.loads(path.read_text())
    version = manifest.get("format_version")
    if version != ARTIFACT_FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: artifact format version {version!r} is not supported by this adrank "
            f"(expects {ARTIFACT_FORMAT_VERSION}); re-export the run with a matching version"
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
    feature_map = FeatureMap.load(run_dir / "feature_map.json")
    processor = FeatureProcessor.load(run_dir / "processor")
    model = build_model(config.model, feature_map, **config.params)
    state = torch.load(run_dir / "model.pt", map_location=device, weights_only=True)
    model.load_state_dict(state)
    model.to(device).eval()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    calibration = None
    if manifest.get("calibration"):
        calibration = json.loads((run_dir / manifest["calibration"]).read_text())
    return Artifact(run_dir, manifest, config, feature_map, processor, model, metrics, calibration)
