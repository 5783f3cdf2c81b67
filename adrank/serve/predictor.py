"""Predictor: score raw records with exactly the features the model was trained on.

``Predictor.load(run_dir)`` loads the artifact; ``predict`` accepts a list of dicts, a
Polars or pandas DataFrame, or an Arrow table, runs the run's FeatureProcessor and the model,
and returns pCTR as a float64 array (N,) (or (N, T) for multi-task models).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import torch

from adrank.data.batches import table_to_batch
from adrank.serve.artifact import Artifact, load_artifact

logger = logging.getLogger(__name__)


class Predictor:
    """In-process scorer over a loaded :class:`Artifact`."""

    def __init__(self, artifact: Artifact, batch_size: int = 65536) -> None:
        self.artifact = artifact
        self.batch_size = batch_size
        self.model = artifact.model.eval()
        self.processor = artifact.processor
        self.feature_map = artifact.feature_map

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "cpu", batch_size: int = 65536) -> Predictor:
        return cls(load_artifact(run_dir, device=device), batch_size=batch_size)

    @property
    def version(self) -> str:
        m = self.artifact.manifest
        return f"{m.get('model')}@{m.get('created', m.get('adrank_version'))}"

    def _frame(self, data: Any) -> pl.DataFrame:
        if isinstance(data, pl.DataFrame):
            return data
        if isinstance(data, pa.Table):
            return pl.from_arrow(data)  # type: ignore[return-value]
        if type(data).__module__.startswith("pandas"):
            return pl.from_pandas(data)
        raise TypeError(
            f"cannot score {type(data).__name__}: pass a list of dicts, a Polars/pandas "
            "DataFrame or an Arrow table"
        )

    def encode(self, data: Any) -> pl.DataFrame:
        """Raw records -> processed model inputs (labels not required)."""
        if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
            if data and not all(isinstance(r, Mapping) for r in data):
                raise TypeError("records must be a list of dicts")
            return self.processor.transform_records(data)  # type: ignore[arg-type]
        frame = self._frame(data)
        return self.processor.transform(frame, require_labels=False)

    @torch.inference_mode()
    def predict_encoded(self, encoded: pl.DataFrame) -> np.ndarray:
        out: list[torch.Tensor] = []
        device = next(self.model.parameters()).device
        for start in range(0, encoded.height, self.batch_size):
            chunk = encoded.slice(start, self.batch_size).to_arrow()
            batch = table_to_batch(chunk, self.feature_map)
            feats = {k: v.to(device) for k, v in batch.features.items()}
            out.append(torch.sigmoid(self.model(feats).float()).cpu())
        probs = torch.cat(out).double().numpy()
        return self.apply_calibration(probs)

    def apply_calibration(self, probs: np.ndarray) -> np.ndarray:
        cal = self.artifact.calibration
        if not cal:
            return probs
        from adrank.serve.calibration import apply_calibration

        return apply_calibration(cal, probs)

    def predict(self, data: Any) -> np.ndarray:
        """pCTR for raw records; shape (N,) or (N, T)."""
        return self.predict_encoded(self.encode(data))


def read_records(path: Path) -> pl.DataFrame:
    """Read a raw input file for scoring (csv/tsv/parquet/jsonl)."""
    suffixes = [s for s in path.suffixes if s != ".gz"]
    kind = suffixes[-1] if suffixes else ""
    if kind in (".jsonl", ".ndjson"):
        return pl.read_ndjson(path, infer_schema_length=None)
    from adrank.data.readers import read_raw

    return read_raw(path).frame


def predict_file(
    run_dir: str | Path, input_path: str | Path, output_path: str | Path, batch_size: int = 65536
) -> tuple[int, float]:
    """Score every row of ``input_path``; write its columns plus ``pctr`` to ``output_path``.
    Returns (rows, seconds spent scoring)."""
    from adrank.utils import atomic_write

    predictor = Predictor.load(run_dir, batch_size=batch_size)
    frame = read_records(Path(input_path))
    t0 = time.perf_counter()
    probs = predictor.predict(frame)
    seconds = time.perf_counter() - t0
    if probs.ndim == 1:
        out = frame.with_columns(pl.Series("pctr", probs))
    else:
        out = frame.with_columns(
            [
                pl.Series(f"p_{name}", probs[:, i])
                for i, name in enumerate(predictor.feature_map.labels)
            ]
        )
    output_path = Path(output_path)
    if output_path.suffix == ".parquet":
        atomic_write(output_path, lambda p: out.write_parquet(p))
    else:
        atomic_write(output_path, lambda p: out.write_csv(p))
    return out.height, seconds
