"""Serving: the run artifact, the Predictor, calibration, export, ranking and the HTTP app.

The HTTP service (``create_app``, ``serve``) needs the ``serve`` extra (fastapi, uvicorn)
and is imported on first use; ONNX export/scoring needs the ``onnx`` extra.
"""

from __future__ import annotations

from typing import Any

from adrank.artifact import (
    Artifact,
    ArtifactError,
    load_artifact,
    read_manifest,
    save_calibration,
    update_manifest,
)
from adrank.serve.calibration import (
    CalibrationReport,
    apply_calibration,
    calibrate,
    calibrate_outputs,
)
from adrank.serve.export import EXPORT_EXCEPTIONS, ExportParityError, ExportResult, export
from adrank.serve.impressions import ImpressionLog, read_impressions
from adrank.serve.model_root import ModelRoot, ModelRootError, set_latest
from adrank.serve.model_store import StoreError, publish, rollback
from adrank.serve.predictor import Predictor, RecordError, predict_file
from adrank.serve.ranking import (
    BILLING_TYPES,
    AdCandidate,
    BillingError,
    Creative,
    RankResult,
    ScoredAd,
    SlotResult,
    check_billing,
    gsp_auction,
    rank_ads,
)
from adrank.serve.swap_gate import SwapRefused, load_checked

__all__ = [
    "BILLING_TYPES",
    "EXPORT_EXCEPTIONS",
    "AdCandidate",
    "Artifact",
    "ArtifactError",
    "BillingError",
    "CalibrationReport",
    "Creative",
    "ExportParityError",
    "ExportResult",
    "ImpressionLog",
    "ModelRoot",
    "ModelRootError",
    "Predictor",
    "RankResult",
    "RecordError",
    "ScoredAd",
    "SlotResult",
    "StoreError",
    "SwapRefused",
    "apply_calibration",
    "calibrate",
    "calibrate_outputs",
    "check_billing",
    "create_app",
    "export",
    "gsp_auction",
    "load_artifact",
    "load_checked",
    "predict_file",
    "publish",
    "rank_ads",
    "read_impressions",
    "read_manifest",
    "rollback",
    "save_calibration",
    "serve",
    "set_latest",
    "update_manifest",
]


def __getattr__(name: str) -> Any:
    if name in ("create_app", "serve"):
        from adrank.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'adrank.serve' has no attribute {name!r}")
