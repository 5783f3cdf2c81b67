"""``adrank stream``: incremental training on a dataset in event-time order
(docs/streaming.md; protocol in :mod:`adrank.stream.protocol`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from adrank.cli import DataDirOpt, app, console, fail
from adrank.utils import error_text


def _parse_options(options: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--option must be KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


@app.command("stream")
def stream_cmd(
    model: Annotated[str, typer.Option(help="Model name (see `adrank models`).")],
    dataset: Annotated[
        str | None,
        typer.Option(help="Dataset with a time role (e.g. movielens_100k); or --schema/--input."),
    ] = None,
    schema_file: Annotated[
        Path | None,
        typer.Option(
            "--schema", help="Your own logs: a schema with a time role (with --input files)."
        ),
    ] = None,
    inputs: Annotated[
        list[Path] | None,
        typer.Option(
            "--input", help="A raw log file (csv/tsv/parquet/jsonl) of --schema; repeatable."
        ),
    ] = None,
    strategy: Annotated[
        str,
        typer.Option(help="Update strategy: full_retrain, sliding_window, fine_tune, ..."),
    ] = "fine_tune",
    option: Annotated[
        list[str] | None,
        typer.Option("--option", help="A strategy option KEY=VALUE, e.g. --option window=4."),
    ] = None,
    chunks: Annotated[int, typer.Option(min=2, help="Equal-row chunks.")] = 20,
    period_s: Annotated[
        float | None, typer.Option(help="Chunks of this many seconds instead of equal rows.")
    ] = None,
    max_epochs: Annotated[int, typer.Option(min=1, help="Epoch cap per update.")] = 5,
    min_count: Annotated[
        int | None, typer.Option(help="Admission count for new ids (default: the schema's).")
    ] = None,
    evict_after: Annotated[
        int | None, typer.Option(help="Evict ids unseen for this many chunks.")
    ] = None,
    cold_by: Annotated[
        str | None, typer.Option(help="Column of the warm/cold slices (default: group role).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed.")] = 2021,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Config override, e.g. --set train.batch_size=512."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output directory (records + runs).")] = None,
    save: Annotated[
        str, typer.Option(help="Per-chunk run directories to keep: none, last or all.")
    ] = "last",
    data_dir: DataDirOpt = None,
) -> None:
    """Cut DATASET (or your own logs: --schema with --input files) into chunks in time
    order; for each chunk t update MODEL with STRATEGY, then score chunk t+1 before training
    on it. Prints AUC per chunk, compute (rows x epochs) and wall time; OUT gets
    records.jsonl and run directories (chunk_NNN)."""
    from adrank.config import ConfigError, RunConfig, resolve_run_config
    from adrank.data.readers import DataFormatError
    from adrank.data.schema import Schema, SchemaError
    from adrank.outputs import OutputDirError
    from adrank.stream.protocol import (
        StreamSettings,
        cut_chunks,
        load_stream,
        load_stream_files,
        time_column,
    )
    from adrank.stream.runner import run_stream
    from adrank.stream.strategies import build_strategy

    if (dataset is None) == (schema_file is None) or (schema_file is None) != (not inputs):
        fail("give either --dataset NAME, or --schema FILE with one or more --input FILE")
        return
    name = dataset or Path(str(schema_file)).stem
    try:
        build_strategy(strategy, _parse_options(option or []))  # before the data are read
        if dataset is not None:
            cfg = resolve_run_config(dataset, model, None, set_ or [])
        else:
            cfg = RunConfig(model=model).with_overrides([*(set_ or []), "dataset="])
        settings = StreamSettings(
            chunks=chunks,
            period_s=period_s,
            max_epochs=max_epochs,
            cold_by=cold_by,
            min_count=min_count,
            evict_after=evict_after,
        )
        if dataset is not None:
            schema, frame = load_stream(dataset, data_dir)
        else:
            schema = Schema.load(schema_file)
            name = schema.name if schema.name != "dataset" else name  # its own name, if any
            frame = load_stream_files(schema, list(inputs or ()))
        parts = cut_chunks(frame, time_column(schema), chunks, period_s)
        if len(parts) < 2:
            raise ValueError(f"the stream has {len(parts)} chunk(s); it needs at least 2")
        records = run_stream(
            schema,
            parts,
            cfg.model,
            cfg.params,
            cfg.train,
            strategy,
            _parse_options(option or []),
            settings,
            seed,
            dataset=name,
            out=out,
            save=save,
        )
    except (
        ConfigError,
        KeyError,
        ValueError,
        FileNotFoundError,
        OutputDirError,
        SchemaError,
        DataFormatError,
    ) as exc:
        fail(error_text(exc))
        return
    table = Table(
        title=f"{model} {strategy} on {name} ({len(parts)} chunks, seed {seed})",
        box=box.SIMPLE_HEAD,  # no column rules: nine columns fit in 80 columns
        collapse_padding=True,
        pad_edge=False,
    )
    for col in ("chunk", "rows", "AUC", "logloss", "pred/obs", "warm AUC", "cold AUC",
                "compute", "update s"):  # fmt: skip
        table.add_column(col, justify="right")

    def cell(value: float | None) -> str:
        return "-" if value is None or value != value else f"{value:.4f}"

    for r in records:
        table.add_row(
            str(r["chunk"]), f"{r['rows']:,}", cell(r.get("auc")), cell(r.get("logloss")),
            cell(r.get("calibration_ratio")), cell(r.get("warm_auc")), cell(r.get("cold_auc")),
            f"{r['compute']:,}", f"{r['update_wall_s']:.1f}",
        )  # fmt: skip
    console.print(table)
    aucs = [r["auc"] for r in records if r.get("auc") is not None]
    last = cell(aucs[-1] if aucs else None)
    console.print(
        f"mean next-chunk AUC {sum(aucs) / max(len(aucs), 1):.4f}, last {last}, "
        f"compute {sum(r['compute'] for r in records):,} rows x epochs, "
        f"update time {sum(r['update_wall_s'] for r in records):.1f}s"
        + (f" -> {out}" if out else "")
    )
