"""Avazu CTR Prediction (Kaggle 2014) rows, raw 24-column CSV.

Local layout ``avazu/{train,dev,test}.csv.gz`` (8,087 / 480 / 432 rows, used as train /
valid / test); only ``train`` has a header line. ``id`` is dropped, ``click`` is the label,
``hour`` (``YYMMDDHH``) gives two categorical features ``hour_of_day`` (``"00"`` ..
``"23"``) and ``weekday`` (``"1"`` = Monday .. ``"7"`` = Sunday); every other column is a
categorical string. ``banner_pos`` is the ad's display position.

Since definition **version 2** the builder returns the raw ``hour`` column (checked to be
``YYMMDDHH``) and the schema declares ``hour_of_day`` and ``weekday`` as transforms
(``substring``, ``datetime_part``), so the processor derives them in training and serving
alike: ``adrank predict`` and the server take raw Avazu rows.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from adrank.data.datasets.base import SPLITS, DatasetBuilder, RemoteFile, register_dataset
from adrank.data.readers import DataFormatError, read_raw
from adrank.data.schema import CategoricalFeature, Schema
from adrank.data.transforms import DatetimePart, Substring

_BASE = (
    "https://raw.githubusercontent.com/Lapis-Hong/Wide-ResDNN/"
    "9889f939deb904a35692e2efdc6ab4f743a7df71/data/avazu"
)
RAW_COLUMNS: tuple[str, ...] = (
    "id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category",
    "app_id", "app_domain", "app_category", "device_id", "device_ip", "device_model",
    "device_type", "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21",
)  # fmt: skip
FEATURES: tuple[str, ...] = (*RAW_COLUMNS[3:], "hour_of_day", "weekday")
#: ``hour`` (YYMMDDHH) -> hour of day and weekday, applied by the processor
TRANSFORMS = (
    Substring(name="hour_of_day", input="hour", start=6, length=2),
    DatetimePart(name="weekday", input="hour", format="%y%m%d%H", part="weekday"),
)


@register_dataset
class AvazuBuilder(DatasetBuilder):
    """Avazu sample: 21 raw categorical fields + hour_of_day + weekday."""

    name = "avazu"
    version = 2  # raw hour out, hour_of_day/weekday declared as schema transforms
    description = (
        "Avazu Kaggle rows (8,087/480/432) from one hour, 23 categorical fields incl. "
        "banner_pos; for loader/integration tests, not leaderboard numbers"
    )
    files = (
        RemoteFile("avazu/train.csv.gz", f"{_BASE}/train.csv",
                   "25386732d33e499fe764da758d3a88fc", 1_253_029),
        RemoteFile("avazu/dev.csv.gz", f"{_BASE}/dev.csv",
                   "df8868a71dfa1d05900a8514c9b7ea26", 74_359),
        RemoteFile("avazu/test.csv.gz", f"{_BASE}/test.csv",
                   "caa237ee23dc7dad498d544693909b4a", 66_976),
    )  # fmt: skip

    def schema(self) -> Schema:
        return Schema(
            labels=("click",),
            features=tuple(CategoricalFeature(c) for c in FEATURES),
            transforms=TRANSFORMS,
            name=self.name,
        )

    def build_splits(
        self, data_dir: Path, seed: int | None = None, bad_rows: str = "error"
    ) -> dict[str, pl.DataFrame]:
        self.require_files(Path(data_dir))
        out = {}
        for split, remote in zip(SPLITS, self.files, strict=True):
            path = self.locate(Path(data_dir), remote.path)
            with_header = split == "train"
            frame = read_raw(
                path,
                has_header=with_header,
                column_names=None if with_header else list(RAW_COLUMNS),
                bad_rows=bad_rows,
            ).frame
            missing = [c for c in RAW_COLUMNS if c not in frame.columns]
            if missing:
                raise DataFormatError(f"{path}: missing column(s) {missing}; got {frame.columns}")
            _check_hours(frame, path)
            frame = frame.with_columns(pl.col("click").cast(pl.Int64))
            out[split] = frame.select(self.schema().source_columns())
        return out


def _check_hours(frame: pl.DataFrame, path: Path) -> None:
    """Every non-null ``hour`` is ``YYMMDDHH`` (a real date, hour 00-23)."""
    hour = pl.col("hour")
    day = hour.str.slice(0, 6).str.strptime(pl.Date, "%y%m%d", strict=False)
    hour_of_day = hour.str.slice(6, 2)
    valid = (
        (hour.str.len_chars() == 8)
        & hour_of_day.is_in([f"{h:02d}" for h in range(24)])
        & day.is_not_null()
    )
    bad = frame.select((hour.is_not_null() & ~valid).fill_null(False)).to_series()
    if bad.any():
        idx = int(bad.arg_max())  # type: ignore[arg-type]
        raise DataFormatError(
            f"{path}: column hour has {frame['hour'][idx]!r} at row {idx}, expected YYMMDDHH"
        )
