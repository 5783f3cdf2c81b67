"""``adrank evaluate`` and ``adrank predict``: scoring a finished run's model, on a split of
its dataset (metrics, slices, plots) or on raw records (a file of predictions)."""

from __future__ import annotations

import math
import numbers
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from adrank.cli import CacheDirOpt, DataDirOpt, Header, PreparedOpt, app, console, fail
from adrank.config import SCORE_BATCH_SIZE
from adrank.utils import error_text

if TYPE_CHECKING:
    import numpy as np

    from adrank.artifact import Artifact
    from adrank.data.batches import TensorData
    from adrank.train.evaluation import Predictions


@app.command("evaluate")
def evaluate_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    split: Annotated[str, typer.Option(help="train, valid or test.")] = "test",
    slice_by: Annotated[
        str | None,
        typer.Option(
            help="Also report metrics per value of a role (domain, position, ...) or of a "
            "categorical feature (its raw values); warm:FEATURE slices rows whose value was "
            "seen in training (warm) from the others (cold), e.g. warm:item_id."
        ),
    ] = None,
    min_rows: Annotated[int, typer.Option(help="Leave out slices with fewer rows.")] = 1,
    json_: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    plots: Annotated[
        Path | None,
        typer.Option(
            help="Write reliability.png (reliability_<task>.png per binary task of a "
            "multi-task run; position_ctr.png when the data has a position role) to this "
            "directory (needs matplotlib)."
        ),
    ] = None,
    calibrated: Annotated[
        bool,
        typer.Option(
            "--calibrated",
            help="Apply the run's calibration (adrank calibrate) first: the scores serving "
            "and predict give.",
        ),
    ] = False,
    data_dir: DataDirOpt = None,
    cache_dir: CacheDirOpt = None,
    prepared: PreparedOpt = None,
) -> None:
    """Score a split of the run's dataset with the saved model and print the metrics (per
    task for a multi-task dataset; per slice, with the field-level calibration error, with
    --slice-by; reliability and per-position plots with --plots). The scores are the
    model's own unless --calibrated."""
    import json

    from adrank.artifact import ArtifactError
    from adrank.pipeline import predict_split
    from adrank.plots import field_calibration, write_evaluation_plots
    from adrank.train.evaluation import compute_metrics, slice_metrics

    if plots is not None and (plots.exists() and not plots.is_dir()):
        fail(f"--plots {plots} is a file; give a folder to write the PNG files into")
        return
    if plots is not None:
        parent = next(p for p in (plots, *plots.parents) if p.exists())
        if not os.access(parent, os.W_OK | os.X_OK):
            fail(f"--plots {plots}: cannot write into {parent}")
            return
    t0 = time.perf_counter()
    try:
        art, data, preds = predict_split(
            run_dir, split, data_dir=data_dir, cache_dir=cache_dir, prepared=prepared
        )
        if calibrated:
            preds = _calibrated(art, preds)
        metrics = compute_metrics(preds, art.feature_map)
        slices = None
        if slice_by is not None:
            by, values = _slice_keys(art, data, preds, slice_by)
            slices = slice_metrics(preds, art.feature_map, by, values=values, min_rows=min_rows)
            field_cal = field_calibration(preds, art.feature_map, by, values, min_rows=min_rows)
        title = f"{Path(run_dir).name} [{split}]"
        written = (
            [] if plots is None else write_evaluation_plots(preds, art.feature_map, plots, title)
        )
    except (ArtifactError, KeyError, ValueError, OSError, ImportError) as exc:
        fail(error_text(exc))  # OSError: e.g. --plots names a file, not a folder
        return
    metrics["seconds"] = time.perf_counter() - t0
    if json_:
        out = {"run_dir": str(run_dir), "split": split, "metrics": metrics}
        if slices is not None:
            out |= {"slice_by": slice_by, "slices": slices, "field_calibration": field_cal}
        console.print_json(json.dumps(_json_safe(out | {"plots": [str(p) for p in written]})))
        return
    tasks = [t.name for t in art.feature_map.tasks]
    rows = [t for t in (*tasks, "pctcvr") if any(k.startswith(f"{t}_") for k in metrics)]
    if len(rows) > 1:
        console.print(_task_table(f"{run_dir} [{split}] per task", metrics, rows))
    table = Table(title=f"{run_dir} [{split}]" + (" (mean over tasks)" if len(rows) > 1 else ""))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        if not any(k.startswith(f"{t}_") for t in rows):
            table.add_row(k, f"{v:.6f}")
    console.print(table)
    if slices is not None:
        console.print(_slice_table(f"{run_dir} [{split}] by {slice_by}", slices, rows))
        console.print(f"field-level calibration error (|pred - obs| by {slice_by}, row-weighted): "
                      f"{field_cal['error']:.6f}")  # fmt: skip
    for path in written:
        console.print(f"wrote {path}")
    if art.calibration is not None and not calibrated:
        console.print(
            f"scores before the run's {art.calibration['method']} calibration; --calibrated "
            "reports the scores serving and predict give"
        )


def _calibrated(art: Artifact, preds: Predictions) -> Predictions:
    """``preds`` with the run's stored calibration applied to each output it maps."""
    import dataclasses

    import numpy as np

    from adrank.serve.calibration import calibrate_outputs, output_calibration

    if art.calibration is None:
        raise ValueError(
            "--calibrated: the run has no calibration; run `adrank calibrate RUN_DIR` first"
        )
    outputs = preds.outputs or [t.output for t in art.feature_map.tasks]
    probs = preds.probs.reshape(len(preds.probs), -1)
    calibration = output_calibration(art.calibration, outputs, art.feature_map)
    mapped = calibrate_outputs(calibration, {n: probs[:, i] for i, n in enumerate(outputs)})
    stacked = np.stack([mapped[n] for n in outputs], axis=1).reshape(preds.probs.shape)
    return dataclasses.replace(preds, probs=stacked)


def _slice_keys(
    art: Artifact, data: TensorData, preds: Predictions, name: str
) -> tuple[str | np.ndarray, dict[int, str] | None]:
    """``by`` and ``values`` for :func:`slice_metrics`: a role of the predictions, a
    categorical feature's processed ids with their raw values from the vocabulary, or
    (``warm:FEATURE``) whether the feature's value was seen in training (``warm``/``cold``)."""
    import numpy as np

    from adrank.data.schema import NUM_RESERVED_IDS, OOV_ID

    if name in preds.roles:
        return name, None
    warm = name.startswith("warm:")
    name = name.removeprefix("warm:")
    field = next((f for f in art.feature_map.fields if f.name == name), None)
    if field is None:
        raise KeyError(
            f"cannot slice by {name!r}: it is neither a role of the predictions "
            f"({sorted(preds.roles)}) nor a feature ({art.feature_map.names})"
        )
    if field.kind != "categorical":
        raise ValueError(
            f"cannot slice by {name!r}: it is a {field.kind} feature; slice by a categorical "
            "(or bucketized numeric) feature or a role"
        )
    ids = data.data.features[name].cpu().numpy().reshape(-1)
    if warm:  # the unseen id: not in the training vocabulary (or rarer than min_count)
        return np.where(ids == OOV_ID, "cold", "warm"), None
    vocab = art.processor.vocab_.get(field.embedding_group or name)
    values = {0: "<padding>", 1: "<unseen or missing>"}  # both map to the OOV id
    values |= {i + NUM_RESERVED_IDS: str(v) for i, v in enumerate(vocab or ())}
    return ids, values if vocab is not None else None


def _json_safe(value: object) -> object:
    """``value`` with NaN/inf floats (undefined AUC, pred/obs without positives) as null."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    return value


def _task_table(title: str, metrics: dict[str, float], tasks: list[str]) -> Table:
    """Rows: tasks; columns: the metrics each task has (``click_auc`` -> click, auc)."""
    names = list(
        dict.fromkeys(k[len(t) + 1 :] for t in tasks for k in metrics if k.startswith(f"{t}_"))
    )
    table = Table(title=title)
    table.add_column("task")
    for n in names:
        table.add_column(n, justify="right")
    for t in tasks:
        cells = [metrics.get(f"{t}_{n}") for n in names]
        table.add_row(t, *("" if v is None else f"{v:.6f}" for v in cells))
    return table


def _slice_table(title: str, slices: dict[str, dict[str, float]], tasks: list[str]) -> Table:
    """One row per slice (and per task for a multi-task dataset): rows, AUC, logloss,
    gAUC (when the data have a group role) and pred/obs."""
    table = Table(title=title)
    keys = ["auc", "logloss"]
    if any(k.endswith("gauc") for m in slices.values() for k in m):
        keys.append("gauc")
    for col in ("slice", *(["task"] if len(tasks) > 1 else []), "rows", *keys):
        table.add_column(col, justify="left" if col in ("slice", "task") else "right")
    table.add_column("pred/obs", justify="right")
    prefixes = [f"{t}_" for t in tasks] if len(tasks) > 1 else [""]
    for name, m in slices.items():
        for prefix in prefixes:
            cells = [m.get(f"{prefix}{k}", float("nan")) for k in keys]
            ratio = m.get(f"{prefix}calibration_ratio", float("nan"))
            task = [prefix[:-1]] if len(tasks) > 1 else []
            rows = m.get(f"{prefix}rows", m["rows"])  # a conversion task: its clicked rows
            table.add_row(name, *task, f"{rows:,.0f}", *(f"{v:.4f}" for v in cells), f"{ratio:.4f}")
    return table


@app.command("predict")
def predict_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    input: Annotated[Path, typer.Option("--input", help="Raw records: csv/tsv/parquet/jsonl.")],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            help="Output .csv, .tsv, .parquet or .jsonl (by suffix): the input plus outputs.",
        ),
    ],
    batch_size: Annotated[int, typer.Option(min=1, help="Rows scored per batch.")] = (
        SCORE_BATCH_SIZE
    ),
    header: Annotated[
        Header,
        typer.Option(
            help="Does a CSV/TSV input start with a header line? 'auto' decides from the line "
            "(a file without one needs --columns)."
        ),
    ] = Header.auto,
    columns: Annotated[
        str | None,
        typer.Option(help="Comma-separated column names, for an input without a header."),
    ] = None,
    separator: Annotated[
        str | None, typer.Option(help="CSV/TSV field separator (default ',' / tab).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing --output file.")
    ] = False,
    backend: Annotated[
        str,
        typer.Option(help="torch, or the run's exported torchscript or onnx file (adrank export)."),
    ] = "torch",
) -> None:
    """Score raw records with the run's processor and model. Writes the input columns
    (pass-through metadata included) plus one column per output: `pctr`; `pctr`, `pcvr` and
    `pctcvr` for a click/conversion model.

    Rows are raw, as for training: a recipe's derived features (Criteo's buckets, Avazu's
    hour of day) are computed from their raw columns by the run's declared transforms.
    A CSV/TSV/Parquet input is read, scored and written in batches, so memory does not
    grow with the file. OUTPUT is written atomically; an existing file is refused unless
    --overwrite (the input file is never replaced)."""
    from adrank.serve.predictor import predict_file

    has_header = {"auto": "auto", "yes": True, "no": False}[header.value]
    try:
        with console.status(f"scoring {input} ..."):
            rows, seconds = predict_file(
                run_dir,
                input,
                output,
                batch_size=batch_size,
                has_header=has_header,
                column_names=columns.split(",") if columns else None,
                separator=separator,
                overwrite=overwrite,
                backend=backend,
            )
    except Exception as exc:
        fail(f"{type(exc).__name__}: {exc}")
        return
    console.print(
        f"scored {rows:,} rows in {seconds:.2f}s "
        f"({rows / max(seconds, 1e-9):,.0f} rows/s) -> {output}"
    )
