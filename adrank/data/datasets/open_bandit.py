"""Open Bandit Dataset, small version (ZOZOTOWN; Saito et al. 2020): clicks with position.

Local layout ``open_bandit_position/{random,bts}_{men,women}.csv.gz`` (10,000 impressions
each) plus ``{policy}_{campaign}_item_context.csv.gz``. Build:

* label ``click``; features ``item_id`` (qualified by campaign, e.g. ``"men:14"``, because
  the men and women campaigns number their items independently; since definition version 3
  the rows carry the log's raw ``item_id`` and the schema declares the qualification as a
  ``cross`` transform of ``campaign`` and ``item_id``, so serving takes the raw id too),
  ``position`` (1-3),
  ``user_feature_0..3``, ``campaign`` (``men``/``women``), ``policy`` (``random``/``bts``),
  and the item context ``item_feature_0`` (numeric, standardized) and ``item_feature_1..3``
  (categorical);
* ``timestamp`` (Unix seconds, float) is the schema's time column;
* roles (definition version 2): ``propensity_score`` (the logging policy's probability of
  the shown item, for off-policy evaluation) is the ``propensity`` role and ``position`` the
  ``position`` role, so both reach every batch and prediction; neither is a propensity of
  *examination*. ``position`` also stays a model feature (the common position-as-a-feature
  baseline); ``propensity_score`` is never a feature;
* the 40,000 rows are sorted by time (ties keep file order) and split 8:1:1
  (32,000 / 4,000 / 4,000). The user-item affinity columns are dropped.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from adrank.data.datasets.base import (
    DatasetBuilder,
    RemoteFile,
    find_file,
    ordered_split,
    register_dataset,
)
from adrank.data.readers import DataFormatError, read_raw
from adrank.data.schema import CategoricalFeature, NumericFeature, Schema
from adrank.data.transforms import Cross

_BASE = (
    "https://raw.githubusercontent.com/st-tech/zr-obp/8cbd5fa4558b7ad2ba4781546d6604e4cc3e07c4/"
    "obp/dataset/obd"
)
POLICIES: tuple[str, ...] = ("random", "bts")
CAMPAIGNS: tuple[str, ...] = ("men", "women")
# the "all" campaign (80 items, men's and women's together) is not part of the built dataset;
# :func:`read_log` reads it for off-policy evaluation (the files obp's README evaluates)
LOG_CAMPAIGNS: tuple[str, ...] = ("men", "women", "all")
USER_FEATURES: tuple[str, ...] = tuple(f"user_feature_{i}" for i in range(4))
ITEM_CATEGORICAL: tuple[str, ...] = tuple(f"item_feature_{i}" for i in range(1, 4))
# (policy, campaign) -> (md5, size) of the log and of the item context, uncompressed
_CHECKSUMS: dict[tuple[str, str], tuple[str, int, str, int]] = {
    ("random", "men"): ("989aae03b686ebc1b40c6a1ecd25f446", 3_336_811,
                        "a4a72231fdb7cd1f60d0714dc1af7da8", 4_287),
    ("random", "women"): ("cdc27e94ea31cb4f399371430fd084b4", 3_817_771,
                          "6832d2ed29a2da3c980bf817f60a7595", 5_792),
    ("bts", "men"): ("20b2fe8720af486ad2255ad2c4399560", 3_240_432,
                     "48f6ba39605c0c9381eaa1ec325169f2", 4_287),
    ("bts", "women"): ("c2d193828c76d736f7a8117f97a054e3", 3_722_697,
                       "42cf9b63b38636b9d15bed55cff6202f", 5_792),
}  # fmt: skip


def _files() -> tuple[RemoteFile, ...]:
    out = []
    for (policy, campaign), (md5, size, ctx_md5, ctx_size) in _CHECKSUMS.items():
        url = f"{_BASE}/{policy}/{campaign}"
        out.append(
            RemoteFile(
                f"open_bandit_position/{policy}_{campaign}.csv.gz",
                f"{url}/{campaign}.csv",
                md5,
                size,
            )
        )
        out.append(RemoteFile(f"open_bandit_position/{policy}_{campaign}_item_context.csv.gz",
                              f"{url}/item_context.csv", ctx_md5, ctx_size))  # fmt: skip
    return tuple(out)


@register_dataset
class OpenBanditBuilder(DatasetBuilder):
    """Open Bandit small: 4 x 10,000 impressions with position, click and propensity."""

    name = "open_bandit"
    description = (
        "Open Bandit Dataset (small): 40,000 ZOZOTOWN impressions, click label, display "
        "position 1-3, random/BTS logging policies with propensities; split by time 8:1:1"
    )
    files = _files()
    version = 3  # raw item_id out, its campaign qualification a declared transform
    fractions = (0.8, 0.1, 0.1)

    def schema(self) -> Schema:
        return Schema(
            labels=("click",),
            features=(
                CategoricalFeature("item_id"),
                CategoricalFeature("position"),
                *(CategoricalFeature(c) for c in USER_FEATURES),
                CategoricalFeature("campaign"),
                CategoricalFeature("policy"),
                NumericFeature("item_feature_0", normalizer="standard"),
                *(CategoricalFeature(c) for c in ITEM_CATEGORICAL),
            ),
            time="timestamp",
            roles={"propensity": "propensity_score", "position": "position"},
            transforms=(Cross(name="item_id", input=("campaign", "item_id"), separator=":"),),
            name=self.name,
        )

    def build_splits(
        self, data_dir: Path, seed: int | None = None, bad_rows: str = "error"
    ) -> dict[str, pl.DataFrame]:
        data_dir = Path(data_dir)
        self.require_files(data_dir)
        parts = [
            self._read_part(data_dir, policy, campaign, bad_rows) for policy, campaign in _CHECKSUMS
        ]
        frame = (
            pl.concat(parts)
            .with_row_index("_row")
            .sort("timestamp", "_row")
            .select(*self.schema().source_columns())
        )
        return ordered_split(frame, self.fractions)

    def _read_part(self, data_dir: Path, policy: str, campaign: str, bad_rows: str) -> pl.DataFrame:
        stem = f"open_bandit_position/{policy}_{campaign}"
        log_path = self.locate(data_dir, f"{stem}.csv.gz")
        ctx_path = self.locate(data_dir, f"{stem}_item_context.csv.gz")
        log = read_raw(log_path, bad_rows=bad_rows).frame
        ctx = read_raw(ctx_path, bad_rows=bad_rows).frame
        needed = ("timestamp", "item_id", "position", "click", "propensity_score", *USER_FEATURES)
        for path, frame, cols in (
            (log_path, log, needed),
            (ctx_path, ctx, ("item_id", "item_feature_0", *ITEM_CATEGORICAL)),
        ):
            missing = [c for c in cols if c not in frame.columns]
            if missing:
                raise DataFormatError(f"{path}: missing column(s) {missing}; got {frame.columns}")
        ctx = ctx.select(
            "item_id", pl.col("item_feature_0").cast(pl.Float64), *ITEM_CATEGORICAL
        ).unique("item_id", keep="first")
        stamp = pl.col("timestamp").str.to_datetime(time_zone="UTC", strict=False)
        out = log.join(ctx, on="item_id", how="left", maintain_order="left").select(
            pl.col("click").cast(pl.Int64),
            "item_id",
            "position",
            *USER_FEATURES,
            pl.lit(campaign).alias("campaign"),
            pl.lit(policy).alias("policy"),
            "item_feature_0",
            *ITEM_CATEGORICAL,
            (stamp.dt.epoch("us").cast(pl.Float64) / 1e6).alias("timestamp"),
            pl.col("propensity_score").cast(pl.Float64),
        )
        bad = out.get_column("timestamp").is_null()
        if bad.any():
            idx = int(bad.arg_max())  # type: ignore[arg-type]
            raise DataFormatError(
                f"{log_path}: column timestamp has {log['timestamp'][idx]!r} at row {idx}, "
                "expected a date-time like '2019-11-24 00:03:13.442536+00:00'"
            )
        return out


def read_log(
    data_dir: Path | str, policy: str, campaign: str, bad_rows: str = "error"
) -> pl.DataFrame:
    """One Open Bandit log in file order, joined with its item context: ``click``,
    ``item_id``, ``position`` (1-3), ``user_feature_0..3``, ``campaign``, ``policy``, the
    item features, ``timestamp`` (Unix seconds) and ``propensity_score``. ``campaign`` may
    also be ``all`` (read from ``{policy}_all.csv.gz``), which the built dataset leaves out."""
    if policy not in POLICIES:
        raise ValueError(f"unknown Open Bandit policy {policy!r}; expected one of {POLICIES}")
    if campaign not in LOG_CAMPAIGNS:
        raise ValueError(
            f"unknown Open Bandit campaign {campaign!r}; expected one of {LOG_CAMPAIGNS}"
        )
    for name in (f"{policy}_{campaign}.csv.gz", f"{policy}_{campaign}_item_context.csv.gz"):
        if find_file(Path(data_dir), f"open_bandit_position/{name}") is None:
            raise FileNotFoundError(
                f"no open_bandit_position/{name} under {data_dir} (point --data-dir or "
                "$ADRANK_DATA_DIR at the folder that holds open_bandit_position/)"
            )
    return OpenBanditBuilder()._read_part(Path(data_dir), policy, campaign, bad_rows)
