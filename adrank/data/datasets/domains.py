"""Multi-domain scenario splits on the rows and splits of ``frappe`` and ``movielens_100k``.

Each builder declares a ``domain`` role (see :data:`adrank.data.schema.ROLES`) on a column
that is **also a categorical feature**: multi-domain models (STAR, PEPNet, AdaptDHM) route
by that feature's ids (:func:`adrank.nn.domain.domain_field`), pooled single-domain models
see it as one more feature, and per-domain metrics slice by the role
(``slice_metrics(predictions, fm, by="domain")``, ``adrank evaluate --slice-by domain``).

* ``frappe_domains``: ``frappe`` (same seed, rows, sampled negatives and split) with the
  ``homework`` context as the domain: ``home`` / ``work`` / ``unknown`` (16.4 % / 4.9 % /
  78.7 % of the logs). Its limits: every domain's click rate is exactly 1/3 by construction
  (each log's two sampled negatives keep the log's context, ``homework`` included), so the
  domains differ only in *which* items are clicked, never in how often; and ``unknown``
  is missing data, not a scenario.
* ``movielens_100k_domains``: ``movielens_100k`` v2 (same rows, per-user chronological
  split) with the user's age band as the domain: ``under_25`` / ``25_to_34`` / ``35_plus``
  (as Scenario-Wise-Rec does on MovieLens-1M; about 27k / 35k / 38k rows here), one task
  ``like`` (``rating >= 4``). The behaviour histories are left out (no model here reads
  them).
* ``movielens_100k_domains_thin``: the same, with the **training** rows of domain
  ``under_25`` thinned to 10 % (``floor(0.1 n)`` rows drawn without replacement by
  ``numpy.random.default_rng(THIN_SEED)``, kept in their order); valid and test are
  untouched. This fixed variant is the small-domain case multi-domain models are for.
* ``movielens_100k_cross``: a **cross-domain** split of ``movielens_100k`` v2 (same rows and
  split, task ``like``): a movie's domain is the group of its first listed genre,
  ``target`` (:data:`TARGET_GENRES`: action, adventure, crime, thriller, ...) or ``source``
  (drama, comedy, romance, children's, ...); the target's **training** rows are thinned to
  10 % as above (seed 17). The histories ``hist_item_id`` / ``hist_genre`` hold only the
  user's strictly earlier **source-domain** items (the most recent 50): what a
  cross-domain model carries to the target domain.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from adrank.data.datasets.base import register_dataset
from adrank.data.datasets.frappe import FRAPPE_FIELDS, FrappeBuilder
from adrank.data.datasets.movielens import (
    HISTORY_LEN,
    ITEM_FEATURES,
    USER_FEATURES,
    MovieLens100KBuilder,
)
from adrank.data.schema import CategoricalFeature, Schema, SequenceFeature, Task

#: MovieLens age bands: (name, lowest age in the band), ascending (no name reads as a number
#: in YAML, so ``--set train.domain_filter=25_to_34`` stays a string)
AGE_BANDS: tuple[tuple[str, int], ...] = (("under_25", 0), ("25_to_34", 25), ("35_plus", 35))
#: the domain whose training rows ``movielens_100k_domains_thin`` keeps at THIN_FRACTION
THIN_DOMAIN = "under_25"
THIN_FRACTION = 0.1
THIN_SEED = 17


def age_band(age: pl.Expr) -> pl.Expr:
    """The age band (a name of :data:`AGE_BANDS`) of an integer age expression."""
    ages = age.cast(pl.Int64, strict=False)
    out = pl.lit(AGE_BANDS[0][0])
    for name, low in AGE_BANDS[1:]:
        out = pl.when(ages >= low).then(pl.lit(name)).otherwise(out)
    return out.alias("age_band")


def thin_domain(
    frame: pl.DataFrame, column: str, domain: str, fraction: float, seed: int
) -> pl.DataFrame:
    """``frame`` with only ``floor(fraction * n)`` of its ``n`` rows whose ``column`` is
    ``domain`` (drawn without replacement by ``default_rng(seed)``); order is kept."""
    if column not in frame.columns:
        raise KeyError(f"column {column!r} is not in the frame: {frame.columns}")
    is_domain = frame.get_column(column).cast(pl.String).eq(domain).fill_null(False).to_numpy()
    rows = np.flatnonzero(is_domain)
    keep = np.ones(frame.height, dtype=bool)
    drop = np.random.default_rng(seed).permutation(rows)[int(np.floor(fraction * rows.size)) :]
    keep[drop] = False
    return frame.filter(pl.Series(keep))


@register_dataset
class FrappeDomainsBuilder(FrappeBuilder):
    """``frappe`` with the ``homework`` context (home/work/unknown) as the domain role."""

    name = "frappe_domains"
    description = (
        "frappe rows and split; domain role = homework context (home 16.4% / work 4.9% / "
        "unknown 78.7% of logs), also kept as a feature. Limits: every domain's click rate is "
        "1/3 by construction (negatives keep the log's context); 'unknown' is missing data"
    )

    def schema(self) -> Schema:
        return Schema(
            labels=("label",),
            features=tuple(CategoricalFeature(f) for f in FRAPPE_FIELDS),
            roles={"group": "user", "domain": "homework"},
            name=self.name,
        )


@register_dataset
class MovieLens100KDomainsBuilder(MovieLens100KBuilder):
    """``movielens_100k`` v2 rows and split, task ``like``, age band as the domain role."""

    name = "movielens_100k_domains"
    #: version 2: the middle band is ``25_to_34`` (version 1's ``25_34`` reads as 2534 in YAML)
    version = 2
    description = (
        "movielens_100k v2 rows and per-user chronological split, task like (rating>=4); "
        "domain role = age band under_25 / 25_to_34 / 35_plus (also a feature); no histories"
    )
    #: (domain, fraction, seed) of the thinned training rows, or None
    thin: tuple[str, float, int] | None = None

    def schema(self) -> Schema:
        return Schema(
            tasks=(Task("like", "like"),),
            features=tuple(
                CategoricalFeature(c)
                for c in ("user_id", "item_id", *USER_FEATURES, *ITEM_FEATURES, "age_band")
            ),
            roles={"group": "user_id", "time": "timestamp", "domain": "age_band"},
            name=self.name,
        )

    def read(self, data_dir: Path, bad_rows: str = "error") -> pl.DataFrame:
        return super().read(data_dir, bad_rows).with_columns(age_band(pl.col("age")))

    def build_splits(
        self, data_dir: Path, seed: int | None = None, bad_rows: str = "error"
    ) -> dict[str, pl.DataFrame]:
        splits = super().build_splits(data_dir, seed, bad_rows)
        if self.thin is not None:
            domain, fraction, thin_seed = self.thin
            splits["train"] = thin_domain(splits["train"], "age_band", domain, fraction, thin_seed)
        return splits


@register_dataset
class MovieLens100KDomainsThinBuilder(MovieLens100KDomainsBuilder):
    """``movielens_100k_domains`` with domain ``under_25``'s training rows kept at 10 %."""

    name = "movielens_100k_domains_thin"
    description = (
        "movielens_100k_domains with the training rows of domain under_25 thinned to 10% "
        f"(fixed: seed {THIN_SEED}); valid/test untouched: the small-domain case"
    )
    thin = (THIN_DOMAIN, THIN_FRACTION, THIN_SEED)


#: first genres whose movies form the cross-domain ``target`` group; every other is ``source``
TARGET_GENRES: frozenset[str] = frozenset(
    {"Action", "Adventure", "Crime", "Film-Noir", "Horror", "Mystery", "Sci-Fi", "Thriller",
     "War", "Western"}
)  # fmt: skip


def source_histories(
    users: np.ndarray, times: np.ndarray, is_source: np.ndarray, values: dict[str, np.ndarray],
    max_len: int, delimiter: str = "|",
) -> dict[str, list[str]]:  # fmt: skip
    """Per row, the ``values`` of the same user's **source** rows with a strictly smaller
    time, oldest first, the most recent ``max_len``, joined by ``delimiter``. Rows must be
    sorted by ``(user, time)``; ``users`` are integer codes."""
    key = users.astype(np.int64) * (1 << 33) + times.astype(np.int64)
    source_keys = key[is_source]
    end = np.searchsorted(source_keys, key, side="left")  # source rows strictly earlier
    start = np.searchsorted(source_keys, users.astype(np.int64) * (1 << 33), side="left")
    lo = np.maximum(start, end - max_len)
    out = {}
    for name, column in values.items():
        source = column[is_source].astype(str).tolist()
        out[name] = [delimiter.join(source[a:b]) for a, b in zip(lo.tolist(), end.tolist(),
                                                                  strict=True)]  # fmt: skip
    return out


@register_dataset
class MovieLens100KCrossBuilder(MovieLens100KBuilder):
    """``movielens_100k`` split by genre group into a source and a thinned target domain,
    with source-domain histories (cross-domain recommendation)."""

    name = "movielens_100k_cross"
    version = 1
    description = (
        "movielens_100k v2 rows and split, task like; domain role = the movie's genre group "
        "(target: action/adventure/crime/thriller/... first genre; source: the rest), target "
        f"training rows thinned to 10% (seed {THIN_SEED}); histories of earlier source items"
    )

    def schema(self) -> Schema:
        return Schema(
            tasks=(Task("like", "like"),),
            features=(
                *(CategoricalFeature(c) for c in
                  ("user_id", "item_id", *USER_FEATURES, *ITEM_FEATURES, "domain")),
                SequenceFeature("hist_item_id", max_len=HISTORY_LEN, share_vocab_with="item_id",
                                target="item_id"),
                SequenceFeature("hist_genre", max_len=HISTORY_LEN, share_vocab_with="genre",
                                aligned_with="hist_item_id"),
            ),
            roles={"group": "user_id", "time": "timestamp", "domain": "domain"},
            name=self.name,
        )  # fmt: skip

    def read(self, data_dir: Path, bad_rows: str = "error") -> pl.DataFrame:
        frame = super().read(data_dir, bad_rows)  # sorted by (user_id, timestamp, _row)
        target = frame.get_column("genre").is_in(sorted(TARGET_GENRES))
        frame = frame.with_columns(
            pl.when(target).then(pl.lit("target")).otherwise(pl.lit("source")).alias("domain")
        )
        _, user_codes = np.unique(frame.get_column("user_id").to_numpy(), return_inverse=True)
        hist = source_histories(
            user_codes,
            frame.get_column("timestamp").to_numpy(),
            ~target.to_numpy(),
            {"hist_item_id": frame.get_column("item_id").to_numpy(),
             "hist_genre": frame.get_column("genre").to_numpy()},
            HISTORY_LEN,
        )  # fmt: skip
        return frame.with_columns(pl.Series(k, v, dtype=pl.String) for k, v in hist.items())

    def build_splits(
        self, data_dir: Path, seed: int | None = None, bad_rows: str = "error"
    ) -> dict[str, pl.DataFrame]:
        splits = super().build_splits(data_dir, seed, bad_rows)
        splits["train"] = thin_domain(splits["train"], "domain", "target", THIN_FRACTION,
                                      THIN_SEED)  # fmt: skip
        return splits
