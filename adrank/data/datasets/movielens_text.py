"""MovieLens 100K with pretrained item vectors of movie titles and genres (the
``pretrained`` feature type on a public dataset).

``movielens_100k_text`` is ``movielens_100k`` (definition version 2: the same rows, labels,
split and histories) plus two fields:

* ``item_text``: a pretrained feature of ``item_id``, one 32-dim vector per movie built from
  its title and all its genres (``ml-100k.item``: ``movie_title`` + ``class``) by TF-IDF and
  a truncated SVD (:func:`adrank.data.pretrained.text_vectors`). The vectors are
  **lexical** (which words two titles/genre lists share), **not learned multimodal
  embeddings**. Frozen in training; a projection maps them to the model's embedding dim;
* ``hist_item_text``: the same vectors for every item of the history (``source:
  hist_item_id``, aligned with it), so target attention compares the candidate's vector
  with the history's.

The vectors are derived from the raw item file when the dataset is prepared (nothing to
download besides ``movielens_100k``'s files); :func:`item_text_vectors` returns them, e.g.
to write them to Parquet for one's own schema.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import polars as pl

from adrank.data.datasets.base import register_dataset
from adrank.data.datasets.movielens import HISTORY_LEN, MovieLens100KBuilder, _read_atomic
from adrank.data.pretrained import text_vectors
from adrank.data.readers import DataFormatError
from adrank.data.schema import PretrainedFeature, Schema, SequenceFeature

#: length of the title + genre vectors
TEXT_DIM = 32


def item_text_vectors(item_file: Path, dim: int = TEXT_DIM) -> pl.DataFrame:
    """``id`` (``item_id`` as text) and ``vector`` (``dim`` float32) per movie of a RecBole
    ``ml-100k.item`` file: TF-IDF + truncated SVD of ``"<title> <genres>"``. Lexical
    vectors, not learned multimodal embeddings."""
    items = _read_atomic(Path(item_file), "error")
    missing = [c for c in ("item_id", "movie_title", "class") if c not in items.columns]
    if missing:
        raise DataFormatError(f"{item_file}: missing column(s) {missing}; got {items.columns}")
    items = items.unique("item_id", keep="first", maintain_order=True)
    texts = items.select(
        pl.concat_str(
            pl.col("movie_title").fill_null(""), pl.col("class").fill_null(""), separator=" "
        )
    ).to_series()
    return text_vectors(items["item_id"].cast(pl.Utf8).to_list(), texts.to_list(), dim)


@register_dataset
class MovieLens100KTextBuilder(MovieLens100KBuilder):
    """``movielens_100k`` plus lexical title + genre vectors of the items and the history."""

    name = "movielens_100k_text"
    version = 2
    description = (
        "MovieLens 100K (v2) + pretrained item vectors: TF-IDF + truncated SVD of movie "
        "titles and genres (32-dim, frozen; lexical, not learned multimodal), for the "
        "target item (item_text) and its history (hist_item_text)"
    )

    def schema(self) -> Schema:
        base = super().schema()
        extra = (
            PretrainedFeature(
                "item_text", share_vocab_with="item_id", dim=TEXT_DIM, freeze=True
            ),
            SequenceFeature(
                "hist_item_text", max_len=HISTORY_LEN, source="hist_item_id",
                share_vocab_with="item_text", aligned_with="hist_item_id",
            ),
        )  # fmt: skip
        return dataclasses.replace(base, features=(*base.features, *extra), name=self.name)

    def pretrained_vectors(self, data_dir: Path) -> dict[str, pl.DataFrame]:
        item_file = self.locate(Path(data_dir), self.files[2].path)
        return {"item_text": item_text_vectors(item_file)}
