"""The model store when ``latest`` is malformed or names a version deleted by hand."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adrank.cli import app
from adrank.serve.model_store import latest_version, publish, rollback, versions


@pytest.fixture()
def run(synthetic_runs) -> Path:
    """A real finished run: `adrank publish` and rollback check that the model loads."""
    return synthetic_runs.run_a


def test_a_malformed_latest_is_refused_before_publishing_and_rollback_repairs_it(
    run: Path, tmp_path: Path
) -> None:
    """Before: publish copied version 3 into the store, then failed on the pointer, and
    rollback refused the same pointer, so it could only be repaired by hand."""
    store = tmp_path / "store"
    publish(run, store)
    publish(run, store)
    (store / "default" / "latest").write_text("garbage\n")
    result = CliRunner().invoke(app, ["publish", str(run), "--store", str(store)])
    assert result.exit_code == 1 and "nothing was published" in result.output
    assert versions(store / "default") == [1, 2]
    result = CliRunner().invoke(app, ["rollback", "--store", str(store), "--to", "2"])
    assert result.exit_code == 0, result.output
    assert latest_version(store / "default") == 2
    assert publish(run, store).latest == 3


def test_a_latest_naming_a_deleted_version_is_never_reused_or_kept(
    run: Path, tmp_path: Path
) -> None:
    """Before: with latest "3" and version 3 deleted by hand, the next publish was numbered
    3 again (a server still serving the old 3 would never load it); with latest "9" over
    versions 1-2, latest stayed on the missing 9 ("it is newer") forever."""
    store = tmp_path / "store"
    for _ in range(3):
        publish(run, store)
    model = store / "default"
    for path in (model / "3").rglob("*"):  # deleted by hand (versions are read-only)
        path.chmod(0o755)
    (model / "3").chmod(0o755)
    shutil.rmtree(model / "3")
    again = publish(run, store)
    assert (again.version, again.latest) == (4, 4)
    (model / "latest").write_text("9\n")
    later = publish(run, store)
    assert (later.version, later.latest) == (10, 10)
    assert versions(model) == [1, 2, 4, 10]
    assert rollback(store, 2) == (10, 2)
