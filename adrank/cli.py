"""The ``adrank`` command line. The only place in the library that prints."""

from __future__ import annotations

import inspect
import logging
import os
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, cast

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from adrank.utils import error_text

app = typer.Typer(
    help="adrank: CTR/CVR prediction and ad ranking, from raw logs to a ranked auction.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

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
        if names is None and header is Header.auto:
            names = list(res.frame.columns)
        frames[split] = res.frame
    return frames


DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Raw data directory (default: $ADRANK_DATA_DIR, then ~/.cache/adrank).",
    ),
]
PreparedOpt = Annotated[
    Path | None,
    typer.Option(
        "--prepared",
        help="The run's prepared data, where it is now (default: where the run was trained "
        "from); data prepared again with other vocabularies are refused.",
    ),
]
CacheDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="Where prepared data is cached (default: $ADRANK_CACHE_DIR, then processed/ "
        "in ~/.cache/adrank).",
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
    if os.environ.get("ADRANK_PLUGINS", "").strip():  # models of your own: import them now
        from adrank.models.registry import PluginError, available_models

        try:
            available_models()
        except PluginError as exc:
            fail(str(exc))


def fail(message: str, code: int = 1) -> None:
    """Print a clear error (no traceback) and exit. The message is printed as it is: not
    read as rich markup (paths may hold brackets) and not wrapped at the console's width
    (a wrapped path cannot be copied)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def split_table(title: str) -> Table:
    table = Table(title=title)
    for col in ("split", "rows", "positive rate", "seconds"):
        table.add_column(col, justify="right" if col != "split" else "left")
    return table


def models_for_dataset(dataset: str) -> list[str]:
    """``--models all``: every registered model that can train on ``dataset`` (multi-task
    models need a dataset with several tasks, sequence models a history with a target,
    multi-domain models a ``domain`` role, and any model the roles it requires)."""
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
    roles = set(schema.roles)

    def fits(cls: type) -> bool:
        return (
            (tasks > 1 or not issubclass(cls, MultiTaskModel))
            and (history or not issubclass(cls, SequenceModel))
            and ("domain" in roles or not getattr(cls, "multi_domain", False))
            and set(getattr(cls, "required_roles", ())) <= roles
        )

    return [m for m in available_models() if fits(get_model_class(m))]


# ------------------------------------------------------------------------ prepare ----
@app.command("prepare")
def prepare_files_cmd(
    schema: Annotated[Path, typer.Option(help="Schema YAML/JSON file.")],
    train: Annotated[
        Path, typer.Option(help="Training split (csv/tsv/parquet/jsonl/libfm, optionally .gz).")
    ],
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
    from adrank.data.prepare import PREPARED_KIND, prepare_frames, prepared_legacy_entries
    from adrank.data.readers import DataFormatError
    from adrank.data.schema import Schema, SchemaError
    from adrank.outputs import OutputDirError, check_publishable

    try:
        sch = Schema.load(schema)
        named = [("train", train), ("valid", valid), ("test", test)]
        legacy = prepared_legacy_entries(name for name, path in named if path is not None)
        check_publishable(output, PREPARED_KIND, legacy)  # before reading the input
        frames = read_split_files(
            named,
            header=Header.no if no_header else header,
            columns=columns,
            separator=separator,
            schema=sch,
            bad_rows=bad_rows.value,
        )
        table = split_table(str(output))
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
        typer.Option(
            help="Run config YAML (default: the shipped MODEL.yaml of DATASET in configs/models/)."
        ),
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
            help="Start over in a RUN_DIR that holds an earlier (interrupted or finished) run. "
            "Its files are moved aside and removed when the new run finishes; if it fails, "
            "they are put back.",
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
    train_file: Annotated[
        Path | None,
        typer.Option(
            "--train",
            help="With --init-from: your own new logs (csv/tsv/parquet/jsonl) in the run's "
            "schema, read as `adrank prepare` reads them (instead of --dataset).",
        ),
    ] = None,
    valid_file: Annotated[
        Path | None, typer.Option("--valid", help="With --train: validation logs.")
    ] = None,
    test_file: Annotated[Path | None, typer.Option("--test", help="With --train: test logs.")] = (
        None
    ),
) -> None:
    """Train MODEL on DATASET (or on --prepared data); writes config, processor, weights and
    metrics to RUN_DIR.

    RUN_DIR must be new, empty, or an adrank run directory. One that holds a run (a
    checkpoint or a finished run) is continued with --resume or started over with
    --overwrite; without either it is refused before training."""
    from adrank.artifact import ArtifactError
    from adrank.config import ConfigError, RunConfig, resolve_run_config
    from adrank.data.prepare import PreparedData
    from adrank.data.readers import DataFormatError
    from adrank.data.schema import SchemaError
    from adrank.models import get_model_class
    from adrank.pipeline import train_run
    from adrank.stream.warm_start import WarmStart
    from adrank.train.trainer import TrainingInterrupted, check_device

    if train_file is None and (valid_file or test_file):
        fail("--valid and --test go with --train FILE (and --init-from RUN)")
        return
    if train_file is not None and (init_from is None or dataset or prepared):
        fail(
            "--train FILE continues a finished run on your own logs: give --init-from RUN and "
            "no --dataset or --prepared (to train from scratch on your own logs, run `adrank "
            "prepare --schema ...` and then `adrank train --prepared DIR`)"
        )
        return
    if train_file is None and (dataset is None) == (prepared is None):
        fail("give exactly one of --dataset NAME or --prepared DIR (they are mutually exclusive)")
        return
    if resume and overwrite:
        fail("give at most one of --resume (continue the run) and --overwrite (start over)")
        return
    data: PreparedData | None = None
    warm: WarmStart | None = None
    try:
        get_model_class(model)
        if train_file is not None:
            warm = WarmStart(cast(Path, init_from))
            cfg = RunConfig.load(config) if config is not None else warm.artifact.config
            if cfg.model.lower() != model.lower():
                raise ConfigError(f"config is for model {cfg.model!r}, but --model is {model!r}")
            cfg = cfg.with_overrides([*(set_ or []), "dataset="])
            warm.check(cfg)  # before the logs are read
        elif prepared is not None:
            data = PreparedData.open(prepared.resolve())
            cfg = RunConfig.load(config) if config is not None else RunConfig(model=model)
            if cfg.model.lower() != model.lower():
                raise ConfigError(f"config is for model {cfg.model!r}, but --model is {model!r}")
            cfg = cfg.with_overrides([*(set_ or []), "dataset="])
        else:
            cfg = resolve_run_config(str(dataset), model, config, set_ or [])
        check_device(cfg.train.device)  # before the data are prepared or workers start
    except (ConfigError, KeyError, ValueError, FileNotFoundError, ArtifactError) as exc:
        fail(error_text(exc))
        return
    name = dataset or (prepared or train_file or Path()).name.split(".")[0]
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
        if warm is not None:  # your own logs: read, grow the run's vocabularies, encode
            named = [("train", train_file), ("valid", valid_file), ("test", test_file)]
            frames = read_split_files(
                named, header=Header.auto, columns=None, separator=None,
                schema=warm.processor.schema, bad_rows="error",
            )  # fmt: skip
            warm.prepared = warm.prepare_splits(
                frames,  # type: ignore[arg-type]
                f"{name}-{_files_digest(named)}",
                cache_dir=cache_dir,
            )
        result = train_run(
            cfg,
            out,
            prepared=data,
            data_dir=data_dir,
            cache_dir=cache_dir,
            resume=resume,
            overwrite=overwrite,
            force_progress=True,
            init_from=warm or init_from,
        )
    # ArithmeticError: a NaN/inf training loss or validation metric (a diverging run)
    except (
        KeyError, ValueError, RuntimeError, FileNotFoundError, ArithmeticError, SchemaError,
        DataFormatError, ArtifactError,
    ) as exc:  # fmt: skip
        fail(error_text(exc))
        return
    except TrainingInterrupted as exc:  # SIGTERM: the trainer said what it kept
        raise typer.Exit(128 + exc.signum) from None
    if os.environ.get("RANK", "0") != "0":  # a DDP worker: rank 0 reports
        return
    tr = result.train
    test = ", ".join(f"{k}={v:.4f}" for k, v in (tr.test or {}).items()) or "(no test split)"
    console.print(
        f"{model}: best epoch {tr.best_epoch}/{tr.epochs_run}, valid AUC "
        f"{tr.best_valid.get('auc', float('nan')):.4f}, test {test}"
    )
    console.print(
        f"{result.num_parameters:,} parameters, {tr.train_time_s:.1f}s, "
        f"{tr.train_samples_per_s:,.0f} train samples/s -> {out}"
    )


def _files_digest(files: list[tuple[str, Path | None]]) -> str:
    """A short digest of the given files' paths, sizes and modification times: the prepared
    cache entry of a warm start on them (other files, or changed ones, get another entry)."""
    import hashlib

    parts = []
    for split, path in files:
        if path is not None:
            st = path.stat()
            parts.append(f"{split}={path.resolve()}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


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
    from adrank.train.launch import DistributedInterrupted, DistributedTrainingError, launch_cli

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
        fail(f"{exc}; {_resume_hint(out)}")
    except DistributedInterrupted as exc:  # SIGTERM/SIGINT to this process: one line
        err_console.print(f"{exc}; {_resume_hint(out)}", markup=False, highlight=False)
        raise typer.Exit(128 + exc.signum) from None
    console.print(f"{nproc} workers finished in {time.perf_counter() - t0:.1f}s -> {out}")


def _resume_hint(run_dir: Path) -> str:
    """What to rerun after a failed distributed training: --resume only when the run
    directory holds a checkpoint to continue from."""
    checkpoint = run_dir / "checkpoint.pt"
    if checkpoint.is_file():
        return f"rerun with --resume to continue from the last checkpoint ({checkpoint})"
    return (
        f"no epoch had finished ({run_dir} holds no checkpoint), so there is nothing to "
        "resume: run it again from the start"
    )


# Command families defined in adrank/commands/ register themselves on `app` when imported.
# One import line per module, as below (the modules import `app`, `console` and `fail` from
# this module, so they are imported last). `adrank --help` lists the commands in the order
# they are registered, so these lines keep that order rather than an alphabetical one.
# isort: off
from adrank.commands import evaluate as _evaluate  # noqa: E402,F401
from adrank.commands import benchmark as _benchmark  # noqa: E402,F401
from adrank.commands import deploy as _deploy  # noqa: E402,F401
from adrank.commands import models as _models  # noqa: E402,F401
from adrank.commands import ope as _ope  # noqa: E402,F401
from adrank.commands import store as _store  # noqa: E402,F401
from adrank.commands import stream as _stream  # noqa: E402,F401
from adrank.commands import datasets as _datasets  # noqa: E402,F401
from adrank.commands import histories as _histories  # noqa: E402,F401


def _reflow(text: str) -> str:
    """Docstring paragraphs as single lines (rich help keeps a docstring's line breaks, which
    broke sentences mid-line in ``--help``); a paragraph holding a list, indented lines or
    click's ``\\b`` keeps its lines."""

    def laid_out(paragraph: str) -> bool:
        return any(line.startswith(("- ", "* ", " ", "\b")) for line in paragraph.splitlines())

    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(p if laid_out(p) else " ".join(p.split()) for p in paragraphs)


def _reflow_help(typer_app: typer.Typer) -> None:
    for info in typer_app.registered_commands:
        doc = info.help or inspect.getdoc(info.callback) or ""
        info.help = _reflow(doc) if doc else None
    for group in typer_app.registered_groups:
        if group.help:
            group.help = _reflow(group.help)
        if group.typer_instance is not None:
            _reflow_help(group.typer_instance)


_reflow_help(app)


def run() -> None:  # pragma: no cover - console entry point helper
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
