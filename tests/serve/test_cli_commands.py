"""The bodies of ``adrank calibrate`` / ``adrank export`` / ``adrank serve``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from rich.console import Console

from adrank.serve.cli_commands import ServeCommandError, run_calibrate, run_export, run_serve


def render(renderable) -> str:
    console = Console(width=200, record=True)
    console.print(renderable)
    return console.export_text()


def test_calibrate_and_export_commands(synthetic_runs, tmp_path: Path) -> None:
    run = Path(shutil.copytree(synthetic_runs.run_a, tmp_path / "run"))
    text = render(run_calibrate(run, "platt"))
    assert "platt calibration" in text and "valid" in text and "test" in text
    assert "ECE before" in text
    line = run_export(run, "torchscript")
    assert "model.torchscript.pt" in line and "on 2,000 rows" in line


def test_commands_fail_with_clean_messages(tmp_path: Path) -> None:
    with pytest.raises(ServeCommandError, match="run directory not found"):
        run_calibrate(tmp_path / "missing")
    with pytest.raises(ServeCommandError, match="run directory not found"):
        run_export(tmp_path / "missing", "onnx")
    with pytest.raises(ServeCommandError, match="unknown backend"):
        run_serve(tmp_path, backend="tensorrt")
    with pytest.raises(ServeCommandError, match="run directory not found"):
        run_serve(tmp_path / "missing", port=0)


@pytest.mark.parametrize("workers", [1, 2])
def test_run_serve_says_when_the_port_is_taken(synthetic_runs, workers: int) -> None:
    """Called from Python (not the CLI), a port in use is a ServeCommandError before the
    model loads, not uvicorn's SystemExit (one worker) or a raw OSError (several)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServeCommandError, match=f"cannot listen on 127.0.0.1:{port}"):
            run_serve(synthetic_runs.run_a, port=port, workers=workers)
    with pytest.raises(ServeCommandError, match="does not resolve"):
        run_serve(synthetic_runs.run_a, host="no-such-host.invalid", port=0)
