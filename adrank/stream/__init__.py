"""Incremental training on time-ordered data.

* :mod:`adrank.stream.vocab`: vocabularies that grow over a stream (admission by
  ``min_count``, optional eviction, re-use of freed ids, table capacity);
* :mod:`adrank.stream.tables`: where embedding rows live, moving them into a bigger model
  with their optimizer state, resetting rows;
* :mod:`adrank.stream.growing`: a model + optimizer (Adam, per-row step counts for the
  tables) that follows a growing vocabulary;
* :mod:`adrank.stream.warm_start`: ``adrank train --init-from RUN_DIR``;
* :mod:`adrank.stream.protocol`, :mod:`adrank.stream.strategies`,
  :mod:`adrank.stream.runner`: the streaming protocol (``adrank stream``), the update
  strategies and per-chunk run directories.
"""

from adrank.stream.growing import GrowingModel
from adrank.stream.vocab import GrowthStep, VocabularyGrowth

__all__ = ["GrowingModel", "GrowthStep", "VocabularyGrowth"]
