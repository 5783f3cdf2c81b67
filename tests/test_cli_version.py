"""``adrank --version``."""

from __future__ import annotations

from typer.testing import CliRunner

import adrank
from adrank.cli import app


def test_version_flag_prints_the_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"adrank {adrank.__version__}"
