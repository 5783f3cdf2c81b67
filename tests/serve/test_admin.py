"""The admin surface: the token lock, the model root and the swap gate, over real HTTP.

The first version's ``/admin/reload`` needed no credentials, loaded any path on the server
and answered 500 for truncated or random weights; each of those is reproduced here and now
fails safe (404/401/403, 403 outside the root, 409 with the reason while the old model
keeps serving).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from adrank.serve.admin import AdminAuth, is_loopback, warn_if_exposed
from adrank.serve.cli_commands import ServeCommandError, run_serve
from adrank.serve.model_root import (
    BadModelReference,
    ModelNotFound,
    ModelRoot,
    OutsideModelRoot,
    set_latest,
)
from adrank.serve.predictor import Predictor
from adrank.serve.swap_gate import (
    SwapRefused,
    load_checked,
    serving_signature,
    signature_differences,
)

TOKEN = "s3cret-admin-token-for-tests-0123"
CONTEXT = {"user": "u3", "site": "s1", "price": 2.5, "age": 41, "hist": [1, 2, 4]}
RANK = {
    "context": CONTEXT,
    "candidates": [
        {"ad_id": f"ad{i}", "bid": 1.0, "features": {"ad": str(i), "creative": f"{i}-0"}}
        for i in range(4)
    ],
    "slots": 2,
}


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoint.pt", "best.pt"))
    return dst


@pytest.fixture(scope="module")
def model_root(synthetic_runs, variant_runs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("admin")
    root = base / "models"
    root.mkdir()
    copy_run(synthetic_runs.run_a, root / "current")
    copy_run(synthetic_runs.run_b, root / "run_b")
    copy_run(variant_runs.grown, root / "grown")
    copy_run(variant_runs.other_schema, root / "other_schema")
    weights = (synthetic_runs.run_a / "model.pt").read_bytes()
    (copy_run(synthetic_runs.run_a, root / "truncated") / "model.pt").write_bytes(
        weights[: len(weights) // 2]
    )
    (copy_run(synthetic_runs.run_a, root / "random") / "model.pt").write_bytes(os.urandom(4096))
    (copy_run(synthetic_runs.run_a, root / "missing") / "feature_map.json").unlink()
    state = torch.load(synthetic_runs.run_a / "model.pt", weights_only=True)
    nan = {k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in state.items()}
    torch.save(nan, base / "nan.pt")
    shutil.copy(base / "nan.pt", copy_run(synthetic_runs.run_a, root / "nan") / "model.pt")
    copy_run(synthetic_runs.run_a, root / "versioned" / "1")
    copy_run(synthetic_runs.run_b, root / "versioned" / "2")
    set_latest(root / "versioned", 1)
    copy_run(synthetic_runs.run_b, base / "outside")
    (root / "escape").symlink_to(base / "outside")
    return root


@pytest.fixture(scope="module")
def versions(synthetic_runs, variant_runs) -> dict[str, str]:
    return {
        "a": Predictor.load(synthetic_runs.run_a).version,
        "b": Predictor.load(synthetic_runs.run_b).version,
        "grown": Predictor.load(variant_runs.grown).version,
    }


@pytest.fixture(scope="module")
def server(model_root: Path, server_class) -> Iterator[str]:
    from adrank.serve.app import create_app

    app = create_app("current", model_root=model_root, admin_token=TOKEN, torch_threads=None)
    with server_class(app) as live:
        yield live.url


@pytest.fixture()
def admin(server: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server, timeout=60, headers=headers) as client:
        assert client.post("/admin/reload", json={"model": "current"}).status_code == 200
        yield client


def serving(client: httpx.Client) -> str:
    res = client.post("/v1/rank", json=RANK)
    assert res.status_code == 200, res.text
    assert res.json()["model_version"] == client.get("/healthz").json()["model_version"]
    return res.json()["model_version"]


# ------------------------------------------------------------------ the token -----
def test_admin_is_404_without_a_configured_token(live_server) -> None:
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        res = client.post("/admin/reload", json={"model": "run_b"})
        assert res.status_code == 404
        res = client.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert res.status_code == 404


def test_token_missing_is_401_and_wrong_is_403(
    server: str, admin: httpx.Client, versions, caplog: pytest.LogCaptureFixture
) -> None:
    with httpx.Client(base_url=server, timeout=30) as anonymous:
        res = anonymous.post("/admin/reload", json={"model": "run_b"})
        assert res.status_code == 401 and res.headers["www-authenticate"].startswith("Bearer")
        basic = {"Authorization": "Basic YWRtaW46YWRtaW4="}
        assert anonymous.post("/admin/reload", headers=basic).status_code == 401
        with caplog.at_level(logging.DEBUG):
            for wrong in (TOKEN[:-1], TOKEN + "x", "x" * len(TOKEN), TOKEN.upper()):
                res = anonymous.post(
                    "/admin/reload",
                    json={"model": "run_b"},
                    headers={"Authorization": f"Bearer {wrong}"},
                )
                assert res.status_code == 403 and res.json() == {"detail": "wrong admin token"}
        assert TOKEN not in caplog.text and TOKEN not in repr(AdminAuth(TOKEN))
    assert serving(admin) == versions["a"]  # nothing was swapped
    res = admin.post("/admin/reload", json={"model": "run_b"})
    assert res.status_code == 200 and res.json()["model_version"] == versions["b"]


def test_tokens_must_be_long_printable_and_are_never_echoed(synthetic_runs, monkeypatch) -> None:
    from adrank.serve.app import create_app

    for bad in ("short", "with a space in it!!", "tab\tinside-the-token-x"):
        with pytest.raises(ValueError, match="admin token") as err:
            create_app(synthetic_runs.run_a, admin_token=bad, torch_threads=None)
        assert bad not in str(err.value)
    monkeypatch.setenv("ADRANK_ADMIN_TOKEN", "tiny-token")
    with pytest.raises(ServeCommandError, match="ADRANK_ADMIN_TOKEN") as err:
        run_serve(synthetic_runs.run_a, port=0)
    assert "tiny-token" not in str(err.value)


# ------------------------------------------------------------------ the model root -----
@pytest.mark.parametrize(
    ("reference", "status", "reason"),
    [
        ("/etc", 403, "absolute"),
        ("~/models", 403, "absolute or home"),
        ("../current", 403, "leaves the model root"),
        ("versioned/../../x", 403, "leaves the model root"),
        ("escape", 403, "resolves outside the model root"),
        ("escape/", 403, "resolves outside the model root"),
        ("", 422, "empty"),
        ("a//b", 422, "empty path component"),
        ("bad\\name", 422, "'\\\\'"),
        ("no_such_model", 409, "no model 'no_such_model' under the model root"),
    ],
)
def test_references_outside_the_root_are_refused(
    admin: httpx.Client, versions, reference: str, status: int, reason: str
) -> None:
    res = admin.post("/admin/reload", json={"model": reference})
    assert res.status_code == status, res.text
    assert reason in res.text
    assert serving(admin) == versions["a"]


def test_versioned_models_follow_latest(admin: httpx.Client, model_root: Path, versions) -> None:
    res = admin.post("/admin/reload", json={"model": "versioned"})
    assert res.status_code == 200 and res.json()["model_version"] == versions["a"]
    assert res.json()["run_dir"] == str(model_root / "versioned" / "1")
    assert (
        admin.post("/admin/reload", json={"model": "versioned/2"}).json()["model_version"]
        == versions["b"]
    )
    assert (
        admin.post("/admin/reload", json={"model": "versioned/latest"}).json()["model_version"]
        == versions["a"]
    )
    set_latest(model_root / "versioned", 2)  # what `adrank publish` does after writing 2/
    try:
        res = admin.post("/admin/reload")  # no body: the serving reference, resolved again
        assert res.json()["model_version"] == versions["b"]
        assert res.json()["model_reference"] == "versioned/latest"
    finally:
        set_latest(model_root / "versioned", 1)


def test_model_root_resolution(model_root: Path) -> None:
    root = ModelRoot(model_root)
    assert root.resolve("current") == (model_root / "current").resolve()
    assert root.resolve("versioned") == (model_root / "versioned" / "1").resolve()
    assert root.versions(model_root / "versioned") == [1, 2]
    (model_root / "versioned" / "latest").unlink()
    try:  # no pointer: the highest version
        assert root.resolve("versioned") == (model_root / "versioned" / "2").resolve()
    finally:
        set_latest(model_root / "versioned", 1)
    with pytest.raises(OutsideModelRoot):
        root.resolve(str(model_root / "current"))
    with pytest.raises(BadModelReference):
        root.resolve("a\nb")
    with pytest.raises(ModelNotFound):
        root.resolve("versioned/7")
    with pytest.raises(FileNotFoundError):
        set_latest(model_root / "versioned", 7)
    around, reference = ModelRoot.around(model_root / "current")
    assert (around.path, reference) == (root.path, "current")


# ------------------------------------------------------------------ the swap gate -----
@pytest.mark.parametrize(
    ("reference", "reason"),
    [
        ("truncated", "cannot load truncated: model.pt is not a torch weights file ("),
        ("random", "cannot load random: model.pt is not a torch weights file (4096 bytes"),
        ("missing", "is incomplete: missing ['feature_map.json']"),
        ("nan", "the smoke prediction gave pctr = nan (non-finite)"),
        ("other_schema", "features: 'hist' was {"),
    ],
)
def test_corrupt_or_mismatched_models_are_409_and_the_old_one_serves(
    admin: httpx.Client, versions, reference: str, reason: str
) -> None:
    res = admin.post("/admin/reload", json={"model": reference})
    assert res.status_code == 409, res.text
    detail = res.json()["detail"]
    assert detail.startswith(f"reload refused, still serving {versions['a']}: ")
    assert reason in detail
    assert serving(admin) == versions["a"]
    metrics = admin.get("/metrics").text
    refused = next(ln for ln in metrics.splitlines() if ln.startswith("adrank_model_reloads_ref"))
    assert int(refused.split()[-1]) >= 1


def test_the_gate_compares_schemas_not_vocabularies(
    admin: httpx.Client, synthetic_runs, variant_runs, versions
) -> None:
    res = admin.post("/admin/reload", json={"model": "grown"})  # new users and sites
    assert res.status_code == 200, res.text
    assert res.json()["model_version"] == versions["grown"]
    assert serving(admin) == versions["grown"]
    a = Predictor.load(synthetic_runs.run_a)
    other = Predictor.load(variant_runs.other_schema)
    diffs = signature_differences(serving_signature(a), serving_signature(other))
    assert diffs == [
        "features: 'hist' was {'source': 'hist', 'kind': 'SequenceFeature', 'max_len': 5, "
        "'delimiter': '|'}, is {'source': 'hist', 'kind': 'SequenceFeature', 'max_len': 3, "
        "'delimiter': '|'}"
    ]
    grown = Predictor.load(variant_runs.grown)
    assert a.processor.vocab_["user"] != grown.processor.vocab_["user"]
    assert signature_differences(serving_signature(a), serving_signature(grown)) == []
    with pytest.raises(SwapRefused, match="reads or gives other fields than the serving model"):
        load_checked(variant_runs.other_schema, a)
    assert load_checked(variant_runs.grown, a).version == versions["grown"]


# ------------------------------------------------------------------ the bind address -----
def test_binding_a_non_loopback_address_warns(caplog: pytest.LogCaptureFixture) -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
    with caplog.at_level(logging.WARNING, logger="adrank.serve.admin"):
        assert not warn_if_exposed("127.0.0.1")
        assert caplog.records == []
        assert warn_if_exposed("0.0.0.0")
        assert warn_if_exposed("::")
    assert len(caplog.records) == 2
    assert "TLS-terminating, authenticating reverse proxy" in caplog.records[0].getMessage()
    assert "0.0.0.0" in caplog.records[0].getMessage()


def test_serve_warns_before_binding_everywhere(synthetic_runs, monkeypatch, caplog) -> None:
    import uvicorn

    from adrank.serve.app import serve

    bound: list[str] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, **kw: bound.append(host))
    with caplog.at_level(logging.WARNING, logger="adrank.serve.admin"):
        serve(synthetic_runs.run_a, "0.0.0.0", 0, torch_threads=None)
    assert bound == ["0.0.0.0"]
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "not a loopback address" in caplog.records[0].getMessage()


def test_reload_refusals_are_logged_and_a_text_body_is_a_415(synthetic_runs, tmp_path, caplog):
    """A refused reload (409/403) left no line in the server's log, and a text/plain body
    got a 422 showing a Python bytes repr (/v1/* answered 415)."""
    import logging

    from fastapi.testclient import TestClient

    from adrank.serve.app import create_app

    app = create_app(synthetic_runs.run_a, torch_threads=None, admin_token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with TestClient(app) as client, caplog.at_level(logging.WARNING, "adrank.serve.holder"):
        res = client.post("/admin/reload", json={"model": "../../etc"}, headers=auth)
        assert res.status_code == 403
        assert "reload of '../../etc' refused" in caplog.text
        res = client.post(
            "/admin/reload",
            content=b'{"model": "x"}',
            headers=auth | {"Content-Type": "text/plain"},
        )
        assert res.status_code == 415 and "application/json" in res.json()["detail"]
        assert client.post("/admin/reload", headers=auth).status_code == 200  # no body at all
