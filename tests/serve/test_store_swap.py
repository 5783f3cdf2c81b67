"""``adrank serve --store`` with two worker processes on 127.0.0.1, under concurrent
``/v1/rank`` load while versions are published (one broken, one with a grown vocabulary):
no request fails, every worker only moves forward to good versions, and every worker
refuses, logs and counts the broken one. The same harness as ``python -m
benchmarks.store_swap``, with fewer versions, shorter phases and the synthetic runs."""

from __future__ import annotations

import json

from benchmarks.store_swap import render, run_store_swap
from tests.serve.test_admin import RANK


def test_workers_follow_the_store_under_load(synthetic_runs, larger_vocab_run, tmp_path):
    results = run_store_swap(
        synthetic_runs.run_a,
        larger_vocab_run,
        tmp_path,
        [json.dumps(RANK).encode()],
        versions=5,
        broken_at=3,
        grown_at=4,
        workers=2,
        concurrency=4,
        poll_interval=0.2,
        steady=1.5,
        gap=1.5,
        reconnect_every=10,
        rollback_to=2,
    )
    report = render(results)
    assert results["requests"] > 0, report
    assert results["failed"] == 0, results["failures"]
    assert results["forward_only"], report
    assert results["broken_versions"] == [3] and results["broken_versions_served"] == []
    vocab = [entry["vocabulary"]["user"] for entry in results["plan"]]
    assert vocab[3] > vocab[0]  # version 4 has a grown vocabulary
    workers = results["workers"]
    assert workers, report
    for pid, worker in workers.items():
        assert worker["refused"] == [3], (pid, worker)
        assert worker["versions_seen_by_monitor"][-1] == 5, (pid, worker)
        assert 3 not in worker["versions_answered"]
    assert results["every_worker_refused_the_broken"]
    assert results["refusals_logged"] >= len(workers)  # each worker logs its refusal
    assert "failed requests | **0**" in report
    back = results["rollback"]  # the deliberate backward move, followed by every worker
    assert back["every_worker_followed"] and back["versions_answered_after"] in ([], [2])
