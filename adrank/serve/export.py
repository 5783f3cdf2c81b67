"""Export a trained model to TorchScript or ONNX, with a numeric parity check.

Models take a ``dict[str, Tensor]``; exported graphs take **positional tensors in feature-map
order**, one per field, named after the field (``feature_map.json`` lists them):

* categorical field: int64 (B,) ids (0 = padding, 1 = OOV);
* numeric field: float32 (B,) processed values;
* sequence field: int64 (B, L) ids, 0 = padding;

and return float32 ``logits`` (B,) (or (B, T) for multi-task models): apply a sigmoid, and the
run's calibration map if it has one, to get pCTR (the Predictor does both). The batch axis is
dynamic in both formats. Files are written into the run directory (``model.torchscript.pt``,
``model.onnx``) only after the parity check passes, and are recorded in the manifest under
``exports``.

TorchScript uses ``torch.jit.trace`` (models branch on Python-level configuration only, never
on tensor values). ONNX uses the TorchScript-based exporter (opset 17) and needs the optional
dependencies ``onnx`` and ``onnxruntime`` (``pip install 'adrank[onnx]'``).
"""

from __future__ import annotations

import importlib
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from adrank.config import SCORE_BATCH_SIZE
from adrank.data.feature_map import FeatureMap
from adrank.models.base import CTRModel

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("torchscript", "onnx")
EXPORT_FILES: dict[str, str] = {"torchscript": "model.torchscript.pt", "onnx": "model.onnx"}
ONNX_OPSET = 17
#: Registered models that cannot be exported, with the reason. Every other model in the
#: registry is exported to both formats with parity by ``tests/serve/test_export.py``.
EXPORT_EXCEPTIONS: dict[str, str] = {}


class ExportParityError(RuntimeError):
    """The exported graph's outputs differ from eager PyTorch by more than the tolerance."""


def require_optional(module: str) -> ModuleType:
    """Import an optional dependency or raise an ImportError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"the optional dependency {module!r} is not installed; ONNX export and the onnx "
            "backend need it: pip install 'adrank[onnx]'"
        ) from exc


class ExportWrapper(nn.Module):
    """Positional front of a :class:`CTRModel`: ``forward(*inputs)`` with one tensor per
    field in ``names`` order -> logits (B,) or (B, T)."""

    def __init__(self, model: CTRModel, names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.names = list(names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(dict(zip(self.names, inputs, strict=True)))


def input_spec(feature_map: FeatureMap) -> list[dict[str, Any]]:
    """Name, dtype and shape of every exported input, in order (``B`` is dynamic)."""
    spec = []
    for f in feature_map.fields:
        dtype = "float32" if f.kind == "numeric" else "int64"
        shape = ["B", f.max_len] if f.kind == "sequence" else ["B"]
        spec.append({"name": f.name, "kind": f.kind, "dtype": dtype, "shape": shape})
    return spec


def example_inputs(feature_map: FeatureMap, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random valid inputs: ids in [2, vocab), numeric N(0, 1), sequences with padding."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for f in feature_map.fields:
        if f.kind == "numeric":
            out[f.name] = torch.randn(batch, generator=gen)
        elif f.kind == "categorical":
            out[f.name] = torch.randint(2, max(f.vocab_size, 3), (batch,), generator=gen)
        else:
            vocab = feature_map.field(f.table).vocab_size if f.table in feature_map.names else 3
            ids = torch.randint(2, max(vocab, f.vocab_size, 3), (batch, f.max_len), generator=gen)
            keep = torch.rand(batch, f.max_len, generator=gen) < 0.7
            out[f.name] = ids * keep
    return out


def _positional(features: dict[str, torch.Tensor], names: Sequence[str]) -> tuple:
    return tuple(features[n] for n in names)


def export_model(
    model: CTRModel,
    feature_map: FeatureMap,
    fmt: str,
    path: str | Path,
    example: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``model`` (put in eval mode) to ``path`` as ``fmt``; ``example`` rows are used
    for tracing (default: 16 random rows)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {FORMATS}")
    names = feature_map.names
    model.eval()
    wrapper = ExportWrapper(model, names).eval()
    inputs = _positional(example or example_inputs(feature_map, 16), names)
    path = Path(path)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer/deprecation chatter; parity is checked
        if fmt == "torchscript":
            traced = torch.jit.trace(wrapper, inputs, check_trace=False)
            torch.jit.save(traced, str(path))
        else:
            onnx = require_optional("onnx")
            torch.onnx.export(
                wrapper,
                inputs,
                str(path),
                input_names=names,
                output_names=["logits"],
                dynamic_axes={**{n: {0: "batch"} for n in names}, "logits": {0: "batch"}},
                opset_version=ONNX_OPSET,
                dynamo=False,
            )
            onnx.checker.check_model(str(path))
    return path


def load_exported(
    path: str | Path, fmt: str, names: Sequence[str]
) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    """A scorer over an exported file: features (field -> tensor) -> float32 logits."""
    names = list(names)
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript still works
            module = torch.jit.load(str(path), map_location="cpu").eval()

        def score_torchscript(features: dict[str, torch.Tensor]) -> torch.Tensor:
            with torch.inference_mode():
                return module(*_positional(features, names)).float()

        return score_torchscript
    if fmt != "onnx":
        raise ValueError(f"unknown export format {fmt!r}; expected one of {FORMATS}")
    ort = require_optional("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def score_onnx(features: dict[str, torch.Tensor]) -> torch.Tensor:
        # contiguous: a context history arrives as a stride-0 view (serve/columnar.py)
        feeds = {n: np.ascontiguousarray(features[n].cpu().numpy()) for n in names}
        return torch.from_numpy(session.run(None, feeds)[0]).float()

    return score_onnx


@torch.inference_mode()
def parity(
    model: CTRModel,
    scorer: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    features: dict[str, torch.Tensor],
    chunk: int = SCORE_BATCH_SIZE,
) -> float:
    """Max |pCTR_exported - pCTR_eager| over the rows of ``features``."""
    model.eval()
    rows = len(next(iter(features.values())))
    worst = 0.0
    for start in range(0, rows, chunk):
        part = {k: v[start : start + chunk] for k, v in features.items()}
        eager = torch.sigmoid(model(part).float())
        exported = torch.sigmoid(scorer(part))
        worst = max(worst, float((eager - exported).abs().max()))
    return worst


@dataclass
class ExportResult:
    path: Path
    fmt: str
    rows: int
    max_abs_diff: float


def _split_parity_rows(
    art: Any,
    rows: int,
    data_dir: str | Path | None,
    cache_dir: str | Path | None,
    prepared_dir: str | Path | None,
) -> tuple[str, dict[str, torch.Tensor]]:
    """The first ``rows`` rows of the run's prepared test (else validation) split."""
    from adrank.artifact import load_split, open_prepared_data

    try:
        prepared = open_prepared_data(
            art, data_dir=data_dir, cache_dir=cache_dir, prepared=prepared_dir
        )
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{exc}; or check parity on raw records with --input FILE") from exc
    split = "test" if "test" in prepared.splits else "valid"
    data = load_split(prepared, split).data.features
    return split, {k: v[:rows] for k, v in data.items()}


def _raw_parity_rows(
    run_dir: str | Path, path: str | Path, rows: int
) -> tuple[str, dict[str, torch.Tensor]]:
    """The first ``rows`` records of a raw file, encoded by the run's own processor."""
    from adrank.data.batches import table_to_batch
    from adrank.serve.predictor import Predictor

    predictor = Predictor.load(run_dir)
    frame = predictor.read(path).head(rows)
    if frame.height == 0:
        raise ValueError(f"--input {path} holds no records to check parity on")
    encoded = predictor.encode(frame)
    batch = table_to_batch(encoded.to_arrow(), predictor.feature_map)
    return f"records of {Path(path).name}", dict(batch.features)


def export(
    run_dir: str | Path,
    fmt: str = "torchscript",
    *,
    rows: int = 10_000,
    tolerance: float = 1e-5,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    prepared_dir: str | Path | None = None,
    parity_input: str | Path | None = None,
) -> ExportResult:
    """Export a run's model into the run directory, check pCTR parity against eager
    PyTorch on the first ``rows`` test rows (max abs diff <= ``tolerance``), and record the
    file in the manifest. Raises :class:`ExportParityError` (writing nothing) on a mismatch.

    ``parity_input``: a raw file (CSV/TSV/Parquet/JSON lines, as ``adrank predict`` reads)
    whose first ``rows`` records, encoded by the run's processor, are the parity rows
    instead of the prepared test split: for runs whose prepared data are gone or never
    existed (``CTRClassifier.save``)."""
    from adrank.artifact import load_artifact, update_manifest

    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {FORMATS}")
    if fmt == "onnx":
        require_optional("onnx")
        require_optional("onnxruntime")
    target = Path(run_dir) / EXPORT_FILES[fmt]
    if target.exists() and not target.is_file():
        raise ValueError(f"{target} is not a file; move it away to export {fmt} there")
    art = load_artifact(run_dir)
    if parity_input is not None:
        split, features = _raw_parity_rows(run_dir, parity_input, rows)
    else:
        split, features = _split_parity_rows(art, rows, data_dir, cache_dir, prepared_dir)
    n = len(next(iter(features.values())))
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        example = {k: v[:64] for k, v in features.items()}
        export_model(art.model, art.feature_map, fmt, tmp, example)
        diff = parity(art.model, load_exported(tmp, fmt, art.feature_map.names), features)
        if not np.isfinite(diff) or diff > tolerance:
            raise ExportParityError(
                f"{fmt} export of {run_dir} differs from eager PyTorch by {diff:.3g} on {n} "
                f"{split} rows (tolerance {tolerance:g}); nothing was written"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    exports = dict(art.manifest.get("exports") or {})
    exports[fmt] = {
        "file": target.name,
        "rows_checked": n,
        "split": split,
        "max_abs_diff": diff,
        "inputs": input_spec(art.feature_map),
        "output": "logits",
    }
    update_manifest(run_dir, {"exports": exports}, add_files=(target.name,))
    logger.info("exported %s (%s): max |diff| %.3g on %d rows", target, fmt, diff, n)
    return ExportResult(target, fmt, n, diff)
