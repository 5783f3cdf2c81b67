from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real datasets (``ADRANK_DATA_DIR``); tests that need them skip when it is unset."""
    value = os.environ.get("ADRANK_DATA_DIR")
    if not value:
        pytest.skip("ADRANK_DATA_DIR is not set: real-data integration test skipped")
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"ADRANK_DATA_DIR={value} is not a directory")
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A per-session prepared-data cache, so tests never touch ~/.cache."""
    return tmp_path_factory.mktemp("adrank-cache")
