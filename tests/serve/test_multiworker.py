"""``adrank serve --workers N``: the workers log their swaps, their ``/metrics`` samples
say which worker answered, and the parent lets go of the listening socket before it stops
the workers (real processes on loopback)."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from uvicorn import Config

from adrank.serve.app import _Supervisor
from adrank.serve.http_metrics import with_label


def test_every_sample_gets_the_worker_label() -> None:
    text = (
        "# HELP a_total x\n# TYPE a_total counter\n"
        'a_total{method="GET",path="/v1 x"} 3\nb_total 5\nc{} 1\n'
    )
    assert with_label(text, "worker", "42").splitlines()[2:] == [
        'a_total{worker="42",method="GET",path="/v1 x"} 3',
        'b_total{worker="42"} 5',
        'c{worker="42"} 1',
    ]


def test_the_supervisor_closes_its_socket_before_stopping_the_workers() -> None:
    """With the parent's copy open, the kernel accepted connections after every worker had
    stopped accepting and reset them when the parent exited (42 resets in one SIGTERM under
    load); closed, they are refused, which clients and proxies retry."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    supervisor = _Supervisor(Config("adrank.serve.app:app_from_env"), sockets=[sock])
    supervisor.processes = []  # no workers started: only the parent's side is tested
    supervisor.terminate_all()
    assert sock.fileno() == -1


def _get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    res = conn.getresponse()
    return res.status, res.read().decode()


def test_two_workers_label_metrics_log_and_stop(synthetic_runs, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "adrank", "serve", str(synthetic_runs.run_a), "--port", str(port),
         "--workers", "2"],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if _get(port, "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
            time.sleep(0.3)
        status, text = _get(port, "/metrics")
        assert status == 200
        samples = [line for line in text.splitlines() if line and not line.startswith("#")]
        assert samples and all(re.search(r'\{worker="\d+"', line) for line in samples)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        log.close()
    text = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in text
