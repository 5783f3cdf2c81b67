"""Public CTR datasets: checksummed downloads and raw split builders.

Importing this package registers every builder. Typical use::

    from adrank.data.datasets import ensure_files, get_dataset, resolve_data_dir

    builder = get_dataset("frappe")
    data_dir = resolve_data_dir()          # --data-dir, $ADRANK_DATA_DIR, ~/.cache/adrank
    ensure_files(builder, data_dir)        # download missing files (md5-verified)
    splits = builder.build_splits(data_dir, seed=2021)   # {"train", "valid", "test"}

Registered: ``frappe``, ``frappe_funnel``, ``frappe_x1``, ``movielenslatest_x1``,
``criteo``, ``avazu``, ``movielens_100k``, ``open_bandit``, ``ali_ccp``, ``aliexpress``, and
the multi-domain ``frappe_domains``, ``movielens_100k_domains`` and
``movielens_100k_domains_thin``.

A dataset registers itself as a model does: a module here with a
``@register_dataset``-decorated :class:`DatasetBuilder` subclass (every module of this
package is imported on the first lookup). Each builder has a definition ``version``
(shown by ``adrank datasets list``; part of the prepared-data cache key).
"""

from __future__ import annotations

from adrank.data.datasets import (  # noqa: F401  (imported to register the builders)
    avazu,
    bars_x1,
    click_conversion,
    criteo,
    domains,
    frappe,
    movielens,
    open_bandit,
)
from adrank.data.datasets.base import (
    DATA_DIR_ENV,
    ChecksumError,
    DatasetBuilder,
    DatasetUnavailableError,
    RemoteFile,
    available_datasets,
    find_file,
    get_dataset,
    register_dataset,
    resolve_data_dir,
)
from adrank.data.datasets.download import (
    DownloadError,
    download_file,
    ensure_files,
    verify_file,
)

__all__ = [
    "DATA_DIR_ENV",
    "ChecksumError",
    "DatasetBuilder",
    "DatasetUnavailableError",
    "DownloadError",
    "RemoteFile",
    "available_datasets",
    "download_file",
    "ensure_files",
    "find_file",
    "get_dataset",
    "register_dataset",
    "resolve_data_dir",
    "verify_file",
]
