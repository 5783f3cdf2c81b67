"""``benchmarks/sequence_peer.py``: the export of adrank's prepared ``movielens_100k`` splits
for a peer's DIN (ids, histories, lengths, labels, gAUC groups) on tiny hand-made raw
files, the re-alignment and gAUC helpers of ``benchmarks/peers``, and one DeepCTR-Torch
epoch on the export when the peers' venv exists."""

from __future__ import annotations

import gzip
import importlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from adrank.data.prepare import prepare_dataset
from adrank.metrics import gauc
from benchmarks import sequence_peer

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "benchmarks" / "peers"
VENV_PY = ROOT / "benchmarks" / ".peers-venv" / "bin" / "python"
USERS, RATINGS = 5, 20  # each user: 16 train, 2 valid, 2 test ratings (10 % each, rounded)


def _write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(r) for r in [header, *rows]]
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))


def _raw_movielens(root: Path) -> dict[tuple[str, int], int]:
    """Tiny raw MovieLens files; returns {(user, k-th rating): rating}."""
    d = root / "movielens_100k"
    rows, ratings = [], {}
    for u in range(1, USERS + 1):
        for k in range(RATINGS):
            rating = 5 if (k + u) % 2 else 2
            item = 1 + (3 * u + k) % 30
            rows.append([str(u), str(item), str(rating), str(1000 * k + u)])
            ratings[(str(u), k)] = rating
    _write(d / "ml-100k.inter.gz",
           ["user_id:token", "item_id:token", "rating:float", "timestamp:float"], rows)  # fmt: skip
    _write(d / "ml-100k.user.gz",
           ["user_id:token", "age:token", "gender:token", "occupation:token", "zip_code:token"],
           [[str(u), str(20 + u), "MF"[u % 2], "writer", f"0{u}000"]
            for u in range(1, USERS + 1)])  # fmt: skip
    genres = ("Comedy", "Action Drama", "Horror")
    _write(d / "ml-100k.item.gz",
           ["item_id:token", "movie_title:token_seq", "release_year:token", "class:token_seq"],
           [[str(i), f"M{i}", str(1990 + i % 4), genres[i % 3]] for i in range(1, 31)])  # fmt: skip
    return ratings


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("seqpeer")
    ratings = _raw_movielens(root)
    info = sequence_peer.export_sequence_splits(
        root / "export", data_dir=str(root), cache_dir=str(root / "cache")
    )
    prepared = prepare_dataset("movielens_100k", data_dir=root, cache_dir=root / "cache")
    splits = {}
    for split, path in info["paths"].items():
        with np.load(path) as z:
            splits[split] = {k: z[k] for k in z.files}
    return {"info": info, "splits": splits, "prepared": prepared, "ratings": ratings}


def test_export_writes_adrank_ids_histories_lengths_labels_and_groups(
    exported: dict[str, Any],
) -> None:
    info, splits, prepared = exported["info"], exported["splits"], exported["prepared"]
    assert info["rows"] == {"train": 16 * USERS, "valid": 2 * USERS, "test": 2 * USERS}
    fields = ["user_id", "item_id", "age", "gender", "occupation", "zip_code", "release_year",
              "genre"]  # fmt: skip
    fm = prepared.feature_map
    for split, z in splits.items():
        n = info["rows"][split]
        assert z["fields"].tolist() == fields
        assert z["vocab_sizes"].tolist() == [fm.field(f).vocab_size for f in fields]
        assert z["sequences"].tolist() == ["hist_item_id", "hist_genre"]
        assert z["sequence_tables"].tolist() == ["item_id", "genre"]
        assert int(z["max_len"]) == 50 and str(z["target_field"]) == "item_id"
        assert z["x"].shape == (n, 8) and z["x"].dtype == np.int64
        assert z["seq_hist_item_id"].shape == z["seq_hist_genre"].shape == (n, 50)
        assert z["hist_len"].tolist() == (z["seq_hist_item_id"] != 0).sum(axis=1).tolist()
        assert ((z["seq_hist_genre"] != 0) == (z["seq_hist_item_id"] != 0)).all()
        # the same rows and ids as adrank's prepared Parquet, in its order
        table = pq.read_table(prepared.splits[split])
        for i, f in enumerate(fields):
            assert z["x"][:, i].tolist() == table.column(f).to_pylist()
        assert z["seq_hist_item_id"].tolist() == table.column("hist_item_id").to_pylist()
        assert z["target"].tolist() == table.column("item_id").to_pylist()
        assert z["y"].tolist() == table.column("like").to_pylist()
        assert z["group"].tolist() == table.column("__group__").to_pylist()
        assert len(set(z["group"].tolist())) == len(set(z["user"].tolist())) == USERS
    # every user's k-th rating has the k earlier ones as history: 0..15 train, 16-17, 18-19
    lengths = {s: sorted(z["hist_len"].tolist()) for s, z in splits.items()}
    assert lengths["train"] == sorted(list(range(16)) * USERS)
    assert lengths["valid"] == sorted([16, 17] * USERS)
    assert lengths["test"] == sorted([18, 19] * USERS)
    # left padding, newest last: each history ends with the user's previous target
    rows = {}
    for z in splits.values():
        for user, k, target, hist in zip(
            z["user"], z["hist_len"], z["target"], z["seq_hist_item_id"], strict=True
        ):
            rows[(int(user), int(k))] = (int(target), hist)
    for (user, k), (_, hist) in rows.items():
        if k:
            assert hist[-1] == rows[(user, k - 1)][0] and (hist[: 50 - k] == 0).all()
    # labels: like = rating >= 4, per (raw user, k)
    likes = sorted(v >= 4 for v in exported["ratings"].values())
    assert sorted(np.concatenate([z["y"] for z in splits.values()]).tolist()) == likes


def test_history_lengths_rejects_padding_inside_a_history() -> None:
    ids = np.array([[0, 0, 3, 4], [5, 6, 0, 0], [0, 0, 0, 0], [1, 0, 2, 0]])
    with pytest.raises(ValueError, match="row 3: padding inside"):
        sequence_peer.history_lengths(ids)
    assert sequence_peer.history_lengths(ids[:3]).tolist() == [2, 2, 0]


def _peer_module(monkeypatch: pytest.MonkeyPatch, name: str) -> Any:
    monkeypatch.syspath_prepend(str(PEERS))
    return importlib.import_module(name)


def test_realignment_and_gauc_helpers(
    exported: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    din_run = _peer_module(monkeypatch, "din_run")
    common = _peer_module(monkeypatch, "common")
    z = exported["splits"]["train"]
    main, lengths = z["seq_hist_item_id"], z["hist_len"]
    for name in ("seq_hist_item_id", "seq_hist_genre"):
        out = din_run.right_aligned(z[name], lengths, main)
        for row, k, src in zip(out, lengths, z[name], strict=True):
            assert row[:k].tolist() == src[50 - k :].tolist() and (row[k:] == 0).all()
    right = np.array([[7, 8, 0], [0, 0, 0]])
    assert din_run.right_aligned(right, np.array([2, 0]), right).tolist() == [[7, 8, 0], [0] * 3]
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    p = rng.integers(0, 5, 400) / 5.0  # ties
    groups = rng.integers(0, 30, 400) * 104729
    assert common.gauc(y, p, groups) == pytest.approx(gauc(y, p, groups), abs=1e-12)


@pytest.mark.slow  # a second interpreter imports torch and DeepCTR-Torch
@pytest.mark.skipif(not VENV_PY.exists(), reason="benchmarks/.peers-venv is absent")
def test_deepctr_din_trains_one_epoch_on_the_export(
    exported: dict[str, Any], tmp_path: Path
) -> None:
    spec = {
        "model": "din",
        "params": {"embedding_dim": 4, "attention_hidden_units": [8],
                   "attention_activation": "dice", "attention_softmax": False,
                   "hidden_units": [16, 8], "net_dropout": 0.1, "batch_norm": True},
        "data": exported["info"]["paths"], "epochs": 1, "batch_size": 32,
        "learning_rate": 1e-3, "embedding_regularizer": 0.01, "grad_clip_norm": 10.0,
        "seed": 2021, "threads": 1, "repeats": 1, "converge": True, "patience": 2,
    }  # fmt: skip
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(VENV_PY), str(PEERS / "din_run.py"), str(path)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    result = json.loads(lines[-1][len("RESULT ") :])
    assert result["framework"] == "deepctr_torch" and result["version"] == "0.3.0"
    (run,) = result["runs"]
    assert run["train_rows"] == 16 * USERS and run["best_epoch"] == 1
    for key in ("test_auc", "test_gauc", "valid_auc"):
        assert 0.0 <= run[key] <= 1.0
    assert np.isfinite(run["test_logloss"]) and result["differences"]
