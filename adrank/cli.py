"""The ``adrank`` command line. The only place in the library that prints."""

from __future__ import annotations

import logging
import math
import numbers
import os
import sys
import time
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from adrank.config import SCORE_BATCH_SIZE

if TYPE_CHECKING:
    import numpy as np

    from adrank.artifact import Artifact
    from adrank.data.batches import TensorData
    from adrank.train.evaluation import Predictions

app = typer.Typer(
    help="adrank: CTR/CVR prediction and ad ranking, from raw logs to a ranked auction.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
datasets_app = typer.Typer(help="List, prepare and export public datasets.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")

console = Console(stderr=False)
err_console = Console(stderr=True)


class BadRows(str, Enum):
    error = "error"
    skip = "skip"


class Header(str, Enum):
    auto = "auto"
    yes = "yes"
    no = "no"


def read_split_files(
    files: list[tuple[str, Path | None]],
    *,
    header: Header,
    columns: str | None,
    separator: str | None,
    schema: object | None,
    bad_rows: str,
) -> dict[str, object]:
    """Read raw split files as people have them: the header is detected per file
    (``auto``), and a file without one takes the ``--columns`` names or, failing that, the
    names from the first (training) file's header."""
    from adrank.data.readers import read_raw

    names = columns.split(",") if columns else None
    frames: dict[str, object] = {}
    for split, path in files:
        if path is None:
            continue
        has_header = {"auto": "auto", "yes": True, "no": False}[header.value]
        res = read_raw(
            path,
            has_header=has_header,  # type: ignore[arg-type]
            column_names=names,
            separator=separator,
            schema=schema,  # type: ignore[arg-type]
            bad_rows=bad_rows,  # type: ignore[arg-type]
        )
        if res.skipped_rows:
            err_console.print(
                f"[yellow]skipped {res.skipped_rows:,} bad rows in {path}[/] "
                f"(e.g. {'; '.join(res.skipped_examples[:3])})"
            )
        if names is None and header is Header.auto:
            names = list(res.frame.columns)
        frames[split] = res.frame
    return frames


class ExportFormat(str, Enum):
    csv = "csv"
    parquet = "parquet"


DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Raw data directory (default: $ADRANK_DATA_DIR, then ~/.cache/adrank).",
    ),
]
CacheDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="Where prepared data is cached (default: $ADRANK_CACHE_DIR, then "
        "~/.cache/adrank/processed).",
    ),
]


def _print_version(value: bool) -> None:
    if value:
        from adrank import __version__

        console.print(f"adrank {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Warnings only.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    if os.environ.get("RANK", "0") != "0":  # DDP workers other than rank 0: warnings only
        level = max(level, logging.WARNING)
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)],
        force=True,
    )
    for noisy in ("urllib3", "httpx", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def fail(message: str, code: int = 1) -> None:
    """Print a clear error (no traceback) and exit."""
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _split_table(title: str) -> Table:
    table = Table(title=title)
    for col in ("split", "rows", "positive rate", "seconds"):
        table.add_column(col, justify="right" if col != "split" else "left")
    return table


# ----------------------------------------------------------------------- datasets ----
@datasets_app.command("list")
def datasets_list(data_dir: DataDirOpt = None) -> None:
    """List the registered datasets: definition version, tasks, local files, description."""
    from adrank.data.datasets import available_datasets, get_dataset, resolve_data_dir
    from adrank.data.schema import infer_outputs

    root = resolve_data_dir(data_dir)
    table = Table(title=f"datasets (data dir: {root})")
    for col in ("name", "version", "tasks", "local files", "description"):
        table.add_column(col)
    for name in available_datasets():
        builder = get_dataset(name)
        expected = builder.expected_files(root)
        present = len(expected) - len(builder.missing_files(root))
        tasks = builder.schema().tasks
        described = ", ".join(
            f"{t.name}{f' (given {t.given})' if t.given else ''} -> {output}"
            for t, output in zip(tasks, infer_outputs(tasks), strict=True)
        )
        table.add_row(
            name, f"v{builder.version}", described, f"{present}/{len(expected)}",
            builder.description,
        )  # fmt: skip
    console.print(table)


@datasets_app.command("prepare")
def datasets_prepare(
    name: Annotated[str, typer.Argument(help="Dataset name (see `adrank datasets list`).")],
    data_dir: DataDirOpt = None,
    cache_dir: CacheDirOpt = None,
    seed: Annotated[int | None, typer.Option(help="Split/sampling seed.")] = None,
    bad_rows: Annotated[BadRows, typer.Option(help="Malformed rows: error or skip.")] = (
        BadRows.error
    ),
    force: Annotated[bool, typer.Option(help="Ignore the cache and rebuild.")] = False,
    download: Annotated[bool, typer.Option(help="Download missing files.")] = True,
) -> None:
    """Build, fit and transform a dataset; print rows, positive rate and time per split."""
    from adrank.data.prepare import prepare_dataset

    table = _split_table(f"{name}")
    t0 = time.perf_counter()
    try:
        with console.status(f"preparing {name} ..."):
            prepared = prepare_dataset(
                name,
                data_dir=data_dir,
                cache_dir=cache_dir,
                seed=seed,
                bad_rows=bad_rows.value,
                force=force,
                download=download,
            )
    except (KeyError, ValueError, RuntimeError, FileNotFoundError) as exc:
        fail(str(exc).strip("'\""))
        return
    for split, st in prepared.stats.items():
        rates = ", ".join(f"{k}={v:.4f}" for k, v in st.positive_rate.items())
        table.add_row(split, f"{st.rows:,}", rates, f"{st.seconds:.2f}")
    console.print(table)
    how = "reused cache" if prepared.cached else "prepared"
    console.print(f"{how} in {time.perf_counter() - t0:.2f}s -> {prepared.directory}")


@datasets_app.command("export")
def datasets_export(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    format: Annotated[ExportFormat, typer.Option("--format", help="csv or parquet.")] = (
        ExportFormat.csv
    ),
    output: Annotated[Path | None, typer.Option(help="Output directory.")] = None,
    data_dir: DataDirOpt = None,
    seed: Annotated[int | None, typer.Option(help="Split/sampling seed.")] = None,
    download: Annotated[bool, typer.Option(help="Download missing files.")] = True,
) -> None:
    """Write the exact raw train/valid/test split, so other tools can use identical data.

    The files hold the raw columns as users have them (a recipe's derived features are
    computed by its declared transforms, in training and in `adrank predict`). OUTPUT is
    built beside the target and renamed into place; it must be new, empty, or an earlier
    export: a folder holding anything else is refused, never overwritten."""
    from adrank.data.datasets import ensure_files, get_dataset, resolve_data_dir
    from adrank.outputs import OutputDirError

    out = output or Path(f"{name}_export")
    try:
        builder = get_dataset(name)
        root = resolve_data_dir(data_dir)
        ensure_files(builder, root, download=download)
        with console.status(f"building {name} splits ..."):
            splits = builder.build_splits(root, seed=seed)
    except (KeyError, ValueError, RuntimeError, FileNotFoundError) as exc:
        fail(str(exc).strip("'\""))
        return
    from adrank.data.export import export_splits

    try:
        paths = export_splits(splits, builder.schema(), out, format.value)
    except OutputDirError as exc:
        fail(str(exc))
        return
    for split, path in paths.items():
        console.print(f"{split}: {splits[split].height:,} rows -> {path}")


@datasets_app.command("synth")
def datasets_synth(
    kind: Annotated[str, typer.Argument(help="Synthetic schema (only 'criteo').")],
    rows: Annotated[int, typer.Option(help="Rows to generate.")],
    output: Annotated[Path, typer.Option(help="Output Parquet file.")],
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    cardinality_scale: Annotated[
        float, typer.Option(help="Scale Criteo's per-field cardinalities.")
    ] = 1.0,
    max_cardinality: Annotated[int, typer.Option(help="Cap on any field's cardinality.")] = (
        10_000_000
    ),
    ctr: Annotated[float, typer.Option(help="Target click rate.")] = 0.25,
    chunk_rows: Annotated[int, typer.Option(help="Rows per Parquet row group.")] = 1_000_000,
) -> None:
    """Write SYNTHETIC Criteo-schema rows (speed/scale tests only, never accuracy claims)."""
    if kind != "criteo":
        fail(f"unknown synthetic dataset {kind!r}; expected 'criteo'")
        return
    from adrank.data.synth import synth_criteo

    t0 = time.perf_counter()
    try:
        with console.status(f"generating {rows:,} synthetic rows ..."):
            path = synth_criteo(
                output,
                rows,
                seed=seed,
                chunk_rows=chunk_rows,
                max_cardinality=max_cardinality,
                ctr=ctr,
                cardinality_scale=cardinality_scale,
            )
    except ValueError as exc:
        fail(str(exc))
        return
    console.print(
        f"wrote {rows:,} synthetic Criteo-schema rows in {time.perf_counter() - t0:.1f}s -> {path}"
    )


# ------------------------------------------------------------------------ prepare ----
@app.command("prepare")
def prepare_files_cmd(
    schema: Annotated[Path, typer.Option(help="Schema YAML/JSON file.")],
    train: Annotated[Path, typer.Option(help="Training split (csv/tsv/parquet/libfm[.gz]).")],
    output: Annotated[Path, typer.Option(help="Output directory.")],
    valid: Annotated[Path | None, typer.Option(help="Validation split.")] = None,
    test: Annotated[Path | None, typer.Option(help="Test split.")] = None,
    header: Annotated[
        Header,
        typer.Option(
            help="Does each CSV/TSV file start with a header line? 'auto' decides per file "
            "(a file without one takes --columns, or the training file's header names)."
        ),
    ] = Header.auto,
    no_header: Annotated[
        bool, typer.Option("--no-header", help="Same as --header no (needs --columns).")
    ] = False,
    columns: Annotated[
        str | None,
        typer.Option(help="Comma-separated column names, for files without a header."),
    ] = None,
    separator: Annotated[
        str | None, typer.Option(help="CSV/TSV field separator (default ',' / tab).")
    ] = None,
    bad_rows: Annotated[BadRows, typer.Option(help="Malformed rows: error or skip.")] = (
        BadRows.error
    ),
) -> None:
    """Prepare your own raw logs with a schema: fit on train, write Parquet + feature map.

    OUTPUT must be new, empty, or earlier prepared data: a folder holding anything else is
    refused, never overwritten."""
    from adrank.data.prepare import prepare_frames
    from adrank.data.readers import DataFormatError
    from adrank.data.schema import Schema, SchemaError
    from adrank.outputs import OutputDirError

    try:
        sch = Schema.load(schema)
        frames = read_split_files(
            [("train", train), ("valid", valid), ("test", test)],
            header=Header.no if no_header else header,
            columns=columns,
            separator=separator,
            schema=sch,
            bad_rows=bad_rows.value,
        )
        table = _split_table(str(output))
        prepared = prepare_frames(sch, frames, output)  # type: ignore[arg-type]
    except (SchemaError, DataFormatError, FileNotFoundError, ValueError, OutputDirError) as exc:
        fail(str(exc))
        return
    for split, st in prepared.stats.items():
        rates = ", ".join(f"{k}={v:.4f}" for k, v in st.positive_rate.items())
        table.add_row(split, f"{st.rows:,}", rates, f"{st.seconds:.2f}")
    console.print(table)


# -------------------------------------------------------------------------- train ----
@app.command("train")
def train_cmd(
    model: Annotated[str, typer.Option(help="Model name (see `adrank models`).")],
    dataset: Annotated[
        str | None, typer.Option(help="Dataset name (see `adrank datasets list`).")
    ] = None,
    prepared: Annotated[
        Path | None,
        typer.Option(
            help="A directory written by `adrank prepare --schema ...` (instead of --dataset)."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="Run config YAML (default: configs/models/DATASET/MODEL.yaml)."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Override, e.g. --set train.batch_size=1024 --set params.net_dropout=0.1"
        ),
    ] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Output run directory.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in RUN_DIR.")] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Start over in a RUN_DIR that holds an earlier (interrupted or finished) run; "
            "removes only the files a run writes.",
        ),
    ] = False,
    nproc: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes on this machine (DDP over torch.distributed; "
            "train.batch_size is the global batch). Multi-node: see docs/distributed.md.",
        ),
    ] = 1,
    data_dir: DataDirOpt = None,
    cache_dir: CacheDirOpt = None,
    init_from: Annotated[
        Path | None,
        typer.Option(
            help="Continue from a finished run's weights, optimizer state and processor; its "
            "vocabularies grow on the new training split (docs/streaming.md).",
        ),
    ] = None,
) -> None:
    """Train MODEL on DATASET (or on --prepared data); writes config, processor, weights and
    metrics to RUN_DIR.

    RUN_DIR must be new, empty, or an adrank run directory. One that holds a run (a
    checkpoint or a finished run) is continued with --resume or started over with
    --overwrite; without either it is refused before training."""
    from adrank.config import ConfigError, RunConfig, resolve_run_config
    from adrank.data.prepare import PreparedData
    from adrank.models import get_model_class
    from adrank.pipeline import train_run

    if (dataset is None) == (prepared is None):
        fail("give exactly one of --dataset NAME or --prepared DIR (they are mutually exclusive)")
        return
    if resume and overwrite:
        fail("give at most one of --resume (continue the run) and --overwrite (start over)")
        return
    data: PreparedData | None = None
    try:
        get_model_class(model)
        if prepared is not None:
            data = PreparedData.open(prepared.resolve())
            cfg = RunConfig.load(config) if config is not None else RunConfig(model=model)
            if cfg.model.lower() != model.lower():
                raise ConfigError(f"config is for model {cfg.model!r}, but --model is {model!r}")
            cfg = cfg.with_overrides([*(set_ or []), "dataset="])
        else:
            cfg = resolve_run_config(str(dataset), model, config, set_ or [])
    except (ConfigError, KeyError, ValueError, FileNotFoundError) as exc:
        fail(str(exc).strip("'\""))
        return
    name = dataset or (prepared.name if prepared is not None else "")
    out = run_dir or Path("runs") / f"{name}-{model.lower()}-seed{cfg.train.seed}"
    if (out / "manifest.json").exists() and not (resume or overwrite):
        fail(
            f"{out} already holds a finished run; pass --overwrite to train it again from "
            "scratch (replacing it), or another --run-dir"
        )
        return
    if nproc > 1 and init_from is not None:
        fail("--init-from trains in one process; drop --nproc")
        return
    if nproc > 1:
        source = ["--dataset", str(dataset)] if dataset else ["--prepared", str(prepared)]
        _launch_train(nproc, cfg.train.batch_size, source, model, config, set_ or [], out,
                      resume, data_dir, cache_dir, overwrite=overwrite)  # fmt: skip
        return
    try:
        result = train_run(
            cfg,
            out,
            prepared=data,
            data_dir=data_dir,
            cache_dir=cache_dir,
            resume=resume,
            overwrite=overwrite,
            force_progress=True,
            init_from=init_from,
        )
    except (KeyError, ValueError, RuntimeError, FileNotFoundError) as exc:
        fail(str(exc).strip("'\""))
        return
    if os.environ.get("RANK", "0") != "0":  # a DDP worker: rank 0 reports
        return
    tr = result.train
    console.print(
        f"{model}: best epoch {tr.best_epoch}/{tr.epochs_run}, valid AUC "
        f"{tr.best_valid.get('auc', float('nan')):.4f}, test "
        + ", ".join(f"{k}={v:.4f}" for k, v in (tr.test or {}).items())
    )
    console.print(
        f"{result.num_parameters:,} parameters, {tr.train_time_s:.1f}s, "
        f"{tr.train_samples_per_s:,.0f} train samples/s -> {out}"
    )


def _launch_train(
    nproc: int,
    batch_size: int,
    source: list[str],
    model: str,
    config: Path | None,
    overrides: list[str],
    out: Path,
    resume: bool,
    data_dir: Path | None,
    cache_dir: Path | None,
    *,
    overwrite: bool = False,
) -> None:
    """``adrank train --nproc N``: the same command (without --nproc) in N DDP workers;
    ``source`` is ``["--dataset", NAME]`` or ``["--prepared", DIR]``. ``--overwrite`` is
    passed on: rank 0 clears the run directory (``pipeline.prepare_run_dir``)."""
    from adrank.train.distributed import local_batch_size
    from adrank.train.launch import DistributedTrainingError, launch_cli

    try:
        local_batch_size(batch_size, nproc)
    except ValueError as exc:
        fail(str(exc))
    level = logging.getLogger().level
    argv = ["-v"] if level <= logging.DEBUG else ["-q"] if level >= logging.WARNING else []
    argv += ["train", *source, "--model", model, "--run-dir", str(out)]
    if config is not None:
        argv += ["--config", str(config)]
    for item in overrides:
        argv += ["--set", item]
    if resume:
        argv.append("--resume")
    if overwrite:
        argv.append("--overwrite")
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    if cache_dir is not None:
        argv += ["--cache-dir", str(cache_dir)]
    t0 = time.perf_counter()
    try:
        launch_cli(nproc, argv)
    except DistributedTrainingError as exc:
        fail(str(exc))
    console.print(f"{nproc} workers finished in {time.perf_counter() - t0:.1f}s -> {out}")


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
            help="Write reliability.png (and position_ctr.png when the data has a position "
            "role) to this directory (needs matplotlib)."
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Score a split of the run's dataset with the saved model and print the metrics (per
    task for a multi-task dataset; per slice, with the field-level calibration error, with
    --slice-by; reliability and per-position plots with --plots)."""
    import json

    from adrank.artifact import ArtifactError
    from adrank.pipeline import predict_split
    from adrank.plots import field_calibration, write_evaluation_plots
    from adrank.train.evaluation import compute_metrics, slice_metrics

    t0 = time.perf_counter()
    try:
        art, data, preds = predict_split(run_dir, split, data_dir=data_dir, cache_dir=cache_dir)
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
    except (ArtifactError, KeyError, ValueError, FileNotFoundError, ImportError) as exc:
        fail(str(exc).strip("'\""))
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
    values = {0: "<padding>", 1: "<unseen>"}
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
            table.add_row(
                name, *task, f"{m['rows']:,.0f}", *(f"{v:.4f}" for v in cells), f"{ratio:.4f}"
            )
    return table


@app.command("predict")
def predict_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    input: Annotated[Path, typer.Option("--input", help="Raw records: csv/tsv/parquet/jsonl.")],
    output: Annotated[
        Path, typer.Option("--output", help="Output .csv or .parquet: the input plus outputs.")
    ],
    batch_size: Annotated[int, typer.Option(help="Rows scored per batch.")] = SCORE_BATCH_SIZE,
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
) -> None:
    """Score raw records with the run's processor and model. Writes the input columns
    (pass-through metadata included) plus one column per output: `pctr`; `pctr`, `pcvr` and
    `pctcvr` for a click/conversion model.

    Rows are raw, as for training: a recipe's derived features (Criteo's buckets, Avazu's
    hour of day) are computed from their raw columns by the run's declared transforms.
    OUTPUT is written atomically; an existing file is refused unless --overwrite (the input
    file is never replaced)."""
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
            )
    except Exception as exc:
        fail(f"{type(exc).__name__}: {exc}")
        return
    console.print(
        f"scored {rows:,} rows in {seconds:.2f}s "
        f"({rows / max(seconds, 1e-9):,.0f} rows/s) -> {output}"
    )


def models_for_dataset(dataset: str) -> list[str]:
    """``--models all``: every registered model that can train on ``dataset`` (multi-task
    models need a dataset with several tasks, sequence models a history with a target)."""
    from adrank.data.datasets import get_dataset
    from adrank.data.schema import SequenceFeature
    from adrank.models import available_models, get_model_class
    from adrank.models.multitask import MultiTaskModel
    from adrank.models.sequence_base import SequenceModel

    try:
        schema = get_dataset(dataset).schema()
    except KeyError:
        return available_models()
    tasks = len(schema.tasks)
    history = any(isinstance(f, SequenceFeature) and f.target for f in schema.features)
    return [
        m
        for m in available_models()
        if (tasks > 1 or not issubclass(get_model_class(m), MultiTaskModel))
        and (history or not issubclass(get_model_class(m), SequenceModel))
    ]


@app.command("benchmark")
def benchmark_cmd(
    dataset: Annotated[str, typer.Option(help="Dataset name.")] = "frappe",
    models: Annotated[
        str,
        typer.Option(
            help="Comma-separated model names, or 'all'. On a multi-task dataset a single-task "
            "model runs once per task (MODEL@TASK runs one task only) and is scored as a pair."
        ),
    ] = "deepfm,dcnv2,finalmlp,finalnet",
    seeds: Annotated[int, typer.Option(help="Number of seeds (2021, 2022, ...).")] = 3,
    output: Annotated[
        Path | None,
        typer.Option(
            help="Output directory [default: runs/benchmark; with --verify: "
            "benchmarks/results/DATASET]."
        ),
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override applied to every run.")
    ] = None,
    report_only: Annotated[
        bool, typer.Option(help="Only rebuild the leaderboard from OUTPUT/runs.jsonl.")
    ] = False,
    verify: Annotated[
        str | None,
        typer.Option(
            metavar="MODEL",
            help="Re-train the row of MODEL and --seed recorded in OUTPUT/runs.jsonl in a "
            "temporary directory and compare test AUC and logloss (exit 1 unless equal to 1e-6).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="The seed of the row to --verify.")] = 2021,
    data_dir: DataDirOpt = None,
    cache_dir: CacheDirOpt = None,
) -> None:
    """BARS protocol: tuned config per model, N seeds; writes leaderboard.md/.csv/.png.

    Finished runs in OUTPUT are reused, so an interrupted benchmark continues where it
    stopped. With --verify MODEL --seed S, re-trains that one recorded row instead."""
    from adrank.bench.report import to_markdown, write_report
    from adrank.bench.runner import base_model, run_benchmark
    from adrank.models import available_models

    if verify is not None:
        from adrank.bench.verify import verify_run

        results = (output or Path("benchmarks/results") / dataset) / "runs.jsonl"
        console.print(f"verify: {verify} seed {seed} from {results}")
        try:
            checked = verify_run(
                dataset,
                verify.strip().lower(),
                seed,
                results,
                overrides=set_ or [],
                data_dir=data_dir,
                cache_dir=cache_dir,
                force_progress=True,
            )
        except (KeyError, ValueError, RuntimeError, FileNotFoundError) as exc:
            fail(str(exc).strip("'\""))
            return
        for line in checked.report():
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        if not checked.reproduced:
            raise typer.Exit(1)
        return
    output = output or Path("runs/benchmark")

    names = (
        models_for_dataset(dataset)
        if models == "all"
        else [m.strip().lower() for m in models.split(",")]
    )
    unknown = [m for m in names if base_model(m) not in available_models()]
    if unknown:
        fail(f"unknown model(s) {unknown}; available: {', '.join(available_models())}")
    seed_list = [2021 + i for i in range(seeds)]

    def on_run(row) -> None:
        console.print(
            f"[green]done[/] {row.model} seed {row.seed}: test AUC {row.test_auc:.4f}, "
            f"logloss {row.test_logloss:.4f}, {row.epochs} epochs, {row.train_time_s:.0f}s"
        )

    if report_only:
        from adrank.bench.runner import read_results

        recorded = read_results(output / "runs.jsonl")
        wanted = {base_model(n) for n in names}
        runs = [r for (m, _), r in recorded.items() if models == "all" or base_model(m) in wanted]
        if not runs:
            fail(f"no recorded runs in {output / 'runs.jsonl'}")
        from adrank.bench.runner import claim_benchmark_dir
        from adrank.outputs import OutputDirError

        try:
            claim_benchmark_dir(output)
        except OutputDirError as exc:
            fail(str(exc))
        rows = write_report(runs, dataset, output)
        console.print(to_markdown(rows, dataset))
        return
    try:
        runs = run_benchmark(
            dataset,
            names,
            seed_list,
            output,
            data_dir=data_dir,
            cache_dir=cache_dir,
            overrides=set_ or [],
            on_run=on_run,
            force_progress=True,
        )
    except (KeyError, ValueError, RuntimeError, FileNotFoundError) as exc:
        fail(str(exc).strip("'\""))
        return
    rows = write_report(runs, dataset, output)
    console.print(to_markdown(rows, dataset))
    console.print(
        f"leaderboard: {output / 'leaderboard.md'}, {output / 'leaderboard.csv'}, "
        f"{output / 'leaderboard.png'}"
    )


class CalibrationMethod(str, Enum):
    isotonic = "isotonic"
    platt = "platt"


class ModelFormat(str, Enum):
    torchscript = "torchscript"
    onnx = "onnx"


@app.command("calibrate")
def calibrate_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run directory.")],
    method: Annotated[CalibrationMethod, typer.Option(help="isotonic or platt.")] = (
        CalibrationMethod.isotonic
    ),
    data_dir: DataDirOpt = None,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Fit calibration per output on the validation split (pcvr on clicked rows), store it in
    the run, and report pred/obs and ECE before/after (derived pctcvr included)."""
    from adrank.serve.cli_commands import ServeCommandError, run_calibrate

    try:
        with console.status("calibrating ..."):
            report = run_calibrate(run_dir, method.value, data_dir, cache_dir)
        console.print(report)
    except ServeCommandError as exc:
        fail(str(exc))


@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run directory.")],
    format: Annotated[ModelFormat, typer.Option("--format", help="torchscript or onnx.")] = (
        ModelFormat.torchscript
    ),
    data_dir: DataDirOpt = None,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Export the model into the run directory (parity-checked on 10k test rows)."""
    from adrank.serve.cli_commands import ServeCommandError, run_export

    try:
        with console.status(f"exporting to {format.value} ..."):
            report = run_export(run_dir, format.value, data_dir=data_dir, cache_dir=cache_dir)
        console.print(report)
    except ServeCommandError as exc:
        fail(str(exc))


@app.command("serve")
def serve_cmd(
    model: Annotated[
        str | None,
        typer.Argument(
            metavar="MODEL",
            help="Run directory (its parent is the model root), or with --model-root a "
            "model inside the root: NAME, NAME/VERSION or NAME/latest; with --store the "
            "model's name in the store (default: default).",
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Bind address (a non-loopback address logs a warning).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes (>1 disables /admin/*).")] = 1,
    max_candidates: Annotated[int, typer.Option(help="Max ads per /v1/rank request.")] = 1000,
    max_body_bytes: Annotated[
        int,
        typer.Option(
            min=1024,
            help="Largest request body in bytes (413 above it); raise it for long histories.",
        ),
    ] = 4 * 1024 * 1024,
    backend: Annotated[str, typer.Option(help="torch, torchscript or onnx.")] = "torch",
    model_root: Annotated[
        Path | None,
        typer.Option(help="The only directory models load from (see docs/serving.md)."),
    ] = None,
    admin_token: Annotated[
        str | None,
        typer.Option(
            help="Enables /admin/* for requests with 'Authorization: Bearer TOKEN'; prefer "
            "the environment variable ADRANK_ADMIN_TOKEN (a command line is visible to "
            "other local users). Without a token /admin/* answers 404.",
            show_default=False,
        ),
    ] = None,
    impression_log: Annotated[
        Path | None,
        typer.Option(help="Directory for the rotating JSONL log of every /v1/rank request."),
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option(
            help="A model store (adrank publish): serve MODEL's latest version and follow "
            "it; every worker polls on its own (docs/serving.md).",
        ),
    ] = None,
    poll_interval: Annotated[
        float | None,
        typer.Option(help="Seconds between reads of the store's latest (with --store; 1.0)."),
    ] = None,
) -> None:
    """Serve /v1/predict (named probabilities) and /v1/rank (second-price auction with CPC,
    CPA and oCPC billing) over HTTP; see docs/serving.md (deployment: behind a TLS and
    authentication proxy)."""
    from adrank.serve.cli_commands import ServeCommandError, run_serve

    try:
        run_serve(
            model,
            host,
            port,
            workers,
            max_candidates,
            max_body_bytes=max_body_bytes,
            backend=backend,
            model_root=model_root,
            admin_token=admin_token,
            impression_log=impression_log,
            store=store,
            poll_interval=poll_interval,
        )
    except ServeCommandError as exc:
        fail(str(exc))


@app.command("models")
def models_cmd() -> None:
    """List the registered models."""
    from adrank.models import available_models, get_model_class
    from adrank.models.multitask import MultiTaskModel
    from adrank.models.sequence_base import SequenceModel

    table = Table(title="models")
    table.add_column("name")
    table.add_column("family")
    table.add_column("description")
    for name in available_models():
        cls = get_model_class(name)
        family = (
            "multi-task"
            if issubclass(cls, MultiTaskModel)
            else "sequence"
            if issubclass(cls, SequenceModel)
            else "feature interaction"
        )
        doc = (cls.__doc__ or "").strip().split("\n\n")[0]
        table.add_row(name, family, " ".join(doc.split()))
    console.print(table)
    console.print("Multi-task outputs and every model's parameters: docs/models.md")


# Command families defined in adrank/commands/ register themselves on `app` when imported.
# One import line per module, as below (the modules import `app`, `console` and `fail` from
# this module, so they are imported last).
from adrank.commands import ope as _ope  # noqa: E402,F401
from adrank.commands import store as _store  # noqa: E402,F401
from adrank.commands import stream as _stream  # noqa: E402,F401


def run() -> None:  # pragma: no cover - console entry point helper
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
