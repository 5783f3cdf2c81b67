"""Incremental training on awkward inputs: a chunk whose holdout holds one class, a second
stream into the same output, chunks too small or out of time order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from adrank.config import TrainConfig
from adrank.outputs import OutputDirError
from adrank.stream.protocol import StreamSettings, cut_chunks, load_stream
from adrank.stream.runner import run_stream

SMALL = {"embedding_dim": 4, "hidden_units": [8], "net_dropout": 0.0}
TRAIN = TrainConfig(task="like", batch_size=256, num_threads=1, patience=1)
ONE_EPOCH = StreamSettings(max_epochs=1)


@pytest.fixture(scope="module")
def stream(data_dir: Path):
    schema, frame = load_stream("movielens_100k", data_dir)
    return schema, cut_chunks(frame.head(1_500), "timestamp", chunks=3)


# ------------------------------------------------------------------------- stream -----
def test_an_update_whose_holdout_holds_one_class_stops_on_logloss(stream) -> None:
    """A chunk with no negative (a quiet hour, a small chunk's holdout without a click)
    made validation AUC NaN, and the trainer stopped the whole stream on it."""
    schema, chunks = stream
    all_liked = chunks[1].with_columns(pl.lit(1).cast(chunks[1]["like"].dtype).alias("like"))
    records = run_stream(
        schema, [chunks[0], all_liked, chunks[2]], "deepfm", SMALL, TRAIN, "fine_tune", None,
        ONE_EPOCH, 0,
    )  # fmt: skip
    assert [r["chunk"] for r in records] == [1, 2]
    assert records[0]["auc"] is None or np.isnan(records[0]["auc"])  # one class: no AUC
    assert np.isfinite(records[0]["logloss"])
    assert 0.5 < records[1]["auc"] < 1 and records[1]["compute"] == 450  # chunk 1 trained on


def test_a_second_stream_into_the_same_output_is_refused(stream, tmp_path: Path) -> None:
    """records.jsonl was appended to: the second run's chunks followed the first's."""
    schema, chunks = stream
    out = tmp_path / "s"
    run_stream(schema, chunks, "deepfm", SMALL, TRAIN, "fine_tune", None, ONE_EPOCH, 0,
               out=out, save="last")  # fmt: skip
    before = (out / "records.jsonl").read_text()
    with pytest.raises(OutputDirError, match="already holds the results of a stream"):
        run_stream(schema, chunks, "deepfm", SMALL, TRAIN, "fine_tune", None, ONE_EPOCH, 0,
                   out=out, save="last")  # fmt: skip
    assert (out / "records.jsonl").read_text() == before
    assert [json.loads(x)["chunk"] for x in before.splitlines()] == [1, 2]
    assert (out / "chunk_001" / "manifest.json").is_file()


def test_chunks_the_protocol_cannot_run_on_are_refused_before_training(
    stream, tmp_path: Path
) -> None:
    schema, (c0, c1, c2) = stream
    cases = {
        "not in time order": [c0, c2, c1],
        "chunk 1 is not in 'timestamp' order": [c0, c1.reverse(), c2],
        "chunk 1 has 1 row": [c0, c1.head(1), c2],
        "chunk 2 has 0 row": [c0, c1, c2.head(0)],
    }
    for message, chunks in cases.items():
        out = tmp_path / message.replace(" ", "_").replace("'", "")
        with pytest.raises(ValueError, match=message):
            run_stream(schema, chunks, "deepfm", SMALL, TRAIN, "fine_tune", None, ONE_EPOCH, 0,
                       out=out)  # fmt: skip
        assert not out.exists()  # refused before anything was written
