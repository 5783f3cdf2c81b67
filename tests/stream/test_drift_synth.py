"""The SYNTHETIC drifting stream: the schedule's concept shares, each chunk's concepts and
event order, and the drift-detection scoring by hand."""

from __future__ import annotations

import numpy as np

from adrank.stream.drift_synth import DRIFTS, concept_shares, drifting_criteo_stream
from benchmarks.stream_drift import score


def test_schedule_shares() -> None:
    assert concept_shares(0) == (1.0, 0.0, 0.0)
    assert concept_shares(10) == (0.0, 1.0, 0.0)
    assert concept_shares(22) == (0.0, 0.5, 0.5)
    assert concept_shares(25) == (0.0, 0.0, 1.0)
    assert concept_shares(30) == (1.0, 0.0, 0.0)
    assert [d.kind for d in DRIFTS] == ["abrupt", "gradual", "recurrent"]


def test_stream_follows_the_schedule() -> None:
    schema, chunks, _ = drifting_criteo_stream(chunks=31, rows=300, seed=3, max_cardinality=50)
    assert schema.roles == {"time": "time"} and "synth" in (schema.name or "")
    assert len(chunks) == 31 and all(c.height == 300 for c in chunks)
    assert set(chunks[5]["concept"].to_list()) == {0}
    assert set(chunks[15]["concept"].to_list()) == {1}
    assert set(chunks[22]["concept"].to_list()) == {1, 2}
    assert np.all(np.diff(np.concatenate([c["time"].to_numpy() for c in chunks])) == 1)
    # the labels of a mixed chunk follow each row's concept; others are the concepts' own
    rates = [float(c["label"].mean()) for c in chunks]
    assert all(0.1 < r < 0.45 for r in rates)


def test_detection_scoring_by_hand() -> None:
    drifts = [vars(d) for d in DRIFTS]
    result = score([3, 11, 12, 22, 31, 38], drifts)
    assert result["delay"] == {"abrupt": 1, "gradual": 2, "recurrent": 1}
    assert result["false_alarms"] == [3, 12, 38]
    assert score([], drifts)["delay"] == {"abrupt": None, "gradual": None, "recurrent": None}
