"""``adrank publish`` and ``adrank rollback``: numbered versions in a model store that
``adrank serve --store`` follows (:mod:`adrank.serve.model_store`, ``docs/serving.md``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from adrank.cli import app, console, fail

_NAME_HELP = "The model's name in the store (a relative path)."


@contextmanager
def _said_once() -> Iterator[None]:
    """The command prints its result; the store's INFO line (for code that publishes and
    servers that follow) would say it a second time."""
    log = logging.getLogger("adrank.serve.model_store")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


@app.command("publish")
def publish_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    store: Annotated[Path, typer.Option(help="The model store (a model root; created).")],
    name: Annotated[str, typer.Option(help=_NAME_HELP)] = "default",
    allow_incompatible: Annotated[
        bool,
        typer.Option(
            "--allow-incompatible",
            help="Publish a model whose inputs or outputs differ from the latest version's.",
        ),
    ] = False,
) -> None:
    """Copy a run into the store as the next immutable version STORE/NAME/N, then move
    NAME's latest pointer to it (servers started with --store follow it). A model that
    reads or gives other fields than the latest version is refused without
    --allow-incompatible."""
    from adrank.serve.model_root import ModelRootError
    from adrank.serve.model_store import StoreError, publish

    try:
        with _said_once():
            done = publish(run_dir, store, name, allow_incompatible=allow_incompatible)
    except (StoreError, ModelRootError, OSError) as exc:
        fail(str(exc))
    note = "" if done.latest == done.version else f" (latest stays {done.latest}: it is newer)"
    console.print(f"published {run_dir} as {name}/{done.version} in {store}{note}")


@app.command("rollback")
def rollback_cmd(
    store: Annotated[Path, typer.Option(help="The model store.")],
    to: Annotated[int, typer.Option(help="The published version latest should name.")],
    name: Annotated[str, typer.Option(help=_NAME_HELP)] = "default",
    allow_incompatible: Annotated[
        bool,
        typer.Option(
            "--allow-incompatible",
            help="Roll back to a version whose inputs or outputs differ from the latest's.",
        ),
    ] = False,
) -> None:
    """Point NAME's latest back at an earlier published version (nothing is deleted);
    servers following the store move to it. A version the servers would refuse (it does not
    load, or reads other inputs than the latest without --allow-incompatible) is refused."""
    from adrank.serve.model_root import ModelRootError
    from adrank.serve.model_store import StoreError, rollback

    try:
        with _said_once():
            previous, current = rollback(store, to, name, allow_incompatible=allow_incompatible)
    except (StoreError, ModelRootError, OSError) as exc:
        fail(str(exc))
    before = "(not a version number)" if previous is None else previous
    console.print(f"{name}: latest {before} -> {current} in {store}")
