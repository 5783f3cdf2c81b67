"""MovieLens 100K as a two-task rating funnel with behaviour sequences (RecBole atomic files).

Local layout ``movielens_100k/ml-100k.{inter,user,item}.gz``: tab-separated files with typed
headers (``user_id:token`` ...). Definition **version 2** (version 1 had one label and a
global time split):

* labels ``like = rating >= 4`` (55,375 of 100,000 rows) and ``love = rating == 5``
  (21,201 rows); tasks ``like`` (-> ``pctr``) and ``love`` given ``like`` (-> ``pcvr``);
* user features ``age, gender, occupation, zip_code`` and item features ``release_year`` and
  ``genre`` (the first genre of the item's space-separated ``class``) are joined in;
* **per-user chronological split**: each user's ratings are sorted by ``(timestamp, file
  position)``; the last ``n_test`` go to test, the ``n_valid`` before them to valid and the
  rest to train, with ``k = floor(n / 10 + 1/2)`` (10 % rounded half up) for a user with
  ``n`` ratings, ``n_test = max(1, k)`` if ``n >= 2`` (else 0) and ``n_valid = max(1, k)`` if
  ``n >= 3`` (else 0), see :func:`holdout_sizes`. Every user keeps at least one training
  rating, so every valid/test user has a history (all 943 users have >= 20 ratings; the
  split is 79,926 / 10,037 / 10,037 rows, with 36 valid and 48 test rows of items never
  rated in train). Each split's rows are in global time order;
* histories ``hist_item_id`` and the aligned ``hist_genre`` (each history item's genre):
  all of the user's items rated **strictly earlier** (ratings sharing a timestamp are never
  in each other's history), oldest first, ``|``-joined and truncated to the most recent
  50 (the model's ``max_len``). Rows without history get ``""``;
* roles ``group: user_id`` and ``time: timestamp``.

:func:`seen_in_training` flags rows whose user (or item) occurs in the training split, for
warm/cold slices (``slice_metrics(predictions, fm, by=flags)``). With the per-user split
every valid/test user is warm; items can be cold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from adrank.data.datasets.base import DatasetBuilder, RemoteFile, register_dataset
from adrank.data.history_builder import past_events
from adrank.data.readers import DataFormatError, read_raw
from adrank.data.schema import CategoricalFeature, Schema, SequenceFeature, Task

_BASE = (
    "https://raw.githubusercontent.com/RUCAIBox/RecBole/"
    "7b02be5ec80a88310f2d04a27a82adfcbb5dc211/dataset/ml-100k"
)
HISTORY_LEN = 50
USER_FEATURES: tuple[str, ...] = ("age", "gender", "occupation", "zip_code")
ITEM_FEATURES: tuple[str, ...] = ("release_year", "genre")
UNKNOWN_GENRE = "unknown"
HOLDOUT_FRACTION = 0.1


def history_column(user: str, item: str, max_len: int, name: str, delimiter: str = "|") -> pl.Expr:
    """Expression: per row, the ``item`` values of the same ``user``'s earlier rows (in the
    order of the frame it is evaluated on, which must be chronological), oldest first, at
    most the last ``max_len``, joined by ``delimiter`` (``""`` for no history). Rows are
    "earlier" by frame position; see :func:`strict_histories` for histories that keep
    rows with equal timestamps apart."""
    shifted = [pl.col(item).shift(k).over(user) for k in range(max_len, 0, -1)]
    return pl.concat_str(shifted, separator=delimiter, ignore_nulls=True).alias(name)


def strict_histories(
    users: np.ndarray,
    times: np.ndarray,
    sequences: dict[str, np.ndarray],
    max_len: int,
    delimiter: str = "|",
) -> dict[str, list[str]]:
    """Per row, the values of each sequence at the same user's rows with a strictly smaller
    time, oldest first, the most recent ``max_len`` kept, joined by ``delimiter``
    (:func:`adrank.data.history_builder.past_events`; the rows sorted by ``(user, time)``)."""
    return past_events(users, times, sequences, max_len, delimiter)


def holdout_sizes(n: np.ndarray, fraction: float = HOLDOUT_FRACTION) -> tuple[np.ndarray, ...]:
    """``(n_valid, n_test)`` per user with ``n`` ratings: ``k = floor(fraction * n + 1/2)``;
    ``n_test = max(1, k)`` when ``n >= 2``, ``n_valid = max(1, k)`` when ``n >= 3`` (else 0),
    capped so that at least one rating stays in train."""
    n = np.asarray(n, dtype=np.int64)
    k = np.maximum(1, np.floor(fraction * n + 0.5).astype(np.int64))
    n_test = np.where(n >= 2, np.minimum(k, n - 1), 0)
    n_valid = np.where(n >= 3, np.minimum(k, n - 1 - n_test), 0)
    return n_valid, n_test


def per_user_split(frame: pl.DataFrame, user: str, order: list[str]) -> pl.Series:
    """The split (``train``/``valid``/``test``) of each row of ``frame`` under the per-user
    chronological rule of :func:`holdout_sizes`, rows ordered per user by ``order``."""
    ranked = frame.select(
        pl.int_range(pl.len()).alias("_pos"), pl.col(user), *(pl.col(c) for c in order)
    ).sort(user, *order)
    users = ranked.get_column(user).to_numpy()
    n_rows = len(users)
    first = np.ones(n_rows, dtype=bool)
    first[1:] = users[1:] != users[:-1]
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, n_rows))
    rank = np.arange(n_rows) - np.repeat(starts, counts)
    n_valid, n_test = holdout_sizes(counts)
    from_end = np.repeat(counts, counts) - rank  # 1 for the user's last rating
    split = np.where(
        from_end <= np.repeat(n_test, counts),
        "test",
        np.where(from_end <= np.repeat(n_test + n_valid, counts), "valid", "train"),
    )
    out = np.empty(n_rows, dtype=object)
    out[ranked.get_column("_pos").to_numpy()] = split
    return pl.Series("split", out, dtype=pl.String)


def seen_in_training(
    train: pl.DataFrame, rows: pl.DataFrame, column: str, labels: tuple[str, str] = ("warm", "cold")
) -> np.ndarray:
    """(N,) ``"warm"``/``"cold"`` per row of ``rows``: whether its ``column`` value occurs in
    the ``train`` split. Pass the result as ``by=`` to
    :func:`adrank.train.evaluation.slice_metrics` (the rows must be in the scored order)."""
    for name, frame in (("train", train), ("rows", rows)):
        if column not in frame.columns:
            raise KeyError(f"column {column!r} is not in the {name} frame: {frame.columns}")
    seen = rows.get_column(column).is_in(train.get_column(column).unique().implode()).to_numpy()
    return np.where(seen, labels[0], labels[1])


def _read_atomic(path: Path, bad_rows: str) -> pl.DataFrame:
    """Read a RecBole atomic file; ``name:type`` headers become ``name``."""
    frame = read_raw(path, fmt="tsv", bad_rows=bad_rows).frame
    return frame.rename({c: c.split(":", 1)[0] for c in frame.columns})


def _require(frame: pl.DataFrame, columns: tuple[str, ...], path: Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataFormatError(f"{path}: missing column(s) {missing}; got {frame.columns}")
    nulls = [c for c in columns[:2] if frame.get_column(c).null_count()]
    if nulls:
        raise DataFormatError(f"{path}: empty values in key column(s) {nulls}")


@register_dataset
class MovieLens100KBuilder(DatasetBuilder):
    """MovieLens 100K: like/love funnel, per-user chronological split, aligned item and
    genre histories (definition version 2)."""

    name = "movielens_100k"
    version = 2
    description = (
        "MovieLens 100K (v2): labels like (rating>=4) and love (rating=5); tasks like -> pctr, "
        "love given like -> pcvr; per-user chronological split (each user's last 10% test, "
        "the 10% before valid); histories of strictly earlier items + genres (last 50)"
    )
    files = (
        RemoteFile("movielens_100k/ml-100k.inter.gz", f"{_BASE}/ml-100k.inter",
                   "a8a8c3f165aedc53f63b5dc0a0463b14", 1_979_230),
        RemoteFile("movielens_100k/ml-100k.user.gz", f"{_BASE}/ml-100k.user",
                   "ac50ecbab626dbefa83288a3593f92ab", 22_697),
        RemoteFile("movielens_100k/ml-100k.item.gz", f"{_BASE}/ml-100k.item",
                   "fb748e97e64d9a35421d06d7083d0959", 66_632),
    )  # fmt: skip

    def schema(self) -> Schema:
        return Schema(
            tasks=(Task("like", "like"), Task("love", "love", given="like")),
            features=(
                CategoricalFeature("user_id"),
                CategoricalFeature("item_id"),
                *(CategoricalFeature(c) for c in (*USER_FEATURES, *ITEM_FEATURES)),
                SequenceFeature(
                    "hist_item_id", max_len=HISTORY_LEN, share_vocab_with="item_id",
                    target="item_id",
                ),
                SequenceFeature(
                    "hist_genre", max_len=HISTORY_LEN, share_vocab_with="genre",
                    aligned_with="hist_item_id",
                ),
            ),
            roles={"group": "user_id", "time": "timestamp"},
            name=self.name,
        )  # fmt: skip

    def read(self, data_dir: Path, bad_rows: str = "error") -> pl.DataFrame:
        """All 100,000 ratings with labels, user/item features and histories, sorted by
        ``(user_id, timestamp, file position)``, plus ``rating`` and ``_row``."""
        data_dir = Path(data_dir)
        self.require_files(data_dir)
        paths = [self.locate(data_dir, f.path) for f in self.files]
        inter, users, items = (_read_atomic(p, bad_rows) for p in paths)
        _require(inter, ("user_id", "item_id", "rating", "timestamp"), paths[0])
        _require(users, ("user_id", *USER_FEATURES), paths[1])
        _require(items, ("item_id", "release_year", "class"), paths[2])
        items = items.select(
            "item_id",
            "release_year",
            pl.col("class").str.split(" ").list.first().fill_null(UNKNOWN_GENRE).alias("genre"),
        ).unique("item_id", keep="first")
        users = users.select("user_id", *USER_FEATURES).unique("user_id", keep="first")
        frame = (
            inter.with_row_index("_row")
            .with_columns(
                pl.col("rating").cast(pl.Float64),
                pl.col("timestamp").cast(pl.Float64).cast(pl.Int64),
            )
            .join(users, on="user_id", how="left", maintain_order="left")
            .join(items, on="item_id", how="left", maintain_order="left")
            .with_columns(pl.col("genre").fill_null(UNKNOWN_GENRE))
            .sort("user_id", "timestamp", "_row")
        )
        hist = strict_histories(
            frame.get_column("user_id").to_numpy(),
            frame.get_column("timestamp").to_numpy(),
            {
                "hist_item_id": frame.get_column("item_id").to_numpy(),
                "hist_genre": frame.get_column("genre").to_numpy(),
            },
            HISTORY_LEN,
        )
        return frame.with_columns(
            (pl.col("rating") >= 4).cast(pl.Int64).alias("like"),
            (pl.col("rating") == 5).cast(pl.Int64).alias("love"),
            *(pl.Series(k, v, dtype=pl.String) for k, v in hist.items()),
        )

    def build_splits(
        self, data_dir: Path, seed: int | None = None, bad_rows: str = "error"
    ) -> dict[str, pl.DataFrame]:
        frame = self.read(data_dir, bad_rows)
        split = per_user_split(frame, "user_id", ["timestamp", "_row"])
        columns = self.schema().source_columns()
        frame = frame.with_columns(split).sort("timestamp", "_row")
        return {
            name: frame.filter(pl.col("split") == name).select(columns)
            for name in ("train", "valid", "test")
        }
