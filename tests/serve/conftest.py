"""Fixtures for the serving tests.

* ``synthetic_runs``: two small DeepFM runs (different seeds) on a generated ad-click set
  with every feature kind (vocabulary and hashed categoricals, numeric, bucketized numeric,
  sequence); needs no external data, so the HTTP tests always run.
* ``frappe_run``: a small DeepFM trained for one epoch on the real frappe data (skipped when
  ``ADRANK_DATA_DIR`` is unset), for calibration and export parity on real rows.
* ``live_server``: a real uvicorn server on 127.0.0.1 (free port) in a background thread.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import polars as pl
import pytest
import torch

from adrank.config import RunConfig, TrainConfig
from adrank.data.prepare import PreparedData, prepare_dataset, prepare_frames
from adrank.data.schema import CategoricalFeature, NumericFeature, Schema, SequenceFeature
from adrank.pipeline import train_run


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Serving runs torch single-threaded per request; so do these tests (small batches on a
    shared machine are slower with intra-op threads). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SYNTHETIC_SCHEMA = Schema(
    labels=("click",),
    features=(
        CategoricalFeature("user"),
        CategoricalFeature("ad"),
        CategoricalFeature("creative"),
        CategoricalFeature("site", hash_buckets=16),
        NumericFeature("price", normalizer="standard", fill_value=1.0),
        NumericFeature("age", buckets=4),
        SequenceFeature("hist", max_len=5, share_vocab_with="ad"),
    ),
    name="synthetic_ads",
)


def synthetic_frame(rows: int, seed: int) -> pl.DataFrame:
    """Clicks driven by the ad, the creative and the price (so a model learns something)."""
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 50, rows)
    ad = rng.integers(0, 30, rows)
    creative = rng.integers(0, 3, rows)
    price = rng.gamma(2.0, 2.0, rows)
    logit = (ad % 5 - 2) * 0.8 + (creative == 1) * 1.0 - 0.1 * price
    click = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    hist = ["|".join(str(x) for x in rng.integers(0, 30, rng.integers(0, 8))) for _ in range(rows)]
    return pl.DataFrame(
        {
            "click": click,
            "user": [f"u{x}" for x in user],
            "ad": [str(x) for x in ad],
            "creative": [f"{a}-{c}" for a, c in zip(ad, creative, strict=True)],
            "site": [f"s{x}" for x in rng.integers(0, 10, rows)],
            "price": price,
            "age": rng.integers(18, 70, rows).astype(np.float64),
            "hist": hist,
        }
    )


@dataclass
class SyntheticRuns:
    prepared: PreparedData
    run_a: Path
    run_b: Path
    raw_test: pl.DataFrame


def _train(prepared: PreparedData, run_dir: Path, seed: int, dataset: str | None = None) -> Path:
    config = RunConfig(
        model="deepfm",
        dataset=dataset,
        params={"embedding_dim": 4, "hidden_units": [16], "net_dropout": 0.0},
        train=TrainConfig(
            max_epochs=1, batch_size=256, learning_rate=3e-3, progress=False, seed=seed
        ),
    )
    train_run(config, run_dir, prepared=prepared)
    return run_dir


@pytest.fixture(scope="session")
def synthetic_runs(tmp_path_factory: pytest.TempPathFactory) -> SyntheticRuns:
    root = tmp_path_factory.mktemp("synthetic")
    splits = {
        "train": synthetic_frame(6000, 1),
        "valid": synthetic_frame(2000, 2),
        "test": synthetic_frame(2000, 3),
    }
    prepared = prepare_frames(SYNTHETIC_SCHEMA, splits, root / "prepared")
    run_a = _train(prepared, root / "run_a", seed=1)
    run_b = _train(prepared, root / "run_b", seed=2)
    return SyntheticRuns(prepared, run_a, run_b, splits["test"])


@pytest.fixture(scope="session")
def frappe_run(data_dir: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small DeepFM, one epoch on real frappe (a few seconds)."""
    prepared = prepare_dataset("frappe", data_dir=data_dir, cache_dir=cache_dir)
    config = RunConfig(
        model="deepfm",
        dataset="frappe",
        params={"embedding_dim": 10, "hidden_units": [64, 64], "batch_norm": True},
        train=TrainConfig(max_epochs=1, embedding_regularizer=0.01, progress=False, seed=7),
    )
    run_dir = tmp_path_factory.mktemp("serve-frappe") / "deepfm"
    train_run(config, run_dir, prepared=prepared)
    return run_dir


class LiveServer:
    """uvicorn serving ``app`` on 127.0.0.1 at a free port, in a daemon thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        self.app = app
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def server_class() -> type[LiveServer]:
    """:class:`LiveServer`, for tests that need a server of their own."""
    return LiveServer


@pytest.fixture(scope="module")
def live_server(synthetic_runs: SyntheticRuns) -> Iterator[LiveServer]:
    from adrank.serve.app import create_app

    app = create_app(
        synthetic_runs.run_a,
        max_candidates=50,
        max_records=200,
        max_body_bytes=64 * 1024,
        torch_threads=None,  # leave the test process's torch settings alone
    )
    with LiveServer(app) as server:
        yield server


@pytest.fixture(scope="module")
def conn(live_server: LiveServer) -> Iterator[http.client.HTTPConnection]:
    """A keep-alive HTTP connection to :func:`live_server`, for raw (non-standard) bodies."""
    url = urlsplit(live_server.url)
    c = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    yield c
    c.close()


@dataclass
class VariantRuns:
    """Runs for the swap gate: ``grown`` has the synthetic schema but a larger vocabulary
    (new users and sites, as after another publish); ``other_schema`` reads ``hist`` with
    another length (an input-schema change)."""

    grown: Path
    other_schema: Path


@pytest.fixture(scope="session")
def variant_runs(tmp_path_factory: pytest.TempPathFactory) -> VariantRuns:
    from dataclasses import replace

    root = tmp_path_factory.mktemp("variants")
    frames = {name: synthetic_frame(2000, seed) for name, seed in (("train", 4), ("valid", 5))}
    frames["test"] = synthetic_frame(500, 6)
    grown = {
        name: frame.with_columns(
            pl.concat_str([pl.lit("new-"), pl.col("user")]).alias("user"),
            pl.concat_str([pl.lit("new-"), pl.col("site")]).alias("site"),
        )
        for name, frame in frames.items()
    }
    grown_prepared = prepare_frames(SYNTHETIC_SCHEMA, grown, root / "prepared-grown")
    features = tuple(
        replace(f, max_len=3) if isinstance(f, SequenceFeature) else f
        for f in SYNTHETIC_SCHEMA.features
    )
    other = Schema(labels=("click",), features=features, name="synthetic_ads")
    other_prepared = prepare_frames(other, frames, root / "prepared-other")
    return VariantRuns(
        grown=_train(grown_prepared, root / "grown", seed=3),
        other_schema=_train(other_prepared, root / "other_schema", seed=3),
    )


@pytest.fixture(scope="session")
def larger_vocab_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DeepFM on the synthetic schema trained on more rows, 2,000 of them from 50 new users
    and 10 new sites: the vocabularies of ``synthetic_runs.run_a`` plus new ids, as after a
    later publish in incremental training."""
    root = tmp_path_factory.mktemp("larger-vocab")
    newcomers = synthetic_frame(2000, 7).with_columns(
        pl.concat_str([pl.lit("new-"), pl.col("user")]).alias("user"),
        pl.concat_str([pl.lit("new-"), pl.col("site")]).alias("site"),
    )
    splits = {
        "train": pl.concat([synthetic_frame(6000, 1), newcomers]),
        "valid": synthetic_frame(2000, 2),
        "test": synthetic_frame(2000, 3),
    }
    prepared = prepare_frames(SYNTHETIC_SCHEMA, splits, root / "prepared")
    return _train(prepared, root / "run", seed=5)
