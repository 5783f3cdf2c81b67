"""``--help`` of every command reads as written: sentences are not broken where the
docstring's lines end, and no help text is swallowed as rich markup."""

from __future__ import annotations

import re

import pytest
import typer.main
from typer.testing import CliRunner

from adrank.cli import app

#: rich reads ``[word...]`` as a style tag and drops it from the rendered help
_RICH_TAG = re.compile(r"(?<!\\)\[[A-Za-z/@#]")


def _commands(command, path: tuple[str, ...] = ()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "adrank")
def test_help_text_survives_rich_markup(path: tuple[str, ...]) -> None:
    command = dict(COMMANDS)[path]
    texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
    swallowed = [t for t in texts if _RICH_TAG.search(t)]
    assert not swallowed, f"{' '.join(path)}: rich would drop the bracketed text of {swallowed}"


def test_help_paragraphs_are_reflowed() -> None:
    """The docstring of ``benchmark`` breaks "continues where it / stopped" across lines;
    the rendered help (wide terminal) keeps the sentence on one line, and the command list
    of ``adrank --help`` does the same for ``train``."""
    runner = CliRunner()
    wide = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}
    text = runner.invoke(app, ["benchmark", "--help"], env=wide).output
    assert "continues where it stopped" in text
    assert "with --verify: the committed results, results/DATASET in the benchmarks" in text
    listing = runner.invoke(app, ["--help"], env=wide).output
    assert "writes config, processor, weights and metrics to RUN_DIR" in listing


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "adrank")
def test_help_is_not_cut_in_an_80_column_terminal(path: tuple[str, ...]) -> None:
    """Rich cuts a word wider than its column with an ellipsis: long paths and defaults in
    the help (``configs/models/DATASET/MODEL.yaml``) read ``configs/models/DATASET…`` in
    an 80-column terminal."""
    text = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"}).output
    cut = [line for line in text.splitlines() if "\u2026" in line]
    assert not cut, f"{' '.join(path) or 'adrank'} --help at 80 columns cuts: {cut}"
