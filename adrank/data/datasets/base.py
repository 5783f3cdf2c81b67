"""Public-dataset contract: remote files with checksums, the builder interface and the registry.

A :class:`DatasetBuilder` declares the files a dataset needs (:class:`RemoteFile`: where it
lives under the data directory, where it can be downloaded, its md5) and turns them into raw
``train`` / ``valid`` / ``test`` frames that match its :class:`~adrank.data.schema.Schema`.
Files live under one data directory with the layout of ``shared/data`` (e.g.
``frappe/raw/frappe.csv.gz``); a plain (uncompressed) copy at the same path without ``.gz``
is accepted too.

The data directory is chosen by :func:`resolve_data_dir`: the ``--data-dir`` value, then
``$ADRANK_DATA_DIR``, then ``~/.cache/adrank``.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import polars as pl

from adrank.data.schema import Schema

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "ADRANK_DATA_DIR"
DEFAULT_DATA_DIR = Path("~/.cache/adrank")
SPLITS: tuple[str, str, str] = ("train", "valid", "test")


@dataclass(frozen=True)
class RemoteFile:
    """One input file of a dataset.

    Attributes:
        path: location under the data directory, e.g. ``"frappe/raw/frappe.csv.gz"``. A path
            ending in ``.gz`` is stored gzip-compressed; the same path without ``.gz`` (a
            plain copy) is accepted as well.
        url: public source URL of the original file; ``""`` when there is no public download.
        md5: md5 of the **uncompressed** content (``zcat FILE | md5sum``); ``""`` if unknown,
            in which case the content is not verified.
        size: uncompressed size in bytes, if known (verified after download).
        archive_member: when ``url`` points at a zip archive, the member to extract.
    """

    path: str
    url: str
    md5: str
    size: int | None = None
    archive_member: str | None = None


class DatasetUnavailableError(RuntimeError):
    """The files a dataset needs are not in the data directory and cannot be downloaded."""


class ChecksumError(RuntimeError):
    """A file's content does not have the expected md5 (or size)."""


def find_file(data_dir: Path, path: str) -> Path | None:
    """Return the existing copy of ``path`` under ``data_dir``: the path itself, or the
    same path without (or with) a ``.gz`` suffix; ``None`` if neither exists."""
    base = Path(data_dir) / path
    alt = base.with_name(base.name[:-3]) if base.name.endswith(".gz") else Path(f"{base}.gz")
    for candidate in (base, alt):
        if candidate.is_file():
            return candidate
    return None


def unavailable_error(
    builder: DatasetBuilder,
    data_dir: Path,
    missing: list[RemoteFile],
    reason: str = "",
) -> DatasetUnavailableError:
    """Build a :class:`DatasetUnavailableError` naming every expected file of ``builder``,
    marking the ``missing`` ones, and saying where to put them."""
    missing_paths = {m.path for m in missing}
    lines = [
        f"dataset {builder.name!r} is not available under data dir {Path(data_dir)}"
        + (f": {reason}" if reason else "."),
        "Expected files (gzip-compressed as listed, or the same path without .gz):",
    ]
    for f in builder.expected_files(Path(data_dir)):
        status = "MISSING" if f.path in missing_paths else "ok"
        source = f"  (source: {f.url}" if f.url else "  (no public download"
        source += f", member {f.archive_member})" if f.archive_member else ")"
        lines.append(f"  [{status}] {Path(data_dir) / f.path}{source}")
    if builder.help_text:
        lines.append(builder.help_text)
    lines.append(
        f"Put the files there, or point --data-dir / ${DATA_DIR_ENV} at a folder that has them"
        " (with network access, `adrank datasets prepare NAME` downloads the files that have"
        " a source URL; in Python: `ensure_files(..., download=True)`)."
    )
    return DatasetUnavailableError("\n".join(lines))


class DatasetBuilder(ABC):
    """Declares a public dataset and builds its raw splits.

    Subclasses set ``name``, ``description`` and ``files`` and implement :meth:`schema` and
    :meth:`build_splits`. ``build_splits`` returns raw-value frames: labels as 0/1 ints (or
    floats), categorical features as strings, numeric features as floats, with exactly the
    schema's source columns (labels first, then features in schema order, then group/time),
    unless a builder documents extra trailing columns.
    """

    name: str = ""
    description: str = ""
    #: version of the dataset *definition* (labels, split, features). Bump it whenever the
    #: rows a builder returns change; it is shown by ``adrank datasets list`` and is part of
    #: the prepared-data cache key, so a redefined dataset is never served from an old cache.
    version: int = 1
    files: tuple[RemoteFile, ...] = ()
    optional_files: tuple[RemoteFile, ...] = ()
    default_seed: int = 2021
    help_text: str = ""

    @abstractmethod
    def schema(self) -> Schema:
        """The schema of the frames :meth:`build_splits` returns."""

    @abstractmethod
    def build_splits(
        self, data_dir: Path, seed: int | None = None, bad_rows: str = "error"
    ) -> dict[str, pl.DataFrame]:
        """Read the raw files under ``data_dir`` and return ``{"train", "valid", "test"}``
        frames. ``seed`` defaults to :attr:`default_seed`; ``bad_rows`` is passed to the
        reader (``"error"`` or ``"skip"``)."""

    def pretrained_vectors(self, data_dir: Path) -> dict[str, pl.DataFrame]:
        """Vectors of the schema's pretrained features that the dataset builds itself
        (feature name -> a table with its id and vector columns); none by default."""
        return {}

    def raw_feature_columns(self) -> list[str]:
        """Raw feature columns in schema order (for export / serving inputs)."""
        return [f.source or f.name for f in self.schema().features]

    def expected_files(self, data_dir: Path) -> tuple[RemoteFile, ...]:
        """Required files for ``data_dir``. Builders that accept alternative layouts
        override this to return the layout present (or the preferred one)."""
        return self.files

    def missing_files(self, data_dir: Path) -> list[RemoteFile]:
        """Required files with no copy under ``data_dir``."""
        return [
            f for f in self.expected_files(Path(data_dir)) if find_file(data_dir, f.path) is None
        ]

    def locate(self, data_dir: Path, path: str) -> Path:
        """The existing copy of ``path``; raises :class:`DatasetUnavailableError` naming
        every missing expected file when it is absent."""
        found = find_file(Path(data_dir), path)
        if found is None:
            missing = self.missing_files(data_dir) or [RemoteFile(path, "", "")]
            raise unavailable_error(self, data_dir, missing)
        return found

    def require_files(self, data_dir: Path) -> None:
        """Raise :class:`DatasetUnavailableError` if any required file is missing."""
        missing = self.missing_files(data_dir)
        if missing:
            raise unavailable_error(self, data_dir, missing)

    def _seed(self, seed: int | None) -> int:
        return self.default_seed if seed is None else int(seed)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


_REGISTRY: dict[str, DatasetBuilder] = {}
_LOADED = False
B = TypeVar("B", bound="DatasetBuilder | type[DatasetBuilder]")


def register_dataset(builder: B) -> B:
    """Register a dataset under its ``name`` and return the argument unchanged.

    Used as a class decorator (``@register_dataset`` on a :class:`DatasetBuilder`
    subclass: one instance is created and registered) or called with a builder instance
    (``register_dataset(MyBuilder())``). Re-registering the same class is a no-op; another
    class under a taken name is an error.
    """
    instance = builder() if isinstance(builder, type) else builder
    if not isinstance(instance, DatasetBuilder):
        raise TypeError(f"register_dataset expects a DatasetBuilder, got {builder!r}")
    if not instance.name:
        raise ValueError(f"{type(instance).__name__} has an empty 'name'")
    existing = _REGISTRY.get(instance.name)
    if existing is not None and type(existing) is not type(instance):
        raise ValueError(
            f"dataset name {instance.name!r} is already registered by {type(existing).__name__}"
        )
    _REGISTRY[instance.name] = instance
    return builder


def _load_all() -> None:
    """Import every module of :mod:`adrank.data.datasets` once, so each registers its
    builders (adding a dataset is one file with ``@register_dataset``)."""
    global _LOADED
    if _LOADED:
        return
    import adrank.data.datasets as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"adrank.data.datasets.{mod.name}")
    _LOADED = True


def get_dataset(name: str) -> DatasetBuilder:
    """The registered builder called ``name``; ``KeyError`` lists the available names."""
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown dataset {name!r}; available datasets: {available_datasets()}"
        ) from None


def available_datasets() -> list[str]:
    """Sorted names of all registered datasets."""
    _load_all()
    return sorted(_REGISTRY)


def resolve_data_dir(cli_value: str | Path | None = None) -> Path:
    """The data directory: ``cli_value`` (``--data-dir``) if given, else ``$ADRANK_DATA_DIR``,
    else ``~/.cache/adrank``. ``~`` is expanded; the directory is not created."""
    if cli_value is not None and str(cli_value) != "":
        return Path(cli_value).expanduser()
    env = os.environ.get(DATA_DIR_ENV, "")
    if env:
        return Path(env).expanduser()
    return DEFAULT_DATA_DIR.expanduser()


def split_sizes(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Row counts for a train/valid/test split of ``n`` rows: ``floor(f0 * n)``,
    ``round(f1 * n)`` and the rest (7:2:1 of 288,609 -> 202,026 / 57,722 / 28,861)."""
    total = sum(fractions)
    # the epsilon keeps e.g. 0.7 * 30 = 20.999... from losing a row to float rounding
    n_train = int(n * fractions[0] / total + 1e-9)
    n_valid = round(n * fractions[1] / total)
    n_valid = min(n_valid, n - n_train)
    return n_train, n_valid, n - n_train - n_valid


def ordered_split(
    frame: pl.DataFrame, fractions: tuple[float, float, float]
) -> dict[str, pl.DataFrame]:
    """Cut an already ordered frame (e.g. sorted by time) into contiguous train/valid/test
    blocks with :func:`split_sizes`."""
    n_train, n_valid, _ = split_sizes(frame.height, fractions)
    return {
        "train": frame.slice(0, n_train),
        "valid": frame.slice(n_train, n_valid),
        "test": frame.slice(n_train + n_valid),
    }
