"""Click + conversion samples for multi-task models (ESMM/MMoE/PLE): Ali-CCP and AliExpress.

Both come as tiny samples (``click_conversion_mtl/``), fit for smoke tests only. Each has
two tasks: ``click`` (-> ``pctr``) and the conversion given ``click`` (-> ``pcvr``); in every
sample file a conversion implies a click (checked by the tests).

* ``ali_ccp``: ``ali_ccp_{train,val,test}_sample.csv.gz`` (100 / 50 / 50 rows) used as
  train / valid / test. Labels ``click`` and ``purchase``; the 23 Ali-CCP id fields are
  categorical; the 8 ``D*`` columns are numeric (standardized).
* ``aliexpress``: ``aliexpress_{train,test}_sample.csv.gz`` (100 / 20 rows; click-enriched,
  60 % clicks). Labels ``click`` and ``conversion``; ``categorical_1..16`` categorical,
  ``numerical_1..63`` numeric (already scaled, no normalizer); ``search_id`` is the group.
  There is no validation file, so a seeded random 10 % of the train file is held out as
  ``valid``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from adrank.data.datasets.base import SPLITS, DatasetBuilder, RemoteFile, register_dataset
from adrank.data.readers import DataFormatError, read_raw
from adrank.data.schema import CategoricalFeature, NumericFeature, Schema, Task

_BASE = (
    "https://raw.githubusercontent.com/datawhalechina/torch-rechub/"
    "5a73b2eebc3a670dc64c54971cc06a78ddd55394/examples/ranking/data"
)
ALI_CCP_ID_FIELDS: tuple[str, ...] = (
    "101", "121", "122", "124", "125", "126", "127", "128", "129", "205", "206", "207", "210",
    "216", "508", "509", "702", "853", "301", "109_14", "110_14", "127_14", "150_14",
)  # fmt: skip
ALI_CCP_DENSE: tuple[str, ...] = (
    "D109_14", "D110_14", "D127_14", "D150_14", "D508", "D509", "D702", "D853",
)  # fmt: skip
ALIEXPRESS_CATEGORICAL: tuple[str, ...] = tuple(f"categorical_{i}" for i in range(1, 17))
ALIEXPRESS_NUMERIC: tuple[str, ...] = tuple(f"numerical_{i}" for i in range(1, 64))


def _read(path: Path, schema: Schema, bad_rows: str) -> pl.DataFrame:
    """Read a headed CSV and return the schema's columns: labels as Int64, numerics as
    Float64, categoricals as strings."""
    frame = read_raw(path, bad_rows=bad_rows).frame
    columns = schema.source_columns()
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataFormatError(f"{path}: missing column(s) {missing}; got {frame.columns}")
    numeric = {f.name for f in schema.features if isinstance(f, NumericFeature)}
    exprs = []
    for c in columns:
        if c in schema.labels:
            exprs.append(pl.col(c).cast(pl.Float64).cast(pl.Int64))
        elif c in numeric:
            exprs.append(pl.col(c).cast(pl.Float64))
        else:
            exprs.append(pl.col(c))
    return frame.select(exprs)


@register_dataset
class AliCCPBuilder(DatasetBuilder):
    """Ali-CCP sample: click + purchase labels, 23 id fields, 8 dense fields."""

    name = "ali_ccp"
    description = (
        "Ali-CCP sample (100/50/50 rows): tasks click -> pctr, purchase given click -> pcvr; "
        "smoke tests only"
    )
    files = (
        RemoteFile("click_conversion_mtl/ali_ccp_train_sample.csv.gz",
                   f"{_BASE}/ali-ccp/ali_ccp_train_sample.csv",
                   "398ec366c4a8a89e1503e5536793702a", 10_450),
        RemoteFile("click_conversion_mtl/ali_ccp_val_sample.csv.gz",
                   f"{_BASE}/ali-ccp/ali_ccp_val_sample.csv",
                   "2cbd54519f6d6deb02443abfdea1e74e", 5_396),
        RemoteFile("click_conversion_mtl/ali_ccp_test_sample.csv.gz",
                   f"{_BASE}/ali-ccp/ali_ccp_test_sample.csv",
                   "94c6f50b5fcd38afb98050dd886d7f5d", 5_432),
    )  # fmt: skip

    def schema(self) -> Schema:
        return Schema(
            tasks=(Task("click", "click"), Task("purchase", "purchase", given="click")),
            features=(
                *(CategoricalFeature(c) for c in ALI_CCP_ID_FIELDS),
                *(NumericFeature(c, normalizer="standard") for c in ALI_CCP_DENSE),
            ),
            name=self.name,
        )

    def build_splits(
        self, data_dir: Path, seed: int | None = None, bad_rows: str = "error"
    ) -> dict[str, pl.DataFrame]:
        self.require_files(Path(data_dir))
        schema = self.schema()
        return {
            split: _read(self.locate(Path(data_dir), f.path), schema, bad_rows)
            for split, f in zip(SPLITS, self.files, strict=True)
        }


@register_dataset
class AliExpressBuilder(DatasetBuilder):
    """AliExpress sample: click + conversion labels; valid held out from train (10 %)."""

    name = "aliexpress"
    description = (
        "AliExpress sample (100/20 rows, click-enriched): tasks click -> pctr, conversion given "
        "click -> pcvr; 10 % of train held out as valid; smoke tests only"
    )
    files = (
        RemoteFile("click_conversion_mtl/aliexpress_train_sample.csv.gz",
                   f"{_BASE}/aliexpress/aliexpress_train_sample.csv",
                   "0f945ece360b22d97fe1f4613c4e5488", 46_177),
        RemoteFile("click_conversion_mtl/aliexpress_test_sample.csv.gz",
                   f"{_BASE}/aliexpress/aliexpress_test_sample.csv",
                   "8b9f01ef9697daa4b34f20521dea3871", 9_399),
    )  # fmt: skip
    valid_fraction = 0.1

    def schema(self) -> Schema:
        return Schema(
            tasks=(Task("click", "click"), Task("conversion", "conversion", given="click")),
            features=(
                *(CategoricalFeature(c) for c in ALIEXPRESS_CATEGORICAL),
                *(NumericFeature(c) for c in ALIEXPRESS_NUMERIC),
            ),
            group="search_id",
            name=self.name,
        )

    def build_splits(
        self, data_dir: Path, seed: int | None = None, bad_rows: str = "error"
    ) -> dict[str, pl.DataFrame]:
        self.require_files(Path(data_dir))
        schema = self.schema()
        train, test = (_read(self.locate(Path(data_dir), f.path), schema, bad_rows)
                       for f in self.files)  # fmt: skip
        rng = np.random.default_rng(self._seed(seed))
        n_valid = round(train.height * self.valid_fraction)
        is_valid = np.zeros(train.height, dtype=bool)
        is_valid[rng.permutation(train.height)[:n_valid]] = True
        mask = pl.Series(is_valid)
        return {"train": train.filter(~mask), "valid": train.filter(mask), "test": test}
