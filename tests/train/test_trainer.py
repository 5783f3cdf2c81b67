from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from adrank.config import TrainConfig
from adrank.data.batches import Batch, InMemoryLoader, TensorData
from adrank.data.feature_map import FeatureMap, FieldInfo
from adrank.models import build_model
from adrank.models.base import CTRModel, ModelOutput
from adrank.train import (
    Callback,
    ProgressBar,
    Trainer,
    bce_loss,
    compute_metrics,
    evaluate,
    fit,
    predict,
    training_loss,
)
from adrank.train.checkpoint import load_checkpoint
from adrank.train.evaluation import Predictions
from adrank.utils import seed_everything

VOCAB = (40, 25, 12, 6)
FEATURE_MAP = FeatureMap(
    tuple(FieldInfo(f"f{i}", "categorical", v) for i, v in enumerate(VOCAB)), ("click",)
)
TIMING_KEYS = {"epoch_time_s", "train_time_s", "eval_time_s", "train_samples_per_s"}


@pytest.fixture(autouse=True)
def _restore_torch_globals() -> Iterator[None]:
    """fit() sets global torch flags (threads, determinism); keep other tests unaffected."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def make_data(n: int, seed: int, random_labels: bool = False) -> TensorData:
    """Labels from a hidden additive logit over the fields (learnable) or coin flips."""
    gen = torch.Generator().manual_seed(seed)
    features = {f"f{i}": torch.randint(2, v, (n,), generator=gen) for i, v in enumerate(VOCAB)}
    weights = [torch.randn(v, generator=torch.Generator().manual_seed(100 + i)) * 1.5
               for i, v in enumerate(VOCAB)]  # fmt: skip
    logit = sum(w[features[f"f{i}"]] for i, w in enumerate(weights))
    prob = torch.full((n,), 0.5) if random_labels else torch.sigmoid(logit)
    labels = (torch.rand(n, generator=gen) < prob).float()
    group = torch.randint(0, 20, (n,), generator=gen)
    return TensorData(Batch(features, labels[:, None], group))


def constant_valid(n: int = 200) -> TensorData:
    """Every row has the same features, so every epoch's validation AUC is exactly 0.5."""
    features = {f"f{i}": torch.full((n,), 2, dtype=torch.long) for i in range(len(VOCAB))}
    labels = (torch.arange(n) % 2).float()[:, None]
    return TensorData(Batch(features, labels))


def new_model(seed: int = 0, **params: Any) -> CTRModel:
    seed_everything(seed)
    params = {"hidden_units": [16], "net_dropout": 0.0, "batch_norm": False, **params}
    return build_model("deepfm", FEATURE_MAP, **params)


def config(**overrides: Any) -> TrainConfig:
    base = {"batch_size": 256, "learning_rate": 1e-2, "max_epochs": 3, "num_threads": 1,
            "progress": False, "seed": 7}  # fmt: skip
    return TrainConfig(**{**base, **overrides})


def untimed(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in h.items() if k not in TIMING_KEYS} for h in history]


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k].cpu(), b[k].cpu()), k


def test_learns_signal_and_reports(tmp_path: Path) -> None:
    train, valid, test = make_data(4000, 0), make_data(1000, 1), make_data(1000, 2)
    result = fit(new_model(), train, valid, config(max_epochs=4), test=test, run_dir=tmp_path)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert result.best_valid["auc"] > 0.7
    assert result.test is not None and result.test["auc"] > 0.7
    assert set(result.test) == {"auc", "logloss", "gauc", "calibration_ratio", "ece"}
    assert result.epochs_run == len(result.history) <= 4
    assert result.train_samples_per_s > 0 and result.train_time_s > 0
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines[:-1]] == list(range(1, result.epochs_run + 1))
    for line in lines[:-1]:
        assert {"train_loss", "val_auc", "val_logloss", "lr", "epoch_time_s",
                "train_samples_per_s"} <= set(line)  # fmt: skip
    assert lines[-1]["split"] == "test"
    assert lines[-1]["auc"] == pytest.approx(result.test["auc"])


@pytest.mark.parametrize("patience", [1, 2])
def test_early_stopping_decays_lr_each_plateau(patience: int) -> None:
    trainer = Trainer(new_model(), config(max_epochs=10, patience=patience, min_lr=1e-9))
    result = trainer.fit(make_data(1000, 0), constant_valid())
    assert result.best_epoch == 1
    assert result.epochs_run == 1 + patience
    lrs = [h["lr"] for h in result.history]  # LR used during each epoch
    assert lrs == pytest.approx([1e-2 * 0.1 ** max(0, e - 1) for e in range(1 + patience)])
    assert trainer.lr == pytest.approx(1e-2 * 0.1**patience)


def test_lr_decay_respects_min_lr() -> None:
    trainer = Trainer(new_model(), config(max_epochs=10, patience=3, min_lr=5e-4))
    result = trainer.fit(make_data(500, 0), constant_valid())
    assert [h["lr"] for h in result.history] == pytest.approx([1e-2, 1e-2, 1e-3, 5e-4])


def test_restores_best_weights(tmp_path: Path) -> None:
    model = new_model()
    cfg = config(max_epochs=5, patience=2)
    result = fit(model, make_data(1000, 0), constant_valid(), cfg, run_dir=tmp_path)
    assert (result.best_epoch, result.epochs_run) == (1, 3)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert_same_state(model.state_dict(), best)
    # The checkpoint holds the last epoch's weights, which differ from the best ones.
    last = load_checkpoint(tmp_path / "checkpoint.pt")["model"]
    assert not torch.equal(last["dnn.net.0.weight"], best["dnn.net.0.weight"])
    # Best weights equal a fresh 1-epoch run, and predictions match the saved best.pt.
    one_epoch = new_model()
    fit(one_epoch, make_data(1000, 0), constant_valid(), config(max_epochs=1))
    assert_same_state(one_epoch.state_dict(), best)
    reloaded = new_model(seed=123)
    reloaded.load_state_dict(best)
    loader = InMemoryLoader(make_data(300, 5), 128)
    np.testing.assert_array_equal(predict(model, loader), predict(reloaded, loader))


class RecordCheckpoints(Callback):
    def __init__(self) -> None:
        self.epochs: list[int] = []

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None:
        self.epochs.append(load_checkpoint(trainer.checkpoint_path)["epoch"])


def test_checkpoint_written_atomically_every_epoch(tmp_path: Path) -> None:
    recorder = RecordCheckpoints()
    fit(new_model(), make_data(1000, 0), make_data(300, 1), config(patience=10),
        run_dir=tmp_path, callbacks=[recorder])  # fmt: skip
    assert recorder.epochs == [1, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".adrank",  # the Trainer claimed the empty run_dir as a run folder
        "best.pt",
        "checkpoint.pt",
        "metrics.jsonl",
    ]  # no temp files left behind


def test_a_run_dir_holding_the_users_own_files_is_refused_not_overwritten(
    tmp_path: Path,
) -> None:
    """A folder adrank did not create keeps the user's files: one the Trainer would
    replace (metrics.jsonl here) is refused before anything is written; a folder holding
    other files only is used as it is, and a second fit into the Trainer's own folder is
    allowed."""
    from adrank.outputs import OutputDirError

    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "metrics.jsonl").write_text("my notes")
    with pytest.raises(OutputDirError, match=r"it holds \['metrics.jsonl'\], which the Trainer"):
        Trainer(new_model(), config(), run_dir=tmp_path)
    assert (tmp_path / "metrics.jsonl").read_text() == "my notes"
    (tmp_path / "metrics.jsonl").unlink()
    fit(new_model(), make_data(300, 0), make_data(100, 1), config(max_epochs=1), run_dir=tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "best.pt").exists()
    own = tmp_path / "own"
    for _ in range(2):  # a new folder is claimed; fitting into it again is fine
        fit(new_model(), make_data(300, 0), make_data(100, 1), config(max_epochs=1), run_dir=own)
    assert (own / ".adrank").exists()


class Interrupt(Callback):
    """Simulate a kill: raise KeyboardInterrupt at the end of an epoch or mid-epoch."""

    def __init__(self, epoch: int, step: int | None) -> None:
        self.epoch, self.step, self.current = epoch, step, 0

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        self.current = epoch

    def on_batch_end(self, trainer: Trainer, step: int, batch_size: int) -> None:
        if self.step is not None and (self.current, step) == (self.epoch, self.step):
            raise KeyboardInterrupt

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None:
        if self.step is None and epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.parametrize(("epoch", "step"), [(2, None), (3, 2)], ids=["epoch-end", "mid-epoch"])
def test_resume_matches_uninterrupted(tmp_path: Path, epoch: int, step: int | None) -> None:
    params = {"net_dropout": 0.2, "batch_norm": True}  # dropout makes RNG state matter
    cfg = config(max_epochs=3, patience=5, deterministic=True, embedding_regularizer=0.01)
    train, valid, test = make_data(1200, 0), make_data(400, 1), make_data(400, 2)

    full_model = new_model(**params)
    full = fit(full_model, train, valid, cfg, test=test, run_dir=tmp_path / "full")

    run_dir = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        fit(new_model(**params), train, valid, cfg, run_dir=run_dir,
            callbacks=[Interrupt(epoch, step)])  # fmt: skip
    assert load_checkpoint(run_dir / "checkpoint.pt")["epoch"] == 2
    resumed_model = new_model(seed=99, **params)  # different init: weights come from disk
    resumed = fit(resumed_model, train, valid, cfg, test=test, run_dir=run_dir, resume=True)

    assert_same_state(full_model.state_dict(), resumed_model.state_dict())
    assert untimed(full.history) == untimed(resumed.history)
    assert (full.best_epoch, full.epochs_run, full.test) == (
        resumed.best_epoch, resumed.epochs_run, resumed.test
    )  # fmt: skip
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x).get("epoch") for x in lines] == [1, 2, 3, None]


def test_gradient_clipping_bounds_grad_norm() -> None:
    batch = make_data(512, 0).data

    def grad_norm_after_step(clip: float | None) -> float:
        trainer = Trainer(new_model(), config(grad_clip_norm=clip))
        trainer.train_step(batch)
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))

    unclipped = grad_norm_after_step(None)
    assert unclipped > 0.01
    assert grad_norm_after_step(0.01) == pytest.approx(0.01, rel=1e-4)
    assert grad_norm_after_step(10 * unclipped) == pytest.approx(unclipped, rel=1e-5)


@pytest.mark.parametrize("scope", ["table", "batch"])
def test_embedding_regularizer_adds_lambda_half_squared_norm(scope: str) -> None:
    model = new_model()
    value = 0.5
    with torch.no_grad():
        for emb in model.embedding_modules():
            for p in emb.parameters():
                p.fill_(value)
    # Batch uses ids f0 {2, 3}, f1 {2}, f2 {4}, f3 {2, 5}: 6 distinct rows per embedding module.
    ids = {"f0": [2, 3, 2], "f1": [2, 2, 2], "f2": [4, 4, 4], "f3": [5, 2, 5]}
    features = {k: torch.tensor(v) for k, v in ids.items()}
    batch = Batch(features, torch.tensor([[1.0], [0.0], [1.0]]))
    lam = 0.05
    outputs = model.training_outputs(batch.features)
    base = training_loss(model, outputs, batch, config())
    reg_cfg = config(embedding_regularizer=lam, embedding_regularizer_scope=scope)
    with_reg = training_loss(model, outputs, batch, reg_cfg)
    if scope == "table":
        entries = sum(p.numel() for m in model.embedding_modules() for p in m.parameters())
    else:
        entries = sum(6 * m.embedding_dim for m in model.embedding_modules())  # D=10 and D=1
    expected = lam / 2 * value**2 * entries
    assert float((with_reg - base).detach()) == pytest.approx(expected, rel=1e-5)


def test_net_regularizer_counts_weight_matrices_only() -> None:
    model = new_model()
    batch = make_data(64, 0).data
    outputs = model.training_outputs(batch.features)
    base = training_loss(model, outputs, batch, config())
    with_reg = training_loss(model, outputs, batch, config(net_regularizer=0.1))
    matrices = [model.dnn.net[0].weight, model.dnn.net[-1].weight]  # Linear(40,16), Linear(16,1)
    expected = 0.05 * sum(float(w.detach().pow(2).sum()) for w in matrices)
    assert float((with_reg - base).detach()) == pytest.approx(expected, rel=1e-5)


def test_bce_loss_uses_the_first_label_column() -> None:
    logits = torch.tensor([0.3, 2.0])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels[:, 0])
    assert float(bce_loss(logits, labels)) == float(expected)


class AuxModel(CTRModel):
    """LR-like model with a constant auxiliary loss, to check the hook is added."""

    def __init__(self, feature_map: FeatureMap) -> None:
        super().__init__(feature_map)
        self.inner = build_model("lr", feature_map)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.inner(features)

    def training_outputs(self, features: dict[str, torch.Tensor]) -> ModelOutput:
        logits = self(features)
        return ModelOutput(logits, {"double": logits * 2})

    def auxiliary_loss(
        self, outputs: ModelOutput, labels: torch.Tensor, batch: object = None
    ) -> torch.Tensor:
        assert labels.shape == outputs.logits.shape
        return bce_loss(outputs.aux["double"], labels[:, None])


def test_auxiliary_loss_is_added() -> None:
    model = AuxModel(FEATURE_MAP)
    batch = make_data(64, 0).data
    outputs = model.training_outputs(batch.features)
    total = training_loss(model, outputs, batch, config())
    expected = bce_loss(outputs.logits, batch.labels) + bce_loss(
        outputs.aux["double"], batch.labels
    )
    assert total.item() == pytest.approx(expected.item())


def test_predict_and_evaluate() -> None:
    model = new_model()
    loader = InMemoryLoader(make_data(500, 3), 128)
    probs = predict(model, loader)
    assert probs.shape == (500,) and probs.dtype == np.float32
    assert ((probs > 0) & (probs < 1)).all()
    metrics = evaluate(model, loader)
    assert {"auc", "logloss", "gauc", "calibration_ratio", "ece"} == set(metrics)
    assert model.training  # mode restored


def test_amp_on_cpu_is_ignored_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="adrank.train.trainer"):
        trainer = Trainer(new_model(), config(amp=True))
    assert not trainer.amp
    assert "CUDA-only" in caplog.text


def test_resume_requires_run_dir() -> None:
    with pytest.raises(ValueError, match="run_dir"):
        fit(new_model(), make_data(100, 0), config=config(), resume=True)


def test_forced_progress_bar_runs() -> None:
    trainer = Trainer(new_model(), config(max_epochs=1), force_progress=True)
    assert any(isinstance(c, ProgressBar) for c in trainer.callbacks)
    result = trainer.fit(make_data(600, 0), make_data(200, 1))
    assert result.epochs_run == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_amp_training() -> None:
    model = new_model()
    result = fit(model, make_data(2000, 0), make_data(500, 1), config(device="cuda", amp=True))
    assert next(model.parameters()).is_cuda
    assert result.best_valid["auc"] > 0.7


def test_compute_metrics_multi_task_prefixes_and_means() -> None:
    labels = np.array([[0, 1], [1, 0], [1, 1], [0, 0]], dtype=np.float32)
    probs = np.array([[0.2, 0.9], [0.8, 0.1], [0.6, 0.3], [0.4, 0.4]], dtype=np.float32)
    out = compute_metrics(Predictions(probs, labels, None), ("click", "conversion"))
    assert out["click_auc"] == pytest.approx(1.0)
    assert out["conversion_auc"] == pytest.approx(0.75)
    assert out["auc"] == pytest.approx(0.875)
    assert {"click_logloss", "conversion_ece", "logloss", "calibration_ratio"} <= set(out)


def test_fast_dropout_kernel_trains_deterministically_on_its_own_stream() -> None:
    """``train.dropout_kernel: fast`` changes the masks (so the trajectory), is deterministic
    per seed, learns as well, and leaves the default (torch) run untouched."""
    train, valid = make_data(2000, 0), make_data(500, 1)

    aucs: dict[str, float] = {}

    def run(kernel: str) -> dict[str, torch.Tensor]:
        model = new_model(net_dropout=0.3)
        result = fit(model, train, valid, config(max_epochs=2, dropout_kernel=kernel))
        aucs[kernel] = result.best_valid["auc"]
        return model.state_dict()

    fast, fast_again, default = run("fast"), run("fast"), run("torch")
    assert_same_state(fast, fast_again)
    assert any(not torch.equal(fast[k], default[k]) for k in fast)
    assert_same_state(default, run("torch"))
    assert aucs["fast"] > 0.7 and aucs["torch"] > 0.7


def test_dropout_kernel_is_validated() -> None:
    from adrank.config import ConfigError

    with pytest.raises(ConfigError, match="dropout_kernel must be one of"):
        TrainConfig(dropout_kernel="bernoulli")  # type: ignore[arg-type]


def test_resuming_in_another_process_count_warns_and_is_recorded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A checkpoint of a 2-process run resumed in one process: a warning that the run will
    not repeat the 2-process one, and both counts in ``world_sizes``."""
    fit(new_model(), make_data(600, 0), make_data(200, 1), config(max_epochs=1), run_dir=tmp_path)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["world_size"] == 1 and ckpt["world_sizes"] == [1]
    ckpt |= {"world_size": 2, "world_sizes": [2]}  # as a `--nproc 2` run writes it
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    trainer = Trainer(new_model(), config(max_epochs=2), run_dir=tmp_path)
    with caplog.at_level("WARNING", logger="adrank.train.trainer"):
        trainer.fit(make_data(600, 0), make_data(200, 1), resume=True)
    assert "written by 2 process(es), in 1: from epoch 2 on" in caplog.text
    assert trainer.world_sizes == [1, 2]
