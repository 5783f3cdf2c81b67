"""Bodies of the ``adrank calibrate``, ``adrank export`` and ``adrank serve`` commands.

Each function takes typed arguments, does the work and returns something the CLI prints (a
rich renderable or a string). Expected failures (a missing or incompatible run directory,
missing prepared data, a missing optional dependency, a parity failure, a bad option) are
raised as :class:`ServeCommandError` with a one-line message for ``fail(...)``.
"""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

from rich.table import Table

from adrank.artifact import ArtifactError
from adrank.utils import error_text

_EXPECTED = (ArtifactError, FileNotFoundError, ValueError, KeyError, ImportError, RuntimeError)


class ServeCommandError(RuntimeError):
    """An expected, user-facing failure of a serving command."""


def check_listen(host: str, port: int) -> None:
    """Raise :class:`ServeCommandError` when ``host`` does not resolve or ``host:port``
    cannot be bound (in use, not a local address), so that it is said before the model
    loads."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ServeCommandError(f"--host {host!r} does not resolve: {reason}") from exc
    family, kind, proto, _, address = infos[0]
    try:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise ServeCommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def _fmt(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.4f}"


def run_calibrate(
    run_dir: Path,
    method: str = "isotonic",
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    prepared: Path | None = None,
) -> Table:
    """Fit and store calibration; returns a before/after table (pred/obs ratio and ECE per
    split and output, with the rows each output is measured on: ``pcvr`` on clicked rows).
    Outputs derived from calibrated ones (``pctcvr`` of ESMM) are marked ``(derived)``."""
    from adrank.serve.calibration import calibrate

    try:
        report = calibrate(
            run_dir, method, data_dir=data_dir, cache_dir=cache_dir, prepared_dir=prepared
        )
    except _EXPECTED as exc:
        raise ServeCommandError(error_text(exc)) from exc
    fitted = ", ".join(f"{name} on {rows:,}" for name, rows in report.fitted_rows.items())
    table = Table(title=f"{method} calibration of {run_dir} (fitted on valid rows: {fitted})")
    columns = ("split", "rows", "pred/obs before", "pred/obs after", "ECE before", "ECE after")
    for col in columns:
        table.add_column(col, justify="left" if col == "split" else "right")
    for key, sides in report.splits.items():
        before, after = sides["before"], sides["after"]
        derived = key.rsplit("/", 1)[-1] in report.derived
        table.add_row(
            key + (" (derived)" if derived else ""),
            f"{int(before.get('rows', 0)):,}",
            _fmt(before["ratio"]),
            _fmt(after["ratio"]),
            _fmt(before["ece"]),
            _fmt(after["ece"]),
        )
    return table


def run_export(
    run_dir: Path,
    fmt: str = "torchscript",
    rows: int = 10_000,
    tolerance: float = 1e-5,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    prepared: Path | None = None,
    parity_input: Path | None = None,
) -> str:
    """Export with the parity check; returns a one-line summary."""
    from adrank.serve.export import export

    try:
        result = export(
            run_dir,
            fmt,
            rows=rows,
            tolerance=tolerance,
            data_dir=data_dir,
            cache_dir=cache_dir,
            prepared_dir=prepared,
            parity_input=parity_input,
        )
    except _EXPECTED as exc:
        raise ServeCommandError(error_text(exc)) from exc
    return (
        f"wrote {result.path} ({fmt}); max |p - eager| = {result.max_abs_diff:.3g} "
        f"on {result.rows:,} rows (tolerance {tolerance:g})"
    )


def run_serve(
    run_dir: Path | str | None,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    max_candidates: int = 1000,
    max_body_bytes: int = 4 * 1024 * 1024,
    backend: str = "torch",
    torch_threads: int = 1,
    *,
    model_root: Path | None = None,
    admin_token: str | None = None,
    impression_log: Path | None = None,
    store: Path | None = None,
    poll_interval: float | None = None,
) -> None:
    """Serve a run over HTTP until interrupted. ``run_dir`` is a run directory, or with
    ``model_root`` a reference inside it; ``admin_token`` (else ``$ADRANK_ADMIN_TOKEN``)
    enables ``/admin/*``; ``impression_log`` is a directory for the impression log. With
    ``store`` (a model store, ``adrank publish``) ``run_dir`` is the model's name in it
    (None: ``default``), and every worker follows its ``latest`` every ``poll_interval``
    seconds."""
    try:
        from adrank.serve.admin import ADMIN_TOKEN_ENV, check_token
        from adrank.serve.app import serve
        from adrank.serve.predictor import BACKENDS
    except ImportError as exc:
        raise ServeCommandError(str(exc)) from exc
    if backend not in BACKENDS:
        raise ServeCommandError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    token = admin_token or os.environ.get(ADMIN_TOKEN_ENV) or None
    if token is not None:
        try:
            check_token(token)
        except ValueError as exc:  # the message never quotes the token
            raise ServeCommandError(f"--admin-token / ${ADMIN_TOKEN_ENV}: {exc}") from exc
    if model_root is not None and not Path(model_root).is_dir():
        raise ServeCommandError(f"--model-root {model_root} is not a directory")
    follow: dict[str, object] = {}
    if store is not None:
        from adrank.serve.model_store import DEFAULT_NAME
        from adrank.serve.store_follower import DEFAULT_POLL_INTERVAL

        if model_root is not None:
            raise ServeCommandError("give --store or --model-root, not both (a store is a root)")
        if not Path(store).is_dir():
            raise ServeCommandError(f"--store {store} is not a directory")
        interval = DEFAULT_POLL_INTERVAL if poll_interval is None else poll_interval
        if not 0.05 <= interval <= 86_400:  # below 50 ms a worker spends its core polling
            raise ServeCommandError(
                f"--poll-interval must be in [0.05, 86400] seconds, got {interval}"
            )
        run_dir, model_root = run_dir or DEFAULT_NAME, store
        follow = {"follow_store": True, "poll_interval": interval}
    elif poll_interval is not None:
        raise ServeCommandError("--poll-interval applies only with --store")
    if not run_dir:
        raise ServeCommandError("give a MODEL (a run directory), or --store DIR")
    check_listen(host, port)
    try:
        serve(
            run_dir,
            host,
            port,
            workers=workers,
            max_candidates=max_candidates,
            max_body_bytes=max_body_bytes,
            backend=backend,
            torch_threads=torch_threads,
            model_root=model_root,
            admin_token=token,
            impression_log=impression_log,
            **follow,
        )
    except (ArtifactError, FileNotFoundError, ImportError, ValueError) as exc:
        raise ServeCommandError(error_text(exc)) from exc
    except OSError as exc:  # the shared socket of several workers, taken since the check
        raise ServeCommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
