"""Training meets a diverging run, an interruption, a misspelt monitor and degenerate
settings: each stops with one clear line that names the epoch, step or setting, keeps the
files of the last completed epoch, and a resumed run ends as an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner, Result

from adrank.cli import app
from adrank.config import ConfigError, RunConfig, TrainConfig
from adrank.data.batches import Batch, InMemoryLoader, TensorData
from adrank.data.feature_map import FeatureMap, FieldInfo, TaskInfo
from adrank.models import build_model
from adrank.models.base import CTRModel
from adrank.train import Callback, Trainer, fit
from adrank.train.checkpoint import load_checkpoint
from adrank.train.evaluation import Predictions, compute_metrics, metric_names
from adrank.train.trainer import TrainingDiverged, apply_num_threads
from adrank.utils import seed_everything
from tests.train.test_run_edge_cases import FAST, SCHEMA
from tests.train.test_trainer import FEATURE_MAP, TIMING_KEYS, VOCAB


@pytest.fixture(autouse=True)
def _restore_torch_globals() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def make_data(n: int, seed: int) -> TensorData:
    gen = torch.Generator().manual_seed(seed)
    features = {f"f{i}": torch.randint(2, v, (n,), generator=gen) for i, v in enumerate(VOCAB)}
    weights = [torch.randn(v, generator=torch.Generator().manual_seed(100 + i)) * 1.5
               for i, v in enumerate(VOCAB)]  # fmt: skip
    logit = sum(w[features[f"f{i}"]] for i, w in enumerate(weights))
    labels = (torch.rand(n, generator=gen) < torch.sigmoid(logit)).float()
    return TensorData(Batch(features, labels[:, None], torch.randint(0, 20, (n,), generator=gen)))


def new_model(**params: Any) -> CTRModel:
    seed_everything(0)
    params = {"hidden_units": [16], "net_dropout": 0.0, "batch_norm": False, **params}
    return build_model("deepfm", FEATURE_MAP, **params)


def config(**overrides: Any) -> TrainConfig:
    base = {"batch_size": 256, "learning_rate": 1e-2, "max_epochs": 3, "num_threads": 1,
            "progress": False, "seed": 7, "patience": 5}  # fmt: skip
    return TrainConfig(**{**base, **overrides})


class Spy(Callback):
    """Counts training steps; after step ``step`` of ``epoch`` (-1: its last step) calls
    ``action(trainer)``."""

    def __init__(self, epoch: int = 0, step: int = 0, action: Any = None) -> None:
        self.epoch, self.step, self.action = epoch, step, action
        self.steps = 0
        self.current = 0

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        self.current = epoch

    def on_batch_end(self, trainer: Trainer, step: int, batch_size: int) -> None:
        self.steps += 1
        last = step == trainer.steps_per_epoch
        if self.current == self.epoch and (step == self.step or (self.step == -1 and last)):
            self.action(trainer)


def poison(trainer: Trainer, value: float = float("nan")) -> None:
    """Break the weights as a diverging optimizer step would."""
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(value)


# ------------------------------------------------------------------ divergence ----
def test_divergence_stops_at_the_step_and_keeps_the_last_good_epoch(tmp_path: Path) -> None:
    train, valid = make_data(1200, 0), make_data(400, 1)  # 5 steps per epoch
    spy = Spy(epoch=2, step=2, action=poison)
    trainer = Trainer(new_model(), config(), tmp_path, callbacks=[spy])
    with pytest.raises(TrainingDiverged) as info:
        trainer.fit(train, valid)
    message = str(info.value)
    # the first NaN loss is step 3 of epoch 2: the run stops there, not after the epoch
    assert "training loss is nan in epoch 2 at step 3 of 5" in message, message
    assert (info.value.epoch, info.value.step) == (2, 3)
    assert spy.steps == 5 + 2
    assert "train.learning_rate" in message and "keeps epoch 1" in message, message
    # epoch 1's files are intact and the model holds its (finite) best weights
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in best.values())
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, best[name]), name
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1]


def test_weights_broken_by_an_epochs_last_step_are_never_kept_as_best(tmp_path: Path) -> None:
    """The last step's update can make the weights infinite while the epoch's loss (taken
    before each update) is finite: that epoch must not become best.pt or a checkpoint."""
    spy = Spy(epoch=1, step=-1, action=lambda t: poison(t, float("inf")))
    trainer = Trainer(new_model(), config(), tmp_path, callbacks=[spy])
    with pytest.raises(TrainingDiverged, match="weights are NaN or infinite in epoch 1"):
        trainer.fit(make_data(1200, 0), make_data(400, 1))
    assert not (tmp_path / "best.pt").exists() and not (tmp_path / "checkpoint.pt").exists()
    assert (tmp_path / "metrics.jsonl").read_text() == ""


def test_infinite_input_is_named_instead_of_blaming_the_learning_rate() -> None:
    data = make_data(1200, 0)
    numeric_map = FeatureMap((*FEATURE_MAP.fields, FieldInfo("price", "numeric", 1)), ("click",))
    price = torch.ones(len(data))
    price[700] = float("inf")  # 1e39 in a CSV: beyond float32
    batch = Batch({**data.data.features, "price": price}, data.data.labels)
    seed_everything(0)
    model = build_model("lr", numeric_map)
    with pytest.raises(TrainingDiverged) as info:
        fit(model, TensorData(batch), None, config())
    message = str(info.value)
    assert "feature 'price': 1 value" in message and "fix the data" in message, message
    assert "learning_rate" not in message


# --------------------------------------------------------------- monitor names ----
def _task_map(*tasks: TaskInfo) -> FeatureMap:
    labels = tuple(dict.fromkeys(t.label for t in tasks))
    return FeatureMap(FEATURE_MAP.fields, labels, tasks=tasks)


CLICK = TaskInfo("click", "click", output="pctr")
BUY = TaskInfo("buy", "buy", given="click", output="pcvr")


@pytest.mark.parametrize(
    ("feature_map", "outputs"),
    [
        (FEATURE_MAP, ["pctr"]),
        (_task_map(TaskInfo("spend", "spend", type="regression", output="spend")), ["spend"]),
        (_task_map(CLICK, BUY), ["pctr", "pcvr"]),  # + derived pctcvr
        (_task_map(CLICK, BUY), ["pctr", "pctcvr"]),  # ESMM: pcvr derived
        (_task_map(CLICK, BUY), ["pctr"]),  # a single-task model on a funnel
        (
            _task_map(CLICK, TaskInfo("spend", "spend", type="regression", output="spend")),
            ["pctr", "spend"],
        ),
    ],
    ids=["single", "regression", "funnel", "esmm", "one-task", "mixed"],
)
@pytest.mark.parametrize("groups", [True, False])
def test_metric_names_are_the_keys_the_evaluator_returns(
    feature_map: FeatureMap, outputs: list[str], groups: bool
) -> None:
    rng = np.random.default_rng(0)
    n = 40
    labels = np.stack([np.arange(n) % 2, (np.arange(n) // 2) % 2], 1)[:, : len(feature_map.labels)]
    predictions = Predictions(
        probs=rng.random((n, len(outputs))).astype(np.float32),
        labels=labels.astype(np.float32),
        groups=np.arange(n) % 3 if groups else None,
        outputs=outputs,
    )
    expected = list(compute_metrics(predictions, feature_map))
    assert metric_names(feature_map, outputs, groups=groups) == expected


@pytest.mark.parametrize(
    ("monitor", "hint"),
    [("auc_typo", ""), ("gacu", "did you mean 'gauc'"), ({"auc": 1, "gacu": 1}, "'gacu'")],
)
def test_unknown_monitor_is_refused_before_the_first_step(
    tmp_path: Path, monitor: Any, hint: str
) -> None:
    spy = Spy()
    trainer = Trainer(new_model(), config(monitor=monitor), tmp_path, callbacks=[spy])
    with pytest.raises(ValueError, match="is not a validation metric of this run") as info:
        trainer.fit(make_data(600, 0), make_data(200, 1))
    assert "train.monitor=" in str(info.value) and hint in str(info.value)
    assert "'gauc'" in str(info.value)  # the split has groups: gauc is offered
    assert spy.steps == 0 and not (tmp_path / "metrics.jsonl").exists()


def test_gauc_monitor_trains_on_a_split_with_groups() -> None:
    result = fit(new_model(), make_data(600, 0), make_data(200, 1), config(monitor="gauc"))
    assert result.epochs_run >= 1 and "gauc" in result.best_valid


# ------------------------------------------------------------- CLI, tiny data ----


def _csv(path: Path, n: int) -> Path:
    rows = ["click,user,ad,price"]
    rows += [f"{int(i % 3 == 0)},u{i % 4},a{i % 7},{i % 11}.5" for i in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("robust")
    (tmp / "schema.yaml").write_text(SCHEMA)
    out = tmp / "data"
    args = ["prepare", "--schema", str(tmp / "schema.yaml"), "--output", str(out)]
    for split, n in (("train", 240), ("valid", 60), ("test", 60)):  # 8 steps per epoch
        args += [f"--{split}", str(_csv(tmp / f"{split}.csv", n))]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return out


def _train(data: Path, run_dir: Path, *extra: str) -> Result:
    args = ["train", "--prepared", str(data), "--model", "lr", "--run-dir", str(run_dir)]
    return CliRunner().invoke(app, [*args, *FAST, *extra])


def _clean_failure(res: Result) -> str:
    assert res.exit_code == 1, res.output
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert "error:" in res.output and "Traceback" not in res.output, res.output
    return " ".join(res.output.split())


def test_cli_misspelt_monitor_is_an_error_before_training(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    out = _clean_failure(_train(data, run, "--set", "train.monitor=loglos"))
    assert "train.monitor='loglos'" in out and "did you mean 'logloss'" in out, out
    assert "epoch 1" not in out
    assert not (run / "metrics.jsonl").exists() and not (run / "checkpoint.pt").exists()


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("learning_rate=.inf", "learning_rate must be > 0 and finite"),
        ("grad_clip_norm=-1", "grad_clip_norm must be > 0"),  # flipped the gradients' sign
        ("grad_clip_norm=0", "grad_clip_norm must be > 0"),  # froze every weight
        ("embedding_regularizer=-0.1", "embedding_regularizer must be >= 0"),
        ("net_regularizer=-1", "net_regularizer must be >= 0"),
        ("lr_decay_factor=-1", "lr_decay_factor must be in (0, 1]"),
        ("lr_decay_factor=10", "lr_decay_factor must be in (0, 1]"),
        ("min_lr=-1", "min_lr must be >= 0"),
        ("num_threads=-1", "num_threads must be >= 1"),
        ("max_epochs=0", "max_epochs must be >= 1, got 0"),
        ("patience=-1", "patience must be >= 0"),
    ],
)
def test_nonsense_settings_are_refused_naming_the_setting(setting: str, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig(model="lr").with_overrides([f"train.{setting}"])
    assert named in str(info.value)


def test_cli_nonsense_setting_is_one_error_line(data: Path, tmp_path: Path) -> None:
    out = _clean_failure(_train(data, tmp_path / "run", "--set", "train.grad_clip_norm=-1"))
    assert "grad_clip_norm must be > 0" in out


# --------------------------------------------------------------- interruption ----
DRIVER = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
from adrank.train.trainer import Trainer
sig, at = getattr(signal, sys.argv[1]), int(sys.argv[2])
step, calls = Trainer.train_step, [0]
def train_step(self, batch):
    calls[0] += 1
    if calls[0] == at:
        os.kill(os.getpid(), sig)
    return step(self, batch)
Trainer.train_step = train_step
from adrank.cli import app
sys.argv = ["adrank", *sys.argv[3:]]
app()
"""


def _untimed(path: Path) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    return [{k: v for k, v in x.items() if k not in TIMING_KEYS} for x in lines]


@pytest.fixture(scope="module")
def uninterrupted(data: Path) -> Path:
    run = data.parent / "full"
    res = _train(data, run, "--set", "train.max_epochs=3", "--set", "train.patience=5")
    assert res.exit_code == 0, res.output
    return run


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_signal_mid_epoch_is_one_line_and_resume_ends_as_uninterrupted(
    data: Path, uninterrupted: Path, tmp_path: Path, sig: str
) -> None:
    run = tmp_path / "run"
    args = ["train", "--prepared", str(data), "--model", "lr", "--run-dir", str(run), *FAST,
            "--set", "train.max_epochs=3", "--set", "train.patience=5"]  # fmt: skip
    env = {**os.environ, "COLUMNS": "1000"}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(DRIVER), sig, "11", *args],  # epoch 2, step 3
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode not in (0, -signal.SIGTERM), out  # stopped, not killed
    assert "Traceback" not in out, out
    how = "Ctrl-C (SIGINT)" if sig == "SIGINT" else "SIGTERM"
    expected = f"training stopped by {how} in epoch 2 at step 3 of 8; {run / 'checkpoint.pt'}"
    assert out.count("training stopped by") == 1 and expected in out, out
    assert "holds epoch 1: resume (--resume) continues from there" in out, out
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    assert not (run / "manifest.json").exists()

    res = _train(data, run, "--set", "train.max_epochs=3", "--set", "train.patience=5", "--resume")
    assert res.exit_code == 0, res.output
    assert _untimed(run / "metrics.jsonl") == _untimed(uninterrupted / "metrics.jsonl")
    full = json.loads((uninterrupted / "metrics.json").read_text())
    resumed = json.loads((run / "metrics.json").read_text())
    assert (resumed["test"], resumed["best_epoch"]) == (full["test"], full["best_epoch"])


def test_sigterm_handler_of_the_application_is_left_alone() -> None:
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        spy = Spy(epoch=1, step=1, action=lambda t: os.kill(os.getpid(), signal.SIGTERM))
        result = fit(new_model(), make_data(600, 0), None, config(max_epochs=1), callbacks=[spy])
        assert result.epochs_run == 1 and seen == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------- resume ----
def test_resume_with_a_changed_learning_rate_uses_it(tmp_path: Path) -> None:
    """The optimizer state in the checkpoint holds the old rate; a changed
    train.learning_rate (say after a divergence) used to be warned about and ignored."""
    train, valid = make_data(600, 0), make_data(200, 1)
    fit(new_model(), train, valid, config(max_epochs=1), run_dir=tmp_path)
    result = fit(new_model(), train, valid, config(max_epochs=2, learning_rate=1e-3),
                 run_dir=tmp_path, resume=True)  # fmt: skip
    assert [h["lr"] for h in result.history] == [pytest.approx(1e-2), pytest.approx(1e-3)]


# ------------------------------------------------------------ degenerate values ----
def test_lr_decay_never_raises_a_rate_below_min_lr() -> None:
    valid = TensorData(Batch({f"f{i}": torch.full((200,), 2) for i in range(4)},
                             (torch.arange(200) % 2).float()[:, None]))  # fmt: skip
    cfg = config(learning_rate=1e-7, min_lr=1e-6, max_epochs=3)  # AUC 0.5 every epoch
    result = fit(new_model(), make_data(600, 0), valid, cfg)
    assert [h["lr"] for h in result.history] == [pytest.approx(1e-7)] * 3


def test_batch_norm_on_one_row_names_the_batch_size() -> None:
    model = new_model(batch_norm=True)
    with pytest.raises(ValueError, match=r"train\.batch_size=1.*BatchNorm|BatchNorm.*batch_size=1"):
        fit(model, make_data(100, 0), None, config(batch_size=1))


def test_batch_norm_with_a_final_one_row_batch() -> None:
    """InMemoryLoader drops a final 1-row batch; another loader's gets a clear error."""
    data = make_data(257, 0)
    result = fit(new_model(batch_norm=True), data, None, config(max_epochs=1))
    assert result.history[0]["train_samples"] == 256
    batches = list(InMemoryLoader(data, 256))  # 256 rows, then 1
    with pytest.raises(ValueError, match="a training batch of 1 row reached a BatchNorm"):
        fit(new_model(batch_norm=True), batches, None, config(max_epochs=1))


@pytest.mark.parametrize(
    "overrides",
    [
        {"max_epochs": 1},
        {"patience": 0},
        {"batch_size": 100_000},
        {"grad_clip_norm": None},
        {"num_threads": 0},
    ],
    ids=["one-epoch", "patience-0", "batch-over-split", "no-clipping", "threads-0"],
)
def test_degenerate_but_valid_settings_train(overrides: dict[str, Any]) -> None:
    result = fit(new_model(), make_data(600, 0), make_data(200, 1), config(**overrides))
    assert 1 <= result.epochs_run <= 3 and np.isfinite(result.best_valid["auc"])
    aucs = [h["val_auc"] for h in result.history]
    assert result.best_valid["auc"] == max(aucs)
    if "patience" in overrides:  # 0 acts as 1: the first epoch without improvement stops
        assert all(a > max(aucs[:i]) for i, a in enumerate(aucs[:-1]) if i)


def test_far_too_many_threads_is_refused_naming_the_setting() -> None:
    too_many = 4 * (os.cpu_count() or 1) + 1
    with pytest.raises(ValueError, match=rf"train\.num_threads={too_many}"):
        apply_num_threads(too_many)
    with pytest.raises(ValueError, match=r"train\.num_threads"):
        fit(new_model(), make_data(100, 0), None, config(num_threads=too_many))
