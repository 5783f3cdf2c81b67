"""``adrank datasets list|prepare|export|synth``: the registered public datasets and the
synthetic Criteo-schema generator."""

from __future__ import annotations

import math
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from adrank.cli import BadRows, CacheDirOpt, DataDirOpt, app, console, fail, split_table
from adrank.utils import error_text

datasets_app = typer.Typer(help="List, prepare and export public datasets.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")


class ExportFormat(str, Enum):
    csv = "csv"
    parquet = "parquet"


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

    table = split_table(f"{name}")
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
        fail(error_text(exc))
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
    from adrank.data.export import EXPORT_KIND, LEGACY_ENTRIES
    from adrank.outputs import OutputDirError, check_publishable

    out = output or Path(f"{name}_export")
    try:
        check_publishable(out, EXPORT_KIND, LEGACY_ENTRIES)  # before building the splits
        builder = get_dataset(name)
        root = resolve_data_dir(data_dir)
        ensure_files(builder, root, download=download)
        with console.status(f"building {name} splits ..."):
            splits = builder.build_splits(root, seed=seed)
    except OutputDirError as exc:
        fail(str(exc))
        return
    except (KeyError, ValueError, RuntimeError, FileNotFoundError) as exc:
        fail(error_text(exc))
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
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing OUTPUT file.")
    ] = False,
) -> None:
    """Write SYNTHETIC Criteo-schema rows (speed/scale tests only, never accuracy claims).

    OUTPUT is written to a temporary name and renamed into place; an existing file is
    refused unless --overwrite."""
    if kind != "criteo":
        fail(f"unknown synthetic dataset {kind!r}; expected 'criteo'")
        return
    if output.is_dir():
        fail(f"--output {output} is a directory; give the path of a Parquet file")
        return
    if output.exists() and not overwrite:
        fail(f"--output {output} already exists; pass --overwrite to replace it")
        return
    if not math.isfinite(cardinality_scale):
        fail(f"--cardinality-scale must be a finite number > 0, got {cardinality_scale}")
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
