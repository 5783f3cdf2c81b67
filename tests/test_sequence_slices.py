"""``python -m benchmarks.sequence_slices``: the per-slice metrics and the report, on a
small hand-made reference (the real run needs the leaderboard's run directories)."""

from __future__ import annotations

import numpy as np

from adrank.metrics import auc
from benchmarks.sequence_slices import markdown, slice_metrics


def reference() -> dict:
    labels = np.array([1, 0, 1, 0, 1, 0, 1, 1], dtype=np.float32)
    users = np.array([1, 1, 2, 2, 3, 3, 4, 4])
    short = np.array([True, True, False, False, False, False, False, False])
    return {
        "labels": labels,
        "users": users,
        "masks": {
            "all": np.ones(8, dtype=bool),
            "short history (< 25)": short,
            "long history (>= 25)": ~short,
        },
    }


def test_slices_score_their_rows_and_say_when_a_slice_has_one_class() -> None:
    ref = reference()
    scores = np.array([0.9, 0.2, 0.4, 0.6, 0.7, 0.1, 0.3, 0.8])
    out = slice_metrics(scores, ref)
    assert out["all"]["rows"] == 8 and out["all"]["positives"] == 5
    assert out["all"]["auc"] == auc(ref["labels"], scores)
    short = out["short history (< 25)"]
    assert (short["rows"], short["positives"], short["auc"], short["gauc"]) == (2, 1, 1.0, 1.0)
    long = ~ref["masks"]["short history (< 25)"]
    assert out["long history (>= 25)"]["auc"] == auc(ref["labels"][long], scores[long])
    one_class = {**ref, "masks": {"all": ref["labels"] == 1}}
    assert np.isnan(slice_metrics(scores, one_class)["all"]["auc"])


def test_report_gives_mean_and_std_per_model_and_slice() -> None:
    ref = reference()
    results = {
        "din@like [sequences]": {
            2021: slice_metrics(np.linspace(0.1, 0.9, 8), ref),
            2022: slice_metrics(np.linspace(0.9, 0.1, 8), ref),
        }
    }
    text = markdown(results, 25)
    assert "| model | seeds | all | short history (< 25) | long history (>= 25) |" in text
    assert "| din@like [sequences] | 2 |" in text and "±" in text
    assert "all: 8 rows (5 positive)" in text
