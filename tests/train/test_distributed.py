"""Multi-process training on torch.distributed: real worker processes, gloo on CPU.

Workers are started by :func:`adrank.train.launch.launch` (torch's elastic launcher, the
machinery of ``torchrun``); the worker functions below are module-level so the spawned
processes can import them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from adrank.config import TrainConfig, resolve_run_config
from adrank.data.batches import Batch, InMemoryLoader, ParquetStreamLoader, TensorData
from adrank.data.feature_map import FeatureMap, FieldInfo, RoleInfo, TaskInfo
from adrank.data.prepare import prepare_dataset
from adrank.models import available_models, build_model, get_model_class
from adrank.models.multitask import MultiTaskModel
from adrank.models.sequence_base import SequenceModel
from adrank.pipeline import train_run
from adrank.train import Callback, Trainer, evaluate
from adrank.train.distributed import (
    all_gather_arrays,
    barrier,
    get_rank,
    init_distributed,
    local_batch_size,
    shutdown_distributed,
)
from adrank.train.evaluation import (
    Predictions,
    as_eval_loader,
    collect_predictions,
    gather_predictions,
)
from adrank.train.launch import launch, launch_cli
from adrank.utils import seed_everything

pytestmark = pytest.mark.slow

VOCAB = (30, 20, 8, 5)
#: f3 is also the domain role, for the multi-domain models (the others ignore it)
ROLES = {"domain": RoleInfo("domain", "__domain__", "vocab", "f3", ("a", "b", "c"))}
FEATURE_MAP = FeatureMap(
    tuple(FieldInfo(f"f{i}", "categorical", v) for i, v in enumerate(VOCAB)),
    ("click",),
    roles=ROLES,
)
#: for multi-task models: click and a conversion task given click
FUNNEL_MAP = FeatureMap(
    FEATURE_MAP.fields,
    ("click", "conversion"),
    tasks=(TaskInfo("click", "click", output="pctr"),
           TaskInfo("conversion", "conversion", given="click", output="pcvr")),
    roles=ROLES,
)  # fmt: skip
#: for behaviour-sequence models: a history of f1 ids (its target) with each f1's f2 aligned
SEQUENCE_MAP = FeatureMap(
    (*FEATURE_MAP.fields,
     FieldInfo("hist_f1", "sequence", max_len=4, embedding_group="f1", target="f1"),
     FieldInfo("hist_f2", "sequence", max_len=4, embedding_group="f2", aligned_with="hist_f1")),
    ("click",),
    roles=ROLES,
)  # fmt: skip
TIMING_KEYS = {"epoch_time_s", "train_time_s", "eval_time_s", "train_samples_per_s"}


def make_data(n: int, seed: int) -> TensorData:
    """Labels drawn from a hidden additive logit over the fields; group ids for gAUC."""
    gen = torch.Generator().manual_seed(seed)
    features = {f"f{i}": torch.randint(2, v, (n,), generator=gen) for i, v in enumerate(VOCAB)}
    weights = [torch.randn(v, generator=torch.Generator().manual_seed(50 + i)) * 1.5
               for i, v in enumerate(VOCAB)]  # fmt: skip
    logit = sum(w[features[f"f{i}"]] for i, w in enumerate(weights))
    labels = (torch.rand(n, generator=gen) < torch.sigmoid(logit)).float()
    group = torch.randint(0, 15, (n,), generator=gen)
    return TensorData(Batch(features, labels[:, None], group))


def with_conversion(data: TensorData) -> TensorData:
    """``data`` plus a conversion label (a click on an even f1), for :data:`FUNNEL_MAP`."""
    batch = data.data
    click = batch.labels[:, 0]
    conversion = click * (batch.features["f1"] % 2 == 0).float()
    return TensorData(Batch(batch.features, torch.stack([click, conversion], 1), roles=batch.roles))


def with_history(data: TensorData, seed: int) -> TensorData:
    """``data`` plus left-padded f1/f2 histories (some empty), for :data:`SEQUENCE_MAP`."""
    batch = data.data
    n = batch.labels.shape[0]
    gen = torch.Generator().manual_seed(seed)
    real = torch.arange(4) >= 4 - torch.randint(0, 5, (n, 1), generator=gen)
    history = {
        "hist_f1": torch.randint(2, VOCAB[1], (n, 4), generator=gen) * real,
        "hist_f2": torch.randint(2, VOCAB[2], (n, 4), generator=gen) * real,
    }
    return TensorData(Batch({**batch.features, **history}, batch.labels, roles=batch.roles))


def small_config(**overrides: Any) -> TrainConfig:
    base = {"batch_size": 128, "learning_rate": 1e-2, "max_epochs": 2, "progress": False,
            "seed": 3, "eval_batch_size": 256}  # fmt: skip
    return TrainConfig(**{**base, **overrides})


def new_deepfm() -> torch.nn.Module:
    seed_everything(0)
    return build_model("deepfm", FEATURE_MAP, hidden_units=[16], net_dropout=0.1, batch_norm=True)


def without_timing(line: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in line.items() if k not in TIMING_KEYS}


def state_digest(model: torch.nn.Module) -> list[float]:
    return [float(v.double().sum()) for v in model.state_dict().values()]


# ----------------------------------------------------------------------------- workers
def collectives_worker(tmp: str) -> dict[str, Any]:
    """Gathers, sharded evaluation, rank-0-only files and DDP over every registered model."""
    ctx = init_distributed("cpu", timeout_s=30)
    rank, out = ctx.rank, {}
    try:
        rows = np.arange(10, dtype=np.float32).reshape(5, 2) + 100 * rank
        out["gathered"] = all_gather_arrays(rows[: 5 - 2 * rank])  # 5 rows and 3 rows
        out["gathered_with_empty"] = all_gather_arrays(
            np.array([7, 8, 9], dtype=np.int64) if rank == 0 else None
        )
        local = Predictions(
            np.full(2 + rank, rank, np.float32), np.ones((2 + rank, 1), np.float32), None
        )
        out["predictions"] = gather_predictions(local)

        data, valid = make_data(1200, seed=1), make_data(301, seed=2)  # 301: uneven shards
        model = new_deepfm()
        trainer = Trainer(model, small_config(), Path(tmp) / f"rank{rank}")
        result = trainer.fit(data, valid, test=valid)
        out["test"] = result.test
        out["history"] = result.history
        out["state"] = {k: v.clone() for k, v in model.state_dict().items()}
        # A stream of batches: every rank evaluates every 2nd batch; 1 batch leaves rank 1
        # with none.
        batches = list(InMemoryLoader(valid, 128))
        out["stream_metrics"] = trainer.evaluate(as_eval_loader(batches, 128, rank, 2))
        out["one_batch_metrics"] = trainer.evaluate(as_eval_loader(batches[:1], 128, rank, 2))

        # Streaming: each rank reads its own row groups of a Parquet file (6 of 12).
        path = Path(tmp) / "train.parquet"
        if rank == 0:
            columns = {k: v.numpy() for k, v in data.data.features.items()}
            columns["click"] = data.data.labels[:, 0].numpy()
            pq.write_table(pa.table(columns), path, row_group_size=100)
        barrier()
        stream = ParquetStreamLoader(path, FEATURE_MAP, 64, shuffle=True, seed=1, rank=rank,
                                     world_size=2)  # fmt: skip
        streamed = Trainer(new_deepfm(), small_config(max_epochs=1)).fit(stream, valid)
        out["stream_history"] = streamed.history
        try:  # a loader sharded for one process is refused on a 2-process job
            Trainer(new_deepfm(), small_config()).fit(InMemoryLoader(data, 64))
        except ValueError as exc:
            out["mismatch_error"] = str(exc)

        out["models"] = {}
        for name in [*available_models(), "deepfm+unused"]:
            seed_everything(0)
            base = name.split("+")[0]
            funnel = issubclass(get_model_class(base), MultiTaskModel)
            sequence = issubclass(get_model_class(base), SequenceModel)
            fmap = FUNNEL_MAP if funnel else SEQUENCE_MAP if sequence else FEATURE_MAP
            m = build_model(base, fmap)
            if name.endswith("+unused"):  # a parameter the loss never reaches
                m.unused = torch.nn.Linear(2, 2)
            data = with_conversion(make_data(512, 4)) if funnel else make_data(512, 4)
            data = with_history(data, 5) if sequence else data
            Trainer(m, small_config(max_epochs=1, learning_rate=1e-3)).fit(data)
            out["models"][name] = state_digest(m)
    finally:
        shutdown_distributed()
    return out


class KillRank(Callback):
    """Ends rank ``rank`` abruptly (like an OOM kill) when ``epoch`` begins."""

    def __init__(self, rank: int, epoch: int) -> None:
        self.rank, self.epoch = rank, epoch

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        if epoch == self.epoch and get_rank() == self.rank:
            os._exit(13)


def resumable_worker(run_dir: str, kill_epoch: int) -> None:
    """Train 3 epochs with resume=True; rank 1 dies when ``kill_epoch`` begins (0: never)."""
    init_distributed("cpu")
    try:
        callbacks = [KillRank(1, kill_epoch)] if kill_epoch else []
        trainer = Trainer(new_deepfm(), small_config(max_epochs=3), run_dir, callbacks)
        trainer.fit(make_data(1200, seed=1), make_data(300, seed=2), resume=True)
    finally:
        shutdown_distributed()


# ------------------------------------------------------------------------------- tests
def test_global_batch_size_must_divide() -> None:
    assert local_batch_size(4096, 2) == 2048
    assert local_batch_size(4096, 1) == 4096
    with pytest.raises(ValueError, match=r"batch_size=4097 .* divisible by the number of proc"):
        local_batch_size(4097, 2)


def test_eval_shards_cover_every_row_once() -> None:
    data = make_data(11, seed=0)
    ids: list[int] = []
    for rank in range(3):
        for batch in as_eval_loader(data, 2, rank, 3):
            ids += batch.features["f0"].tolist()
    assert sorted(ids) == sorted(data.data.features["f0"].tolist())
    batches = list(InMemoryLoader(data, 4))  # 3 batches
    per_rank = [list(as_eval_loader(batches, 4, rank, 2)) for rank in range(2)]
    assert [len(b) for b in per_rank] == [2, 1]
    empty = collect_predictions(new_deepfm(), [], allow_empty=True)
    assert empty.probs.shape == (0,)
    with pytest.raises(ValueError, match="no batches"):
        collect_predictions(new_deepfm(), [])


def test_launch_cli_refuses_nested_nproc() -> None:
    with pytest.raises(ValueError, match="--nproc"):
        launch_cli(2, ["train", "--nproc", "2"])


def test_two_workers_gather_evaluate_and_write_only_on_rank_0(tmp_path: Path) -> None:
    results = launch(2, collectives_worker, (str(tmp_path),), timeout_s=60)
    r0, r1 = results[0], results[1]
    expected = np.concatenate([np.arange(10).reshape(5, 2), np.arange(6).reshape(3, 2) + 100])
    for r in (r0, r1):
        np.testing.assert_array_equal(r["gathered"], expected)
        np.testing.assert_array_equal(r["gathered_with_empty"], [7, 8, 9])
        np.testing.assert_array_equal(r["predictions"].probs, [0, 0, 1, 1, 1])
        assert r["predictions"].labels.shape == (5, 1) and r["predictions"].groups is None
    # Same weights, metrics and early-stopping path on both ranks.
    for key, value in r0["state"].items():
        torch.testing.assert_close(r1["state"][key], value, rtol=0, atol=0)
    assert r0["test"] == r1["test"]
    assert [h["val_auc"] for h in r0["history"]] == [h["val_auc"] for h in r1["history"]]
    # Metrics of the gathered shards = metrics of the whole split in one process.
    model = new_deepfm()
    model.load_state_dict(r0["state"])
    batches = list(InMemoryLoader(make_data(301, seed=2), 128))
    whole, first = evaluate(model, batches), evaluate(model, batches[:1])
    pairs = [(r0["test"], whole), (r0["stream_metrics"], whole), (r0["one_batch_metrics"], first)]
    for got, expected in pairs:
        assert got["auc"] == pytest.approx(expected["auc"], abs=1e-12)
        assert got["gauc"] == pytest.approx(expected["gauc"], abs=1e-12)
        assert got["logloss"] == pytest.approx(expected["logloss"], abs=1e-7)
    # Every history line counts the samples of both ranks (1200 // 2 per rank).
    assert {h["train_samples"] for h in r0["history"]} == {1200}
    assert r0["stream_history"][0]["train_samples"] == 1200
    assert [without_timing(h) for h in r0["stream_history"]] == [
        without_timing(h) for h in r1["stream_history"]
    ]
    for r in (r0, r1):
        assert "sharded for rank 0 of 1" in r["mismatch_error"]
    # Only rank 0 wrote files (the marker: the Trainer claims a new run_dir).
    assert sorted(p.name for p in (tmp_path / "rank0").iterdir()) == [
        ".adrank", "best.pt", "checkpoint.pt", "metrics.jsonl"
    ]  # fmt: skip
    assert not (tmp_path / "rank1").exists()
    # Every registered model trains under DDP (no unused-parameter errors), ranks agree.
    assert sorted(r0["models"]) == sorted([*available_models(), "deepfm+unused"])
    for name, digest in r0["models"].items():
        assert digest == r1["models"][name], name


def _run_launch_in_subprocess(run_dir: Path, kill_epoch: int) -> subprocess.CompletedProcess:
    """The launcher in its own process, so a hang would fail the test instead of blocking."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from adrank.train.launch import DistributedTrainingError, launch
        import test_distributed as t
        try:
            launch(2, t.resumable_worker, ({str(run_dir)!r}, {kill_epoch}), timeout_s=20)
        except DistributedTrainingError as exc:
            print(f"FAILED rank={{exc.rank}} code={{exc.exit_code}}: {{exc}}", file=sys.stderr)
            sys.exit(3)
    """)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=240
    )


def _epoch_lines(run_dir: Path) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [without_timing(line) for line in lines]


def test_dead_worker_fails_the_job_and_resume_reproduces_the_run(tmp_path: Path) -> None:
    killed = _run_launch_in_subprocess(tmp_path / "killed", kill_epoch=2)
    assert killed.returncode == 3, killed.stderr[-3000:]
    assert "FAILED rank=1 code=13" in killed.stderr
    assert "worker rank 1" in killed.stderr and "exited with code 13" in killed.stderr
    assert [line["epoch"] for line in _epoch_lines(tmp_path / "killed")] == [1]

    resumed = _run_launch_in_subprocess(tmp_path / "killed", kill_epoch=0)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    straight = _run_launch_in_subprocess(tmp_path / "straight", kill_epoch=0)
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert _epoch_lines(tmp_path / "killed") == _epoch_lines(tmp_path / "straight")
    assert [line["epoch"] for line in _epoch_lines(tmp_path / "straight")] == [1, 2, 3]


# -------------------------------------------------------------------- real frappe data
FRAPPE_OVERRIDES = [
    "params.hidden_units=[64,64]",
    "params.batch_norm=true",
    "params.net_dropout=0",  # dropout noise alone moves 2-epoch AUC by ~0.003 between runs
    "train.max_epochs=2",
    "train.progress=false",
    "train.seed=2021",
]


@pytest.mark.integration
def test_two_process_deepfm_on_frappe_matches_one_process(
    data_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    prepare_dataset("frappe", data_dir=data_dir, cache_dir=cache_dir)  # workers reuse it
    config = resolve_run_config("frappe", "deepfm", None, FRAPPE_OVERRIDES)
    assert config.train.batch_size == 4096  # the global batch of both runs
    single = train_run(config, tmp_path / "single", data_dir=data_dir, cache_dir=cache_dir)

    run_dir = tmp_path / "ddp"
    argv = ["-q", "train", "--dataset", "frappe", "--model", "deepfm", "--run-dir", str(run_dir),
            "--data-dir", str(data_dir), "--cache-dir", str(cache_dir)]  # fmt: skip
    for item in FRAPPE_OVERRIDES:
        argv += ["--set", item]
    launch_cli(2, argv, timeout_s=120)

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["epochs_run"] == 2
    assert single.test["auc"] > 0.95
    assert metrics["test"]["auc"] == pytest.approx(single.test["auc"], abs=0.003)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x).get("train_samples") for x in lines[:2]] == [202_026, 202_026]
