"""The swap gate: a model replaces the serving one only if it reads the same requests and
answers a smoke prediction (``docs/serving.md``, "The swap gate").

:func:`load_checked` is the one entry point: ``/admin/reload`` uses it, and so does anything
that follows a model store (incremental training's ``serve --store``). It refuses, with
:class:`SwapRefused` and a reason, a model that

* does not load (missing files, a truncated or random ``model.pt``, a corrupt config);
* has another **input schema** than the serving model (:func:`serving_signature`): raw
  fields and their kinds, required fields, feature sources, sequence lengths and
  delimiters, transforms, roles and task outputs. Vocabularies, hash sizes, normalizer
  statistics and the architecture are *not* compared: vocabularies grow with every
  publish, and a model of another architecture on the same inputs is a legal swap;
* fails the **smoke prediction**: one record with every field null (unseen categorical
  values, numeric fill values, empty sequences) must give finite outputs, and binary
  outputs in [0, 1].
"""

from __future__ import annotations

import logging
import math
import zipfile
from pathlib import Path
from typing import Any

from adrank.data.schema import SequenceFeature
from adrank.serve.predictor import Predictor

logger = logging.getLogger(__name__)

#: Longest error text quoted from a failed load (torch's messages can be long).
MAX_REASON_CHARS = 400


class SwapRefused(RuntimeError):
    """The candidate model may not replace the serving one; the message says why."""


def serving_signature(predictor: Predictor) -> dict[str, Any]:
    """What a client of this model relies on (see the module docstring), as plain data."""
    schema = predictor.processor.schema
    features = {}
    for f in schema.features:
        entry: dict[str, Any] = {"source": f.source or f.name, "kind": type(f).__name__}
        if isinstance(f, SequenceFeature):
            entry |= {"max_len": f.max_len, "delimiter": f.delimiter}
        features[f.name] = entry
    fm = predictor.feature_map
    return {
        "fields": dict(sorted(predictor.field_kinds.items())),
        "required_fields": sorted(predictor.required_fields),
        "features": features,
        "transforms": [t.to_dict() for t in schema.transforms],
        "roles": {
            name: {"column": r.column, "kind": r.kind, "source": r.source}
            for name, r in sorted(fm.roles.items())
        },
        "outputs": list(predictor.outputs),
        "tasks": {t.output: t.type for t in fm.tasks},
    }


def signature_differences(serving: dict[str, Any], candidate: dict[str, Any]) -> list[str]:
    """Human-readable differences between two :func:`serving_signature` results."""
    out: list[str] = []
    for key in serving.keys() | candidate.keys():
        old, new = serving.get(key), candidate.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            for name in sorted(old.keys() - new.keys()):
                out.append(f"{key}: {name!r} removed")
            for name in sorted(new.keys() - old.keys()):
                out.append(f"{key}: {name!r} added")
            for name in sorted(old.keys() & new.keys()):
                if old[name] != new[name]:
                    out.append(f"{key}: {name!r} was {old[name]}, is {new[name]}")
        else:
            out.append(f"{key}: was {old}, is {new}")
    return sorted(out)


def smoke_test(predictor: Predictor) -> None:
    """Score one all-null record; raise :class:`SwapRefused` unless every output is finite
    (and every binary output a probability)."""
    record = {name: None for name in predictor.field_kinds}
    try:
        outputs = predictor.predict_outputs([record])
    except Exception as exc:
        raise SwapRefused(f"the smoke prediction failed: {_describe(exc)}") from exc
    regression = {t.output for t in predictor.feature_map.tasks if t.type == "regression"}
    for name, values in outputs.items():
        value = float(values[0])
        if not math.isfinite(value):
            raise SwapRefused(f"the smoke prediction gave {name} = {value} (non-finite)")
        if name not in regression and not 0.0 <= value <= 1.0:
            raise SwapRefused(f"the smoke prediction gave {name} = {value}, not a probability")


def load_checked(
    run_dir: str | Path,
    serving: Predictor | None = None,
    *,
    label: str | None = None,
    **predictor_kwargs: Any,
) -> Predictor:
    """Load ``run_dir`` and pass it through the gate against ``serving`` (None: the first
    model, checked by the smoke prediction only). ``label`` names the model in messages
    (default: the directory). Raises :class:`SwapRefused`."""
    label = label or str(run_dir)
    try:
        candidate = Predictor.load(run_dir, **predictor_kwargs)
    except Exception as exc:  # any failure to load is a refusal, never a crash
        logger.warning("swap gate: cannot load %s", label, exc_info=True)
        raise SwapRefused(f"cannot load {label}: {_load_failure(Path(run_dir), exc)}") from exc
    if serving is not None:
        diffs = signature_differences(serving_signature(serving), serving_signature(candidate))
        if diffs:
            raise SwapRefused(
                f"{label} reads or gives other fields than the serving model "
                f"{serving.version} (inputs and outputs must match; vocabularies may "
                "differ): " + "; ".join(diffs)
            )
    try:
        smoke_test(candidate)
    except SwapRefused as exc:
        raise SwapRefused(f"{label}: {exc}") from exc
    return candidate


def _load_failure(run_dir: Path, exc: BaseException) -> str:
    """Why a run directory failed to load, naming the weights file when it is the cause
    (torch's own message for a truncated file is a bare OSError, and for a foreign one it
    suggests ``weights_only=False``, which must never be followed for served files)."""
    weights = run_dir / "model.pt"
    if weights.is_file() and not zipfile.is_zipfile(weights):
        size = weights.stat().st_size
        return f"model.pt is not a torch weights file ({size} bytes: truncated or corrupt)"
    if "Weights only load failed" in str(exc):
        return "model.pt holds more than plain tensors (weights load with weights_only=True)"
    return _describe(exc)


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."
