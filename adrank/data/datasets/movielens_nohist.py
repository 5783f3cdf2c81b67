"""MovieLens 100K without the behaviour histories: the history-free baseline's data.

``movielens_100k_nohist`` is ``movielens_100k`` (definition version 2: the same rows,
labels, tasks, per-user chronological split and roles) with the two history fields
``hist_item_id`` and ``hist_genre`` left out of the schema. Models trained on it see the
user's and the item's own fields only, so the sequence leaderboard can compare, on the
identical test rows:

* a model **without** the history (this dataset);
* the same model with the history **mean-pooled** (``movielens_100k``: a feature-interaction
  model mean-pools every sequence field it is given);
* the sequence models, which attend over it.
"""

from __future__ import annotations

import dataclasses

from adrank.data.datasets.base import register_dataset
from adrank.data.datasets.movielens import MovieLens100KBuilder
from adrank.data.schema import Schema, SequenceFeature


@register_dataset
class MovieLens100KNoHistoryBuilder(MovieLens100KBuilder):
    """``movielens_100k`` without the history fields (same rows and split)."""

    name = "movielens_100k_nohist"
    version = 2
    description = (
        "MovieLens 100K (v2) without the behaviour histories: the same rows, tasks and "
        "per-user split, for history-free baselines"
    )

    def schema(self) -> Schema:
        base = super().schema()
        kept = tuple(f for f in base.features if not isinstance(f, SequenceFeature))
        return dataclasses.replace(base, features=kept, name=self.name)
