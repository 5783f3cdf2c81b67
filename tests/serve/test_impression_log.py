"""The impression log: every /v1/rank request of a real server process under concurrent
load is in the log (or counted as dropped), with the documented fields; rotation, crash
recovery and the drop counters of :class:`ImpressionLog` on their own."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from adrank.serve.impressions import (
    ACTIVE,
    ImpressionLog,
    finish_stale,
    read_impressions,
)

CONTEXT = {"user": "u3", "site": "s1", "price": 2.5, "age": 41, "hist": [1, 2, 4]}
THREADS, REQUESTS = 8, 50


def rank_body(t: int, i: int) -> dict[str, Any]:
    candidates = [
        {
            "ad_id": f"ad{k}",
            "bid": 0.5 + k * 0.25,
            "billing": "cpc",
            "features": {"ad": str((t + i + k) % 30)},
            "creatives": [
                {"creative_id": f"c{k}-{c}", "features": {"creative": f"{k}-{c}"}} for c in range(2)
            ],
        }
        for k in range(5)
    ]
    body: dict[str, Any] = {"context": CONTEXT, "candidates": candidates, "slots": 2}
    if i % 2 == 0:  # half the clients send their own id; the server makes the others
        body["request_id"] = f"client-{t}-{i}"
    return body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse_metrics(text: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("adrank_impressions")
    }


def test_every_rank_request_is_logged_under_concurrent_load(synthetic_runs, tmp_path: Path) -> None:
    log_dir = tmp_path / "impressions"
    port = free_port()
    token = "impression-test-admin-token"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ADRANK_ADMIN_TOKEN": token}
    root = synthetic_runs.run_a.parent
    command = [sys.executable, "-m", "adrank", "serve", "run_a", "--model-root", str(root)]
    command += ["--port", str(port), "--impression-log", str(log_dir)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read().decode()  # type: ignore[union-attr]
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        answers: list[tuple[dict[str, Any], int, dict[str, Any]]] = []
        lock = threading.Lock()

        def client(t: int) -> None:
            with httpx.Client(base_url=url, timeout=60) as c:
                for i in range(REQUESTS):
                    body = rank_body(t, i)
                    res = c.post("/v1/rank", json=body)
                    with lock:
                        answers.append((body, res.status_code, res.json()))

        threads = [threading.Thread(target=client, args=(t,)) for t in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        auth = {"Authorization": f"Bearer {token}"}  # from $ADRANK_ADMIN_TOKEN
        res = httpx.post(url + "/admin/reload", json={"model": "run_b"}, headers=auth)
        assert res.status_code == 200, res.text
        body = rank_body(0, 0) | {"request_id": "after-reload"}
        res = httpx.post(url + "/v1/rank", json=body, timeout=60)
        answers.append((body, res.status_code, res.json()))
        metrics = parse_metrics(httpx.get(url + "/metrics", timeout=10).text)
    finally:
        server.send_signal(signal.SIGTERM)  # graceful: the log finishes its active file
        server.wait(timeout=60)
    assert [s for _, s, _ in answers if s != 200] == []
    assert len(answers) == THREADS * REQUESTS + 1
    sent_ids = [b["request_id"] for b, _, _ in answers if "request_id" in b]
    returned = {a["request_id"]: (b, a) for b, _, a in answers}
    assert len(returned) == len(answers)  # generated ids are unique
    assert set(sent_ids) <= set(returned)

    assert not list(log_dir.glob(f"*{ACTIVE}"))  # finished at shutdown
    records = list(read_impressions(log_dir))
    dropped = sum(v for k, v in metrics.items() if "dropped" in k)
    assert metrics["adrank_impressions_logged_total"] + dropped >= len(records)
    logged = {r["request_id"]: r for r in records}
    assert len(logged) == len(records)  # one record per request
    assert len(records) + dropped == len(answers)
    assert set(logged) <= set(returned)
    for request_id, record in logged.items():
        body, answer = returned[request_id]
        assert record["format"] == 1
        assert record["model_version"] == answer["model_version"]
        assert record["model"] == ("run_b" if request_id == "after-reload" else "run_a")
        assert record["time"].endswith("Z") and record["timestamp"] > 0
        assert record["context"] == CONTEXT and record["slots_requested"] == 2
        assert (record["reserve_ecpm"], record["reserve_price"]) == (0.0, 0.0)
        cands = record["candidates"]
        assert [c["ad_id"] for c in cands] == [c["ad_id"] for c in body["candidates"]]
        assert [c["bid"] for c in cands] == [c["bid"] for c in body["candidates"]]
        for cand in cands:
            assert cand["billing"] == "cpc" and set(cand["scores"]) == {"pctr"}
            assert len(cand["creatives"]) == 2
            best = max(cand["creatives"], key=lambda c: c["scores"]["pctr"])
            assert cand["creative_id"] == best["creative_id"]
            assert cand["scores"] == best["scores"]
            assert cand["score"] == pytest.approx(1000 * cand["bid"] * cand["scores"]["pctr"])
        assert record["slots"] == [
            {k: s[k] for k in ("slot", "ad_id", "creative_id", "billing", "billing_event")}
            | {"score": s["score"], "price": s["price"]}
            for s in answer["slots"]
        ]


def test_rotation_gives_whole_lines_and_finished_files(tmp_path: Path) -> None:
    log = ImpressionLog(tmp_path, max_bytes=300, max_seconds=3600)
    for i in range(40):
        assert log.submit(lambda i=i: {"request_id": f"r{i}", "values": list(range(i % 7))})
    log.close()
    files = sorted(tmp_path.iterdir())
    assert len(files) > 3 and all(f.name.endswith(".jsonl") for f in files)
    for f in files:
        assert f.read_bytes().endswith(b"\n")
        assert f.stat().st_size < 300 + 100  # rotated once over the limit
    assert [r["request_id"] for r in read_impressions(tmp_path)] == [f"r{i}" for i in range(40)]
    assert log.stats() == {"written": 40, "dropped": dict.fromkeys(log.dropped, 0), "queued": 0}


def test_time_rotation_and_stale_files(tmp_path: Path) -> None:
    log = ImpressionLog(tmp_path, max_seconds=0.2)
    log.submit(lambda: {"n": 1})
    deadline = time.monotonic() + 20
    while not list(tmp_path.glob("*.jsonl")):  # finished by age, without a new record
        assert time.monotonic() < deadline
        time.sleep(0.05)
    log.close()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], text=True,
                          capture_output=True, check=True)  # fmt: skip
    stale = tmp_path / f"impressions-20260101T000000Z-{int(dead.stdout)}-0001.jsonl{ACTIVE}"
    stale.write_bytes(b'{"n": 2}\n{"n": 3}\n{"n": ')  # the process died mid-line
    assert finish_stale(tmp_path) == [stale.with_name(stale.name[: -len(ACTIVE)])]
    assert sorted(r["n"] for r in read_impressions(tmp_path)) == [1, 2, 3]


def wait_for(condition: Any) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_drops_are_counted_never_raised(tmp_path: Path, monkeypatch) -> None:
    gate = threading.Event()
    log = ImpressionLog(tmp_path, queue_size=2)
    log.submit(lambda: gate.wait(30) and {"n": 0})  # the writer blocks on this one
    wait_for(lambda: log.stats()["queued"] == 0)  # taken by the writer
    accepted = [log.submit(lambda i=i: {"n": i}) for i in range(1, 6)]
    assert accepted == [True, True, False, False, False]
    log.submit(lambda: {"bad": float("nan")})  # queue still full: dropped too
    gate.set()
    wait_for(lambda: log.stats()["written"] == 3)
    log.submit(lambda: {"bad": float("nan")})  # not JSON: an encode error
    log.close()
    assert log.stats()["dropped"] == {"queue_full": 4, "write_error": 0, "encode_error": 1}
    assert sorted(r["n"] for r in read_impressions(tmp_path)) == [0, 1, 2]

    broken = ImpressionLog(tmp_path / "broken")

    def fail() -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(broken, "_open", fail)
    broken.submit(lambda: {"n": 1})
    broken.close()
    assert broken.stats()["dropped"]["write_error"] == 1
    assert json.dumps(broken.stats())  # what /metrics reports
