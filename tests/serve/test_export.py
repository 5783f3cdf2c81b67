"""TorchScript/ONNX export: every registered model, and whole runs with the parity check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from adrank.data.feature_map import FeatureMap, FieldInfo, RoleInfo, TaskInfo
from adrank.models import available_models, build_model, get_model_class
from adrank.models.multitask import MultiTaskModel
from adrank.models.sequence_base import SequenceModel
from adrank.serve.artifact import read_manifest
from adrank.serve.export import (
    EXPORT_EXCEPTIONS,
    EXPORT_FILES,
    ExportParityError,
    example_inputs,
    export,
    export_model,
    input_spec,
    load_exported,
    parity,
)
from adrank.serve.predictor import Predictor

MODELS = available_models()


def tiny_feature_map(multitask: bool = False, history: bool = False) -> FeatureMap:
    """Every field kind: 4 categorical (two sharing a table), numeric, a sequence; one task,
    or (``multitask``) a click task and a conversion task given it. With ``history`` (for
    the behaviour-sequence models) the sequence declares its target ``item`` and the
    items' ``c0`` is aligned with it."""
    target = "item" if history else None
    fields: tuple[FieldInfo, ...] = (
        FieldInfo("user", "categorical", vocab_size=12),
        FieldInfo("item", "categorical", vocab_size=9),
        FieldInfo("c0", "categorical", vocab_size=5),
        FieldInfo("n0", "numeric"),
        FieldInfo("hist", "sequence", vocab_size=9, max_len=4, embedding_group="item",
                  target=target),
    )  # fmt: skip
    if history:
        fields = (*fields, FieldInfo("hist_c0", "sequence", vocab_size=5, max_len=4,
                                     embedding_group="c0", aligned_with="hist"))  # fmt: skip
    # c0 is also the domain role, for the multi-domain models (the others ignore it)
    roles = {"domain": RoleInfo("domain", "__domain__", "vocab", "c0", ("a", "b", "c"))}
    if not multitask:
        return FeatureMap(fields, labels=("click",), roles=roles)
    tasks = (TaskInfo("click", "click", output="pctr"),
             TaskInfo("conversion", "conversion", given="click", output="pcvr"))  # fmt: skip
    return FeatureMap(fields, labels=("click", "conversion"), tasks=tasks, roles=roles)


def test_exceptions_name_registered_models() -> None:
    assert set(EXPORT_EXCEPTIONS) <= set(MODELS)
    assert all(reason.strip() for reason in EXPORT_EXCEPTIONS.values())


@pytest.mark.parametrize("name", MODELS)
def test_every_model_exports_with_parity(name: str, tmp_path: Path) -> None:
    if name in EXPORT_EXCEPTIONS:
        pytest.skip(f"{name} cannot be exported: {EXPORT_EXCEPTIONS[name]}")
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    cls = get_model_class(name)
    fmap = tiny_feature_map(
        multitask=issubclass(cls, MultiTaskModel), history=issubclass(cls, SequenceModel)
    )
    model = build_model(name, fmap).eval()
    rows = example_inputs(fmap, 300, seed=1)  # another batch size than the traced one
    with torch.no_grad():  # move weights off their init, so outputs are far from constant
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        for emb in model.embedding_modules():
            for p in emb.parameters():
                p.normal_(0.0, 0.5)
        eager = model(rows)
    assert float(eager.std()) > 1e-3
    for fmt in ("torchscript", "onnx"):
        path = export_model(model, fmap, fmt, tmp_path / EXPORT_FILES[fmt])
        scorer = load_exported(path, fmt, fmap.names)
        assert parity(model, scorer, rows) <= 1e-5, (name, fmt)
        rel = ((scorer(rows) - eager).abs() / (1 + eager.abs())).max()
        assert float(rel) <= 1e-4, (name, fmt, float(rel))


def test_input_spec_documents_names_and_dtypes() -> None:
    spec = input_spec(tiny_feature_map())
    assert [s["name"] for s in spec] == ["user", "item", "c0", "n0", "hist"]
    assert spec[3] == {"name": "n0", "kind": "numeric", "dtype": "float32", "shape": ["B"]}
    assert spec[4]["shape"] == ["B", 4] and spec[4]["dtype"] == "int64"


@pytest.fixture
def run_copy(synthetic_runs, tmp_path: Path) -> Path:
    return Path(shutil.copytree(synthetic_runs.run_a, tmp_path / "run"))


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_run_and_serve_it(run_copy: Path, synthetic_runs, fmt: str) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    result = export(run_copy, fmt)
    assert result.path == run_copy / EXPORT_FILES[fmt] and result.path.exists()
    assert result.rows == 2000 and result.max_abs_diff <= 1e-5
    manifest = read_manifest(run_copy)
    assert EXPORT_FILES[fmt] in manifest["files"]
    entry = manifest["exports"][fmt]
    assert entry["rows_checked"] == 2000 and entry["output"] == "logits"
    assert [i["name"] for i in entry["inputs"]] == Predictor.load(run_copy).feature_map.names
    records = synthetic_runs.raw_test.drop("click").head(200).to_dicts()
    eager = Predictor.load(run_copy).predict(records)
    exported = Predictor.load(run_copy, backend=fmt)
    assert exported.backend == fmt
    assert np.max(np.abs(exported.predict(records) - eager)) <= 1e-5


def test_parity_failure_writes_nothing(run_copy: Path) -> None:
    before = (run_copy / "manifest.json").read_text()
    with pytest.raises(ExportParityError, match="nothing was written"):
        export(run_copy, "torchscript", tolerance=-1.0)  # no diff can pass a negative bound
    assert not (run_copy / EXPORT_FILES["torchscript"]).exists()
    assert (run_copy / "manifest.json").read_text() == before
    assert not [p for p in run_copy.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(ValueError, match="unknown export format"):
        export(run_copy, "tflite")


@pytest.mark.integration
def test_frappe_export_parity_on_10k_test_rows(frappe_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    run = Path(shutil.copytree(frappe_run, tmp_path / "frappe"))
    for fmt in ("torchscript", "onnx"):
        result = export(run, fmt)
        assert result.rows == 10_000
        assert result.max_abs_diff <= 1e-5, (fmt, result.max_abs_diff)
    manifest = json.loads((run / "manifest.json").read_text())
    assert set(manifest["exports"]) == {"torchscript", "onnx"}
