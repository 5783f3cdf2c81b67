"""Frappe CTR set rebuilt from the raw Frappe v1.0 usage logs (Baltrunas et al. 2015).

The build follows the NFM/BARS Frappe_x1 recipe (see ``shared/docs/BENCHMARKS.md``):

* every usage log (96,203) is a positive (``label = 1``);
* every log also yields 2 negatives that keep the user and all context fields and take an
  item drawn uniformly and independently from the items that user never used in any log
  (item universe: all items in ``frappe.csv``);
* ``cnt`` (the log's cumulative usage count) is not a feature (``frappe_funnel`` derives
  its second label from it); the 288,609 rows are split at random 7:2:1 into
  202,026 / 57,722 / 28,861 rows.

The split is stratified by label: positives and negatives are shuffled separately and cut
at counts chosen so that each split's positive rate is as close to 1/3 as its size allows
(67,342 / 19,241 / 9,620 positives: exactly 1/3 in train, 0.333339 in valid, 0.333322 in
test). Everything is vectorized NumPy and deterministic per seed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl

from adrank.data.datasets.base import DatasetBuilder, RemoteFile, register_dataset, split_sizes
from adrank.data.readers import DataFormatError, read_raw
from adrank.data.schema import CategoricalFeature, Schema, Task

logger = logging.getLogger(__name__)

_ZIP_URL = (
    "https://raw.githubusercontent.com/irecsys/CARSKit/0a1789fb0804b067cabd223c4b8fd8b4d2f6e881/"
    "context-aware_data_sets/Mobile_Frappe.zip"
)
FRAPPE_FIELDS: tuple[str, ...] = (
    "user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather",
    "country", "city",
)  # fmt: skip
NEGATIVES_PER_LOG = 2


def sample_unused_items(
    user_codes: np.ndarray,
    item_codes: np.ndarray,
    n_items: int,
    per_row: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """For every log row, draw ``per_row`` items uniformly (with replacement, independently)
    from the items its user never used in any row.

    Args:
        user_codes: (N,) int user index per log row, in ``[0, n_users)``.
        item_codes: (N,) int item index per log row, in ``[0, n_items)``.
        n_items: size of the item universe.
        per_row: negatives to draw per row.
        rng: NumPy generator (the only source of randomness).

    Returns:
        (N, per_row) int64 item indices; never an item the row's user used.

    Exact (not rejection) sampling: the unused items of each user are laid out contiguously
    (a CSR-style complement of the user x item "used" matrix) and each draw picks a uniform
    offset into its user's block.
    """
    user_codes = np.asarray(user_codes, dtype=np.int64)
    item_codes = np.asarray(item_codes, dtype=np.int64)
    if user_codes.shape != item_codes.shape or user_codes.ndim != 1:
        raise ValueError(
            f"user_codes and item_codes must be 1-D of equal length, got {user_codes.shape} "
            f"and {item_codes.shape}"
        )
    if user_codes.size and (item_codes.min() < 0 or item_codes.max() >= n_items):
        raise ValueError(
            f"item codes must lie in [0, {n_items}), got {item_codes.min()}..{item_codes.max()}"
        )
    n_users = int(user_codes.max()) + 1 if user_codes.size else 0
    used = np.zeros((n_users, n_items), dtype=bool)
    used[user_codes, item_codes] = True
    n_free = n_items - used.sum(axis=1)  # (n_users,)
    if user_codes.size and (n_free[user_codes] == 0).any():
        bad = int(user_codes[n_free[user_codes] == 0][0])
        raise ValueError(f"user index {bad} used all {n_items} items: no negative to sample")
    free_items = np.flatnonzero(~used.ravel()) % n_items  # grouped by user, ascending item
    offsets = np.concatenate(([0], np.cumsum(n_free)[:-1]))
    draws = rng.integers(0, n_free[user_codes][:, None], size=(user_codes.size, per_row))
    return free_items[offsets[user_codes][:, None] + draws]


def stratified_split_indices(
    labels: np.ndarray, sizes: tuple[int, ...], rng: np.random.Generator
) -> list[np.ndarray]:
    """Random split of row indices into parts of exactly ``sizes`` rows, each with the
    closest achievable share of positives.

    Positive counts per part are the largest-remainder rounding of
    ``size * n_pos / n`` (so they sum to ``n_pos``); positives and negatives are permuted
    separately, cut at those counts, and each part is then shuffled.

    Args:
        labels: (N,) 0/1 labels.
        sizes: part sizes summing to N.
    """
    labels = np.asarray(labels)
    n = labels.size
    if sum(sizes) != n:
        raise ValueError(f"split sizes {sizes} sum to {sum(sizes)}, expected {n} rows")
    pos = np.flatnonzero(labels == 1)
    neg = np.flatnonzero(labels != 1)
    quota = np.asarray(sizes, dtype=np.float64) * pos.size / max(n, 1)
    n_pos = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - n_pos), kind="stable")
    n_pos[order[: pos.size - int(n_pos.sum())]] += 1
    n_neg = np.asarray(sizes, dtype=np.int64) - n_pos
    pos, neg = rng.permutation(pos), rng.permutation(neg)
    pos_cut, neg_cut = np.cumsum(n_pos)[:-1], np.cumsum(n_neg)[:-1]
    return [
        rng.permutation(np.concatenate([p, q]))
        for p, q in zip(np.split(pos, pos_cut), np.split(neg, neg_cut), strict=True)
    ]


@register_dataset
class FrappeBuilder(DatasetBuilder):
    """Frappe CTR set (positives + 2 sampled negatives per log), split 7:2:1."""

    name = "frappe"
    description = (
        "Frappe app-usage logs -> CTR set: each log a positive plus 2 negatives with items the "
        "user never used; 288,609 rows split 7:2:1 (202,026/57,722/28,861), 10 categorical fields"
    )
    files = (
        RemoteFile("frappe/raw/frappe.csv.gz", _ZIP_URL, "5c6d8cd2d0447aa96459b3b4a33cddac",
                   6_313_241, "Mobile_Frappe/frappe/frappe.csv"),
    )  # fmt: skip
    optional_files = (
        RemoteFile("frappe/raw/meta.csv.gz", _ZIP_URL, "8f9bfd0d97a10c0759bff387cb73c37f",
                   6_215_800, "Mobile_Frappe/frappe/meta.csv"),
    )  # fmt: skip
    fractions = (0.7, 0.2, 0.1)
    #: name of the click label column in the returned frames
    label_column: str = "label"
    #: whether :meth:`extra_labels` reads ``cnt`` (``frappe`` itself does not need it)
    uses_count: bool = False

    def schema(self) -> Schema:
        return Schema(
            labels=("label",),
            features=tuple(CategoricalFeature(f) for f in FRAPPE_FIELDS),
            group="user",
            name=self.name,
        )

    def read_logs(
        self, data_dir: Path, bad_rows: str = "error", keep_count: bool = False
    ) -> pl.DataFrame:
        """The raw usage logs: the ten fields as strings, plus ``cnt`` (Int64, the log's
        cumulative usage count) last when ``keep_count``."""
        path = self.locate(data_dir, self.files[0].path)
        frame = read_raw(path, fmt="tsv", bad_rows=bad_rows).frame
        required = (*FRAPPE_FIELDS, "cnt") if keep_count else FRAPPE_FIELDS
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise DataFormatError(
                f"{path}: missing column(s) {missing}; expected a tab-separated header with "
                f"{list(FRAPPE_FIELDS)} (and cnt), got {frame.columns}"
            )
        frame = frame.select(required)
        nulls = frame.select(pl.col("user").is_null().sum(), pl.col("item").is_null().sum())
        if nulls.row(0) != (0, 0):
            raise DataFormatError(f"{path}: {nulls.row(0)} rows with an empty user/item")
        if keep_count:
            cnt = frame.get_column("cnt").cast(pl.Int64, strict=False)
            bad = cnt.is_null() | (cnt < 0)
            if bad.any():
                row = int(bad.arg_true()[0])
                raise DataFormatError(
                    f"{path}: column 'cnt' must be a non-negative integer; data row {row + 1} "
                    f"has {frame.get_column('cnt')[row]!r}"
                )
            frame = frame.with_columns(cnt)
        return frame

    def build_frame(self, logs: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
        """Positives (the logs, in order) followed by their negatives (row ``n + 2i + k`` is
        the ``k``-th negative of log ``i``), with ``label`` first."""
        users = logs.get_column("user").to_numpy().astype(str)
        items = logs.get_column("item").to_numpy().astype(str)
        _, user_codes = np.unique(users, return_inverse=True)
        item_names, item_codes = np.unique(items, return_inverse=True)
        neg = sample_unused_items(user_codes, item_codes, item_names.size, NEGATIVES_PER_LOG, rng)
        n = logs.height
        repeated = logs[np.repeat(np.arange(n), NEGATIVES_PER_LOG)].with_columns(
            pl.Series("item", item_names[neg.ravel()], dtype=pl.String)
        )
        columns = ["label", *FRAPPE_FIELDS]
        return pl.concat(
            [
                logs.with_columns(pl.lit(1, dtype=pl.Int64).alias("label")).select(columns),
                repeated.with_columns(pl.lit(0, dtype=pl.Int64).alias("label")).select(columns),
            ]
        )

    def extra_labels(self, logs: pl.DataFrame) -> dict[str, np.ndarray]:
        """Labels besides ``label`` for the positives (one value per log, in log order);
        every negative gets 0. ``logs`` carries ``cnt`` when :attr:`uses_count`. None for
        ``frappe``."""
        return {}

    def build_splits(
        self, data_dir: Path, seed: int | None = None, bad_rows: str = "error"
    ) -> dict[str, pl.DataFrame]:
        seed = self._seed(seed)
        logs = self.read_logs(Path(data_dir), bad_rows=bad_rows, keep_count=self.uses_count)
        sample_seq, split_seq = np.random.SeedSequence(seed).spawn(2)
        frame = self.build_frame(logs.select(FRAPPE_FIELDS), np.random.default_rng(sample_seq))
        n_neg = frame.height - logs.height
        frame = frame.with_columns(
            pl.Series(name, np.concatenate([values, np.zeros(n_neg, values.dtype)]))
            for name, values in self.extra_labels(logs).items()
        )
        sizes = split_sizes(frame.height, self.fractions)
        labels = frame.get_column("label").to_numpy()
        parts = stratified_split_indices(labels, sizes, np.random.default_rng(split_seq))
        frame = frame.rename({"label": self.label_column}).select(self.schema().source_columns())
        splits = {
            name: frame[idx] for name, idx in zip(("train", "valid", "test"), parts, strict=True)
        }
        logger.info(
            "%s (seed %d): %s rows",
            self.name,
            seed,
            " / ".join(
                f"{k}={v.height} (pos {v.to_series(0).mean():.4f})" for k, v in splits.items()
            ),
        )
        return splits


#: a log with a cumulative usage count above this is ``engaged`` in ``frappe_funnel``
ENGAGED_MIN_COUNT = 50


@register_dataset
class FrappeFunnelBuilder(FrappeBuilder):
    """``frappe`` plus a second label: a click/engagement funnel for multi-task models.

    The rows, their order and the split are exactly ``frappe``'s (same seed, same sampled
    negatives); the label ``label`` is renamed ``click`` and a second label ``engaged`` is
    ``cnt > 50`` on positives (20,140 logs: 7.0 % of the rows, 20.9 % of the clicks) and 0
    on negatives. Tasks: ``click`` (-> ``pctr``) and ``engaged`` given ``click``
    (-> ``pcvr``).

    ``engaged`` is derived from ``cnt``, the log's *cumulative usage count* (how often the
    user used the app in that context), not from a later event: there is no selection
    bias (it is known for every clicked row) and no conversion delay, so ESMM's motivation
    (sample-selection bias and sparse conversions) is only partly present.
    """

    name = "frappe_funnel"
    description = (
        "frappe rows and split (click = frappe's label) + label engaged = usage count cnt > 50 "
        "on clicks (7.0% of rows, 20.9% of clicks); tasks click -> pctr, engaged given click "
        "-> pcvr. engaged is derived from a cumulative usage count: no selection bias or "
        "conversion delay, so ESMM's motivation is only partly present"
    )
    label_column = "click"
    uses_count = True

    def schema(self) -> Schema:
        return Schema(
            tasks=(
                Task("click", "click"),
                Task("engaged", "engaged", given="click"),
            ),
            features=tuple(CategoricalFeature(f) for f in FRAPPE_FIELDS),
            roles={"group": "user"},
            name=self.name,
        )

    def extra_labels(self, logs: pl.DataFrame) -> dict[str, np.ndarray]:
        cnt = logs.get_column("cnt").to_numpy()
        return {"engaged": (cnt > ENGAGED_MIN_COUNT).astype(np.int64)}
