"""``adrank prepare`` on raw files as people have them, and never over the user's files."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from adrank.cli import app

SCHEMA = """
tasks: [{name: click, label: click}]
features:
  - {name: site, type: categorical}
  - {name: app, type: categorical}
"""


def write_splits(tmp: Path, sep: str = ",") -> None:
    rows = [f"{i % 2}{sep}s{i % 3}{sep}a{i % 4}" for i in range(40)]
    (tmp / "schema.yaml").write_text(SCHEMA)
    (tmp / "train.csv").write_text(f"click{sep}site{sep}app\n" + "\n".join(rows[:30]) + "\n")
    (tmp / "dev.csv").write_text("\n".join(rows[30:]) + "\n")  # no header, as Avazu's dev


def prepare(tmp: Path, *extra: str):
    args = ["prepare", "--schema", str(tmp / "schema.yaml"), "--train", str(tmp / "train.csv"),
            "--valid", str(tmp / "dev.csv"), *extra]  # fmt: skip
    return CliRunner().invoke(app, args)


def test_header_detected_per_file(tmp_path: Path) -> None:
    write_splits(tmp_path)
    result = prepare(tmp_path, "--output", str(tmp_path / "prepared"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "prepared" / "valid.parquet").exists()


def test_separator_option(tmp_path: Path) -> None:
    write_splits(tmp_path, sep=";")
    result = prepare(tmp_path, "--separator", ";", "--output", str(tmp_path / "prepared"))
    assert result.exit_code == 0, result.output


def test_declared_header_on_a_headerless_file_names_the_fix(tmp_path: Path) -> None:
    write_splits(tmp_path)
    result = prepare(tmp_path, "--header", "yes", "--output", str(tmp_path / "prepared"))
    assert result.exit_code == 1
    # the data line is taken as a header only to be refused: nothing is read silently
    assert "required by the schema are missing" in result.output


@pytest.mark.parametrize("target", [".", "mine"])
def test_prepare_into_a_folder_of_the_users_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    """The data-loss finding: `adrank prepare ... --output .` deleted the user's files."""
    write_splits(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    (tmp_path / "notes.txt").write_text("keep me")
    monkeypatch.chdir(tmp_path)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    result = prepare(tmp_path, "--output", target)
    assert result.exit_code == 1
    assert "refusing to write" in result.output
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_prepare_again_replaces_its_own_output(tmp_path: Path) -> None:
    write_splits(tmp_path)
    out = tmp_path / "prepared"
    assert prepare(tmp_path, "--output", str(out)).exit_code == 0
    result = prepare(tmp_path, "--output", str(out))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        ".adrank", "feature_map.json", "processor", "stats.json", "train.parquet", "valid.parquet"
    ]  # fmt: skip
