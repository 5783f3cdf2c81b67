"""The model store (``adrank publish`` / ``adrank rollback``) and a server that follows it
(``adrank serve --store``), in process: each poll is called directly, so nothing waits on
a timer. The load test with real worker processes is ``tests/serve/test_store_swap.py``."""

from __future__ import annotations

import multiprocessing
import re
import shutil
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from adrank.cli import app as cli_app
from adrank.outputs import read_marker
from adrank.serve import model_store
from adrank.serve.cli_commands import ServeCommandError, run_serve
from adrank.serve.model_store import (
    STORE_KIND,
    StoreError,
    latest_version,
    publish,
    rollback,
    versions,
)
from adrank.serve.predictor import Predictor
from tests.serve.test_admin import RANK, copy_run


def broken_copy(run: Path, dst: Path) -> Path:
    """A finished run whose weights file was cut short (a corrupt upload)."""
    copy_run(run, dst)
    data = (dst / "model.pt").read_bytes()
    (dst / "model.pt").write_bytes(data[: len(data) // 2])
    return dst


def metric(client: TestClient, name: str) -> float:
    text = client.get("/metrics").text
    found = re.search(rf"^{name} (\S+)$", text, flags=re.M)
    assert found, f"{name} missing from /metrics"
    return float(found.group(1))


# ------------------------------------------------------------------------ publish -----
def test_publish_writes_numbered_read_only_versions_and_moves_latest(synthetic_runs, tmp_path):
    store = tmp_path / "store"
    first = publish(synthetic_runs.run_a, store)
    second = publish(synthetic_runs.run_b, store)
    model = store / "default"
    assert (first.version, second.version, second.latest) == (1, 2, 2)
    assert versions(model) == [1, 2] and latest_version(model) == 2
    assert (model / "latest").read_text() == "2\n"
    assert read_marker(model)["kind"] == STORE_KIND
    version = model / "2"
    assert not (version / "checkpoint.pt").exists()  # training state stays in the run
    for path in [version, *version.rglob("*")]:
        assert not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH), path
    assert Predictor.load(version).version == Predictor.load(synthetic_runs.run_b).version
    assert not list(model.glob(".*.claim")) and not list(model.glob(".*.tmp"))
    assert (synthetic_runs.run_a / "manifest.json").is_file()  # the source is untouched


def test_publish_refuses_what_is_not_a_finished_run_or_not_a_store(synthetic_runs, tmp_path):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(synthetic_runs.run_a, unfinished)
    (unfinished / "manifest.json").unlink()
    with pytest.raises(StoreError, match="not a finished adrank run"):
        publish(unfinished, tmp_path / "store")
    store = tmp_path / "store"
    shutil.copytree(synthetic_runs.run_a, store / "deepfm")  # a plain run in the root
    with pytest.raises(StoreError, match="is a run directory"):
        publish(synthetic_runs.run_a, store, "deepfm")
    with pytest.raises(StoreError, match="would read as a version"):
        publish(synthetic_runs.run_a, store, "ctr/3")
    (store / "notes").mkdir()
    (store / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(StoreError, match="not empty and was not created by adrank"):
        publish(synthetic_runs.run_a, store, "notes")
    assert (store / "notes" / "todo.txt").read_text() == "mine"
    assert publish(synthetic_runs.run_a, store, "team/ctr").path == store / "team" / "ctr" / "1"


def _publish_after(barrier, run: str, store: str, queue) -> None:
    barrier.wait()
    # check=False: torch does not run in a child forked after the parent used its threads,
    # and this test is about the version numbers only
    queue.put(publish(run, store, check=False).version)


def test_concurrent_publishers_never_share_a_number(synthetic_runs, tmp_path):
    store = tmp_path / "store"
    publish(synthetic_runs.run_a, store)  # the model directory exists
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(6), ctx.Queue()
    procs = [
        ctx.Process(target=_publish_after, args=(barrier, synthetic_runs.run_a, store, queue))
        for _ in range(6)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    got = sorted(queue.get(timeout=5) for _ in procs)
    assert got == [2, 3, 4, 5, 6, 7]
    assert versions(store / "default") == [1, *got]
    assert latest_version(store / "default") == 7  # the highest, whoever finished last


def test_latest_moves_forward_only_when_publishing(synthetic_runs, tmp_path, monkeypatch):
    """A publisher that claimed a lower number and finishes last leaves latest alone."""
    store = tmp_path / "store"
    publish(synthetic_runs.run_a, store)
    slow = 2  # claimed by a slow publisher, finished after version 3
    (store / "default" / f".{slow}.claim").write_text("1\n")
    assert publish(synthetic_runs.run_b, store).version == 3
    monkeypatch.setattr(model_store, "_claim_number", lambda target: slow)
    late = publish(synthetic_runs.run_a, store)
    assert (late.version, late.latest) == (2, 3)
    assert latest_version(store / "default") == 3


def test_rollback_moves_latest_back_and_deletes_nothing(synthetic_runs, tmp_path):
    store = tmp_path / "store"
    for run in (synthetic_runs.run_a, synthetic_runs.run_b, synthetic_runs.run_a):
        publish(run, store)
    assert rollback(store, 1) == (3, 1)
    assert latest_version(store / "default") == 1 and versions(store / "default") == [1, 2, 3]
    with pytest.raises(StoreError, match=r"no version 7 \(published: 1, 2, 3\)"):
        rollback(store, 7)
    assert publish(synthetic_runs.run_b, store).latest == 4  # publishing moves on past it


def test_cli_publish_and_rollback(synthetic_runs, tmp_path):
    runner = CliRunner()
    store = tmp_path / "store"
    for _ in range(2):
        res = runner.invoke(
            cli_app, ["publish", str(synthetic_runs.run_a), "--store", str(store), "--name", "ctr"]
        )
        assert res.exit_code == 0, res.output
    assert "as ctr/2" in res.output
    res = runner.invoke(cli_app, ["rollback", "--store", str(store), "--to", "1", "--name", "ctr"])
    assert res.exit_code == 0 and "latest 2 -> 1" in res.output
    res = runner.invoke(cli_app, ["rollback", "--store", str(store), "--to", "9", "--name", "ctr"])
    assert res.exit_code == 1 and "no version 9" in res.output
    res = runner.invoke(cli_app, ["publish", str(tmp_path), "--store", str(store)])
    assert res.exit_code == 1 and "not a finished adrank run" in res.output


def test_serve_store_options_are_checked(tmp_path):
    with pytest.raises(ServeCommandError, match="not both"):
        run_serve(None, store=tmp_path, model_root=tmp_path)
    with pytest.raises(ServeCommandError, match="only with --store"):
        run_serve("run", poll_interval=2.0)
    with pytest.raises(ServeCommandError, match="is not a directory"):
        run_serve(None, store=tmp_path / "missing")
    for interval in (0, 1e-6):  # 1e-6 ran 10k polls/s, half the core of an idle server
        with pytest.raises(ServeCommandError, match=r"must be in \[0.05, 86400\]"):
            run_serve(None, store=tmp_path, poll_interval=interval)
    with pytest.raises(ServeCommandError, match="no published version"):
        run_serve(None, store=tmp_path)


# ------------------------------------------------------------------------- follow -----
def store_app(store: Path):
    from adrank.serve.app import create_app

    app = create_app("default", model_root=store, follow_store=True, torch_threads=None)
    return app, app.state.store_follower


def test_server_follows_the_store_forward_through_the_gate(synthetic_runs, variant_runs, tmp_path):
    store = tmp_path / "store"
    publish(synthetic_runs.run_a, store)
    app, follower = store_app(store)
    client = TestClient(app)  # no lifespan: the poller thread is not started, polls are ours

    def serving() -> str:
        body = client.post("/v1/rank", json=RANK).json()
        return body["model_reference"]

    health = client.get("/healthz").json()
    assert health["model_reference"] == "default/1" and health["store"]["version"] == 1
    assert serving() == "default/1"
    assert follower.poll() == "unchanged"

    publish(variant_runs.grown, store)  # a grown vocabulary: the schema is the same
    assert follower.poll() == "swapped"
    res = client.post("/v1/rank", json=RANK).json()
    assert res["model_reference"] == "default/2"
    assert res["model_version"] == Predictor.load(variant_runs.grown).version

    # check=False: a corrupt version written past `adrank publish` (which refuses it)
    publish(broken_copy(synthetic_runs.run_a, tmp_path / "broken"), store, check=False)
    assert follower.poll() == "refused"
    assert serving() == "default/2"
    assert (
        "model.pt is not a torch weights file"
        in client.get("/healthz").json()["store"]["refused"]["3"]
    )
    assert metric(client, "adrank_store_refused_total") == 1
    assert metric(client, "adrank_model_reloads_refused_total") == 1
    assert follower.poll() == "refused"  # remembered, not loaded again
    assert metric(client, "adrank_model_reloads_refused_total") == 1

    # latest is the broken version 3 (it does not load): publish cannot compare, the gate does
    publish(variant_runs.other_schema, store)  # reads hist with another length
    assert follower.poll() == "refused"
    assert "'hist'" in follower.refused[4] and serving() == "default/2"

    publish(synthetic_runs.run_b, store, allow_incompatible=True)  # latest is the other one
    assert follower.poll() == "swapped" and serving() == "default/5"
    assert metric(client, "adrank_store_version") == 5
    assert metric(client, "adrank_store_swaps_total") == 2

    rollback(store, 3, check=False)  # to a version this worker refused: it stays
    assert follower.poll() == "refused" and serving() == "default/5"
    rollback(store, 1)  # the one deliberate backward move
    assert follower.poll() == "rolled back" and serving() == "default/1"
    assert metric(client, "adrank_store_rollbacks_total") == 1
    publish(synthetic_runs.run_b, store)
    assert follower.poll() == "swapped" and serving() == "default/6"


def test_publish_refuses_other_inputs_than_the_latest_version(
    synthetic_runs, variant_runs, tmp_path
):
    """A model the following servers would refuse was published (latest moved to it), and a
    server started later served it to the old clients: refused unless the operator says so."""
    store = tmp_path / "store"
    publish(synthetic_runs.run_a, store)
    publish(variant_runs.grown, store)  # a grown vocabulary: the same inputs, accepted
    with pytest.raises(StoreError, match=r"reads or gives other fields .*'hist'"):
        publish(variant_runs.other_schema, store)
    assert latest_version(store / "default") == 2
    done = publish(variant_runs.other_schema, store, allow_incompatible=True)
    assert done.version == 3 and latest_version(store / "default") == 3


def test_a_worker_starts_on_the_newest_good_version(synthetic_runs, tmp_path):
    store = tmp_path / "store"
    publish(synthetic_runs.run_a, store)
    publish(broken_copy(synthetic_runs.run_a, tmp_path / "broken"), store, check=False)
    app, follower = store_app(store)
    assert follower.version == 1 and set(follower.refused) == {2}
    assert follower.poll() == "refused"
    client = TestClient(app)
    assert client.post("/v1/rank", json=RANK).json()["model_reference"] == "default/1"
    only_broken = tmp_path / "only-broken"
    publish(tmp_path / "broken", only_broken, check=False)
    with pytest.raises(ValueError, match="passes the swap gate"):
        store_app(only_broken)


def test_the_poller_thread_runs_with_the_app(synthetic_runs, tmp_path):
    """With the lifespan (as under uvicorn) the follower polls on its own timer."""
    import time

    store = tmp_path / "store"
    publish(synthetic_runs.run_a, store)
    from adrank.serve.app import create_app

    app = create_app(
        "default", model_root=store, follow_store=True, poll_interval=0.05, torch_threads=None
    )
    with TestClient(app) as client:
        publish(synthetic_runs.run_b, store)
        deadline = time.monotonic() + 60
        while client.get("/healthz").json()["model_reference"] != "default/2":
            assert time.monotonic() < deadline, "the follower did not move to version 2"
            time.sleep(0.05)
    assert app.state.store_follower.swaps == 1


def test_the_gate_compares_schemas_not_vocabularies(synthetic_runs, variant_runs, larger_vocab_run):
    """Each publish grows vocabularies; the gate's signature leaves them out, and still sees
    an input-schema change."""
    from adrank.serve.swap_gate import serving_signature, signature_differences

    base, grown = Predictor.load(synthetic_runs.run_a), Predictor.load(larger_vocab_run)
    sizes = {f.name: f.vocab_size for f in base.feature_map.fields}
    grown_sizes = {f.name: f.vocab_size for f in grown.feature_map.fields}
    assert grown_sizes["user"] == sizes["user"] + 50 and grown_sizes["site"] == sizes["site"]
    assert signature_differences(serving_signature(base), serving_signature(grown)) == []
    assert signature_differences(serving_signature(base), serving_signature(grown)) == []
    other = Predictor.load(variant_runs.other_schema)
    assert signature_differences(serving_signature(base), serving_signature(other))


def test_a_version_failing_its_smoke_prediction_is_refused(synthetic_runs, tmp_path):
    import torch

    store = tmp_path / "store"
    publish(synthetic_runs.run_a, store)
    nan = copy_run(synthetic_runs.run_a, tmp_path / "nan")
    state = torch.load(nan / "model.pt", weights_only=True)
    torch.save({k: v * float("nan") if v.is_floating_point() else v for k, v in state.items()},
               nan / "model.pt")  # fmt: skip
    app, follower = store_app(store)
    publish(nan, store, check=False)
    assert follower.poll() == "refused" and follower.version == 1
    assert "smoke prediction" in follower.refused[2]
    assert metric(TestClient(app), "adrank_store_refused_total") == 1


def test_publish_and_rollback_refuse_what_the_servers_would_refuse(synthetic_runs, tmp_path):
    """`adrank publish` of a run whose model.pt was cut short exited 0 and moved latest to
    it (every server then refused it); a NaN model passed too, and `rollback --to` a refused
    version printed "latest 101 -> 6" while the servers stayed put. Now all three are
    refused with the gate's reason, and nothing in the store changes."""
    import torch

    store = tmp_path / "store"
    publish(synthetic_runs.run_a, store)
    broken = broken_copy(synthetic_runs.run_a, tmp_path / "broken")
    with pytest.raises(StoreError, match=r"cannot publish .*model\.pt is not a torch weights"):
        publish(broken, store)
    nan = copy_run(synthetic_runs.run_a, tmp_path / "nan")
    state = torch.load(nan / "model.pt", weights_only=True)
    torch.save({k: v * float("nan") if v.is_floating_point() else v for k, v in state.items()},
               nan / "model.pt")  # fmt: skip
    with pytest.raises(StoreError, match="smoke prediction"):
        publish(nan, store)
    assert versions(store / "default") == [1] and latest_version(store / "default") == 1
    publish(broken, store, check=False)  # written past the check (a corrupt upload): 2
    publish(synthetic_runs.run_b, store)  # 3
    with pytest.raises(StoreError, match="cannot roll default back to 2"):
        rollback(store, 2)
    assert latest_version(store / "default") == 3
    res = CliRunner().invoke(cli_app, ["publish", str(broken), "--store", str(store)])
    assert res.exit_code == 1 and "Servers following the store would refuse it" in res.output
    assert rollback(store, 1) == (3, 1)  # a good version: as before
