"""BARS ``*_x1`` benchmark splits: Frappe_x1 and MovielensLatest_x1.

These fixed splits are only hosted outside GitHub (BARS / reczoo), so there is no automatic
download: put the files under the data directory in either layout

* BARS CSV: ``<name>/train.csv``, ``valid.csv``, ``test.csv`` (header ``label`` + fields;
  ``.csv.gz`` works too);
* NFM libFM (the same rows, as published with NFM/AFN): ``frappe/nfm_split/frappe.
  {train,validation,test}.libfm[.gz]`` or ``movielenslatest/ml-tag.{train,validation,test}.
  libfm[.gz]``. Fields become the global feature index strings of the libFM file.

If all three BARS CSV files are present they are used; otherwise the libFM layout is
expected, and a missing file raises :class:`DatasetUnavailableError` naming it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from adrank.data.datasets.base import (
    SPLITS,
    DatasetBuilder,
    RemoteFile,
    find_file,
    register_dataset,
)
from adrank.data.datasets.frappe import FRAPPE_FIELDS
from adrank.data.readers import DataFormatError, read_raw
from adrank.data.schema import CategoricalFeature, Schema

logger = logging.getLogger(__name__)


class BarsX1Builder(DatasetBuilder):
    """A BARS x1 split read from the BARS CSV layout or the NFM libFM layout."""

    fields: tuple[str, ...] = ()
    group_field: str | None = None
    #: NFM libFM files in split order (train, validation, test)
    libfm_files: tuple[RemoteFile, ...] = ()

    @property
    def csv_files(self) -> tuple[RemoteFile, ...]:
        return tuple(RemoteFile(f"{self.name}/{split}.csv", "", "") for split in SPLITS)

    def expected_files(self, data_dir: Path) -> tuple[RemoteFile, ...]:
        csv_present = [find_file(Path(data_dir), f.path) is not None for f in self.csv_files]
        libfm_present = [find_file(Path(data_dir), f.path) is not None for f in self.libfm_files]
        if all(csv_present) or (any(csv_present) and not any(libfm_present)):
            return self.csv_files
        return self.libfm_files

    def schema(self) -> Schema:
        return Schema(
            labels=("label",),
            features=tuple(CategoricalFeature(f) for f in self.fields),
            group=self.group_field,
            name=self.name,
        )

    def build_splits(
        self, data_dir: Path, seed: int | None = None, bad_rows: str = "error"
    ) -> dict[str, pl.DataFrame]:
        data_dir = Path(data_dir)
        self.require_files(data_dir)
        layout = self.expected_files(data_dir)
        is_csv = layout == self.csv_files
        out = {}
        for split, remote in zip(SPLITS, layout, strict=True):
            path = self.locate(data_dir, remote.path)
            if is_csv:
                frame = read_raw(path, bad_rows=bad_rows).frame
            else:
                frame = read_raw(
                    path, fmt="libfm", column_names=["label", *self.fields], bad_rows=bad_rows
                ).frame
            out[split] = self._finish(frame, path)
        logger.info(
            "%s (%s layout): %s",
            self.name,
            "BARS CSV" if is_csv else "libFM",
            " / ".join(f"{k}={v.height}" for k, v in out.items()),
        )
        return out

    def _finish(self, frame: pl.DataFrame, path: Path) -> pl.DataFrame:
        columns = ["label", *self.fields]
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise DataFormatError(
                f"{path}: missing column(s) {missing}; expected {columns}, got {frame.columns}"
            )
        return frame.select(
            pl.col("label").cast(pl.Float64, strict=False).cast(pl.Int64).alias("label"),
            *(pl.col(f).cast(pl.String) for f in self.fields),
        )


def _help(name: str, libfm_dir: str, stem: str) -> str:
    return (
        f"{name} has no automatic download (BARS hosts it outside GitHub). Either put the BARS "
        f"CSV files at {name}/{{train,valid,test}}.csv (see https://github.com/reczoo/BARS), or "
        f"the NFM libFM files at {libfm_dir}/{stem}.{{train,validation,test}}.libfm[.gz] "
        "(see https://github.com/hexiangnan/neural_factorization_machine, folder data/)."
    )


@register_dataset
class FrappeX1Builder(BarsX1Builder):
    name = "frappe_x1"
    description = (
        "BARS Frappe_x1 fixed split (202,027 / 57,722 / 28,860 rows), 10 categorical fields"
    )
    fields = FRAPPE_FIELDS
    group_field = "user"
    libfm_files = (
        RemoteFile("frappe/nfm_split/frappe.train.libfm.gz", "", ""),
        RemoteFile("frappe/nfm_split/frappe.validation.libfm.gz", "",
                   "4b8d8e462c470ff16a580bcaa9598613", 4_163_044),
        RemoteFile("frappe/nfm_split/frappe.test.libfm.gz", "",
                   "56ef29ef57467174fdff4ba1a117daeb", 2_081_389),
    )  # fmt: skip
    files = libfm_files
    help_text = _help("frappe_x1", "frappe/nfm_split", "frappe")


@register_dataset
class MovielensLatestX1Builder(BarsX1Builder):
    name = "movielenslatest_x1"
    description = "BARS MovielensLatest_x1 / NFM ml-tag split (2,006,859 rows): user, item, tag"
    fields = ("user_id", "item_id", "tag_id")
    group_field = "user_id"
    libfm_files = tuple(
        RemoteFile(f"movielenslatest/ml-tag.{split}.libfm.gz", "", "")
        for split in ("train", "validation", "test")
    )
    files = libfm_files
    help_text = _help("movielenslatest_x1", "movielenslatest", "ml-tag")
