"""MovieLens 100K with behaviour sequences (RecBole atomic files).

Local layout ``movielens_100k/ml-100k.{inter,user,item}.gz``: tab-separated files with typed
headers (``user_id:token`` ...). Build:

* ``label = rating >= 4`` (55,375 of 100,000 rows);
* user features ``age, gender, occupation, zip_code`` and item features ``release_year`` and
  ``genre`` (the first genre of the item's space-separated ``class``) are joined in;
* ``hist_item_id``: the user's items rated before this row, most recent last, ``|``-joined
  and truncated to the last 50. "Before" is the order by ``(timestamp, file position)``,
  so ratings with the same timestamp are ordered by their position in the file. Rows
  without history get ``""`` (an empty sequence);
* split by global time (sorted by ``(timestamp, file position)``): first 80 % train, next
  10 % valid, last 10 % test. Rows keep that time order.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from adrank.data.datasets.base import DatasetBuilder, RemoteFile, ordered_split, register_dataset
from adrank.data.readers import DataFormatError, read_raw
from adrank.data.schema import CategoricalFeature, Schema, SequenceFeature

_BASE = (
    "https://raw.githubusercontent.com/RUCAIBox/RecBole/"
    "7b02be5ec80a88310f2d04a27a82adfcbb5dc211/dataset/ml-100k"
)
HISTORY_LEN = 50
USER_FEATURES: tuple[str, ...] = ("age", "gender", "occupation", "zip_code")
ITEM_FEATURES: tuple[str, ...] = ("release_year", "genre")


def history_column(user: str, item: str, max_len: int, name: str, delimiter: str = "|") -> pl.Expr:
    """Expression: per row, the ``item`` values of the same ``user``'s earlier rows (in the
    order of the frame it is evaluated on, which must be chronological), oldest first, at
    most the last ``max_len``, joined by ``delimiter`` (``""`` for no history)."""
    shifted = [pl.col(item).shift(k).over(user) for k in range(max_len, 0, -1)]
    return pl.concat_str(shifted, separator=delimiter, ignore_nulls=True).alias(name)


def _read_atomic(path: Path, bad_rows: str) -> pl.DataFrame:
    """Read a RecBole atomic file; ``name:type`` headers become ``name``."""
    frame = read_raw(path, fmt="tsv", bad_rows=bad_rows).frame
    return frame.rename({c: c.split(":", 1)[0] for c in frame.columns})


def _require(frame: pl.DataFrame, columns: tuple[str, ...], path: Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataFormatError(f"{path}: missing column(s) {missing}; got {frame.columns}")


class MovieLens100KBuilder(DatasetBuilder):
    """MovieLens 100K CTR set (rating >= 4) with a 50-item behaviour history per row."""

    name = "movielens_100k"
    description = (
        "MovieLens 100K: label rating>=4, user/item features and the user's last 50 earlier "
        "items as a sequence; split by global time 80/10/10"
    )
    files = (
        RemoteFile("movielens_100k/ml-100k.inter.gz", f"{_BASE}/ml-100k.inter",
                   "a8a8c3f165aedc53f63b5dc0a0463b14", 1_979_230),
        RemoteFile("movielens_100k/ml-100k.user.gz", f"{_BASE}/ml-100k.user",
                   "ac50ecbab626dbefa83288a3593f92ab", 22_697),
        RemoteFile("movielens_100k/ml-100k.item.gz", f"{_BASE}/ml-100k.item",
                   "fb748e97e64d9a35421d06d7083d0959", 66_632),
    )  # fmt: skip
    fractions = (0.8, 0.1, 0.1)

    def schema(self) -> Schema:
        return Schema(
            labels=("label",),
            features=(
                CategoricalFeature("user_id"),
                CategoricalFeature("item_id"),
                *(CategoricalFeature(c) for c in (*USER_FEATURES, *ITEM_FEATURES)),
                SequenceFeature("hist_item_id", max_len=HISTORY_LEN, share_vocab_with="item_id"),
            ),
            group="user_id",
            time="timestamp",
            name=self.name,
        )

    def build_splits(
        self, data_dir: Path, seed: int | None = None, bad_rows: str = "error"
    ) -> dict[str, pl.DataFrame]:
        data_dir = Path(data_dir)
        self.require_files(data_dir)
        paths = [self.locate(data_dir, f.path) for f in self.files]
        inter, users, items = (_read_atomic(p, bad_rows) for p in paths)
        _require(inter, ("user_id", "item_id", "rating", "timestamp"), paths[0])
        _require(users, ("user_id", *USER_FEATURES), paths[1])
        _require(items, ("item_id", "release_year", "class"), paths[2])
        items = items.select(
            "item_id", "release_year", pl.col("class").str.split(" ").list.first().alias("genre")
        ).unique("item_id", keep="first")
        users = users.select("user_id", *USER_FEATURES).unique("user_id", keep="first")
        frame = (
            inter.with_row_index("_row")
            .with_columns(
                pl.col("rating").cast(pl.Float64),
                pl.col("timestamp").cast(pl.Float64).cast(pl.Int64),
            )
            .sort("timestamp", "_row")
        )
        frame = (
            frame.with_columns(history_column("user_id", "item_id", HISTORY_LEN, "hist_item_id"))
            .join(users, on="user_id", how="left", maintain_order="left")
            .join(items, on="item_id", how="left", maintain_order="left")
            .with_columns((pl.col("rating") >= 4).cast(pl.Int64).alias("label"))
            .select(self.schema().source_columns())
        )
        return ordered_split(frame, self.fractions)


register_dataset(MovieLens100KBuilder())
