"""Edge values of ``adrank serve``, ``adrank export`` and ``adrank benchmark`` flags: each is
refused up front with a one-line ``error:`` (or a usage error), never a traceback, a server
that fails on every request, or output written for nothing.

The serve cases pass a MODEL that does not exist: a flag checked before the model loads is
reported as itself, and none of these tests can start a server."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adrank.cli import app
from adrank.serve.impressions import ImpressionLog


def invoke(args: list[str]):
    return CliRunner().invoke(app, args)


def one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], result.output


@pytest.mark.parametrize(
    "flag",
    [
        ["--port", "70000"],
        ["--port", "-1"],
        ["--workers", "0"],
        ["--workers", "-1"],
        ["--max-candidates", "0"],
    ],
)
def test_serve_out_of_range_flags_are_usage_errors(tmp_path: Path, flag: list[str]) -> None:
    res = invoke(["serve", str(tmp_path / "missing"), *flag])
    assert res.exit_code == 2, res.output
    assert flag[0] in res.output


def test_serve_unresolvable_host_is_reported(tmp_path: Path) -> None:
    res = invoke(["serve", str(tmp_path / "missing"), "--host", "999.1.1.1", "--port", "0"])
    one_line_error(res, "--host", "999.1.1.1")


def test_serve_port_in_use_is_reported(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for workers in ("1", "2"):
            res = invoke(
                ["serve", str(tmp_path / "missing"), "--port", str(port), "--workers", workers]
            )
            one_line_error(res, f"127.0.0.1:{port}")


def test_serve_impression_log_that_is_a_file_is_refused(tmp_path: Path) -> None:
    user_file = tmp_path / "impressions"
    user_file.write_text("mine\n")
    for workers in ("1", "2"):  # with workers > 1 every worker used to crash and respawn
        res = invoke(
            [
                "serve",
                str(tmp_path / "missing"),
                "--port",
                "0",
                "--workers",
                workers,
                "--impression-log",
                str(user_file),
            ]
        )
        one_line_error(res, "--impression-log", "not a directory")
    assert user_file.read_text() == "mine\n"


def test_impression_log_directory_errors_are_value_errors(tmp_path: Path) -> None:
    user_file = tmp_path / "file"
    user_file.write_text("mine\n")
    with pytest.raises(ValueError, match="not a directory"):
        ImpressionLog(user_file)
    with pytest.raises(ValueError, match="cannot create"):
        ImpressionLog(user_file / "sub")
    assert user_file.read_text() == "mine\n"


def test_export_target_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "model.torchscript.pt").mkdir(parents=True)
    (run / "model.torchscript.pt" / "keep.txt").write_text("mine\n")
    res = invoke(["export", str(run)])
    one_line_error(res, "model.torchscript.pt", "not a file")
    assert (run / "model.torchscript.pt" / "keep.txt").read_text() == "mine\n"


@pytest.mark.parametrize("seeds", ["0", "-2"])
def test_benchmark_without_seeds_is_a_usage_error(tmp_path: Path, seeds: str) -> None:
    out = tmp_path / "bench"
    res = invoke(["benchmark", "--models", "lr", "--seeds", seeds, "--output", str(out)])
    assert res.exit_code == 2, res.output
    assert "--seeds" in res.output
    assert not out.exists()


@pytest.mark.parametrize("models", ["", " , "])
def test_benchmark_empty_models_is_refused(tmp_path: Path, models: str) -> None:
    out = tmp_path / "bench"
    res = invoke(["benchmark", "--models", models, "--seeds", "1", "--output", str(out)])
    one_line_error(res, "--models")
    assert not out.exists()


def test_benchmark_never_writes_into_a_users_folder(tmp_path: Path) -> None:
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("precious\n")
    res = invoke(["benchmark", "--models", "lr", "--seeds", "1", "--output", str(user)])
    one_line_error(res, "refusing to write into")
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt"]
    assert (user / "notes.txt").read_text() == "precious\n"


def test_benchmark_of_an_unknown_dataset_leaves_no_folder(tmp_path: Path) -> None:
    """The folder the benchmark claimed for its output is taken back when the dataset is
    unknown; an existing benchmark output is left as it was."""
    out = tmp_path / "new"
    res = invoke(["benchmark", "--dataset", "nosuch", "--models", "lr", "--output", str(out)])
    one_line_error(res, "unknown dataset 'nosuch'")
    assert not out.exists()
    old = tmp_path / "old"
    old.mkdir()
    (old / "runs.jsonl").write_text("")
    res = invoke(["benchmark", "--dataset", "nosuch", "--models", "lr", "--output", str(old)])
    one_line_error(res, "unknown dataset 'nosuch'")
    left = sorted(p.name for p in old.iterdir() if p.name != ".adrank.lock")
    assert left == [".adrank", "runs.jsonl"]
