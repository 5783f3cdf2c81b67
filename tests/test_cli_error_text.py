"""CLI errors keep their first character: messages that begin with a quoted name lost the
opening quote (``error: esmm' is a multi-task model``) to a strip meant for KeyError's repr."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from adrank.cli import app
from adrank.utils import error_text


def test_error_text_unwraps_key_errors_only() -> None:
    assert error_text(KeyError("unknown model 'x'")) == "unknown model 'x'"
    assert error_text(ValueError("'esmm' is a multi-task model")) == "'esmm' is a multi-task model"
    assert error_text(KeyError(3)) == "3"


def test_a_message_starting_with_a_quote_keeps_it(tmp_path: Path) -> None:
    (tmp_path / "schema.yaml").write_text(
        "tasks:\n  - {name: click, output: pctr}\n  - {name: buy, given: click, output: pcvr}\n"
        "features: [{name: ad, type: categorical}]\n"
    )
    rows = ["click,buy,ad"] + [f"{i % 2},{int(i % 4 == 1)},a{i % 5}" for i in range(200)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    prep = ["prepare", "--schema", str(tmp_path / "schema.yaml"), "--output", str(tmp_path / "p")]
    res = CliRunner().invoke(app, [*prep, "--train", str(tmp_path / "t.csv")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(
        app,
        ["train", "--prepared", str(tmp_path / "p"), "--model", "esmm", "--set", "task=click",
         "--run-dir", str(tmp_path / "run"), "--set", "train.max_epochs=1"],
    )  # fmt: skip
    assert res.exit_code != 0
    assert "error: 'esmm' is a multi-task model" in " ".join(res.output.split()), res.output


def test_evaluate_checks_plots_before_scoring(tmp_path: Path) -> None:
    """--plots naming a file gave a raw '[Errno 17] File exists' after the whole split was
    scored; it is refused first, in words."""
    afile = tmp_path / "afile"
    afile.write_text("mine")
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path / "no-run"), "--plots", str(afile)])
    assert res.exit_code != 0
    assert "--plots" in res.output and "is a file; give a folder" in " ".join(res.output.split())
    assert afile.read_text() == "mine"
