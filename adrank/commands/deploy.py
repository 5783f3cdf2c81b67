"""``adrank calibrate``, ``adrank export`` and ``adrank serve``: readying a finished run for
serving and serving it (the bodies live in :mod:`adrank.serve.cli_commands`)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from adrank.cli import CacheDirOpt, DataDirOpt, PreparedOpt, app, console, fail


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
    prepared: PreparedOpt = None,
) -> None:
    """Fit calibration per output on the validation split (pcvr on clicked rows), store it in
    the run, and report pred/obs and ECE before/after (derived pctcvr included)."""
    from adrank.serve.cli_commands import ServeCommandError, run_calibrate

    try:
        with console.status("calibrating ..."):
            report = run_calibrate(run_dir, method.value, data_dir, cache_dir, prepared)
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
    prepared: PreparedOpt = None,
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input",
            help="Check parity on the first 10k records of this raw file (CSV/TSV/Parquet/"
            "JSON lines) instead of the prepared test split.",
        ),
    ] = None,
) -> None:
    """Export the model into the run directory (parity-checked on 10k test rows)."""
    from adrank.serve.cli_commands import ServeCommandError, run_export

    try:
        with console.status(f"exporting to {format.value} ..."):
            report = run_export(
                run_dir,
                format.value,
                data_dir=data_dir,
                cache_dir=cache_dir,
                prepared=prepared,
                parity_input=input_file,
            )
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
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free port).")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes (>1 disables /admin/*).")
    ] = 1,
    max_candidates: Annotated[
        int, typer.Option(min=1, help="Max ads per /v1/rank request.")
    ] = 1000,
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
    from adrank.serve.cli_commands import ServeCommandError, check_listen, run_serve

    try:  # before the impression log and the model
        check_listen(host, port)
    except ServeCommandError as exc:
        fail(str(exc))
    if impression_log is not None:
        from adrank.serve.impressions import prepare_log_directory

        try:
            prepare_log_directory(impression_log)
        except ValueError as exc:
            fail(f"--impression-log: {exc}")
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
