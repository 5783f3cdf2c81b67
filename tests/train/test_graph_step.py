"""The whole training step as one CUDA graph (``TrainConfig.cuda_graph``, issue 18).

CUDA graphs need a GPU. On CPU, :class:`StepGraph` runs with a stand-in recording backend,
:class:`RunOnReplay`: recording runs nothing, as CUDA's does, and a replay runs the step
again on the same input buffers with the gradients reset first (a recorded backward writes
the gradient buffers instead of adding to them). That checks what adrank decides: warm-up
on the input buffers, the copy of every batch into them, eager steps for other batch sizes,
recording again when the learning rate or the optimizer's state changes, the fallback when
recording fails, and that a run is the eager run step for step. The tests marked ``cuda``
record real graphs and are skipped without a GPU. ``test_recordable_steps.py`` replays
every model's recorded operations without its Python (``op_replay.py``), as CUDA does.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from adrank.config import ConfigError, TrainConfig
from adrank.models import build_model
from adrank.train import Trainer
from adrank.train.callbacks import Callback
from adrank.train.graph_step import StepGraph, cuda_graph_unsupported
from adrank.utils import seed_everything
from tests.train.op_replay import OpReplay, trainer_state
from tests.train.test_device_loader import (
    FEATURE_MAP,
    count_syncs,
    ctr_data,
    new_model,
    train_config,
)

HAS_CUDA = torch.cuda.is_available()


class _Replayed:
    def __init__(self, fn: Callable[[], torch.Tensor], optimizer: Any) -> None:
        self.fn, self.optimizer = fn, optimizer
        self.output = torch.full((), math.nan)  # like CUDA's: nothing ran at recording

    def replay(self) -> None:
        self.optimizer.zero_grad(set_to_none=False)  # the recorded backward writes them
        self.output.copy_(self.fn())


class RunOnReplay:
    """Stand-in for :class:`CudaGraphs` on a machine without CUDA (module docstring)."""

    def __init__(self, optimizer: Any, fail: bool = False) -> None:
        self.optimizer, self.fail = optimizer, fail
        self.warm_calls = 0

    @contextlib.contextmanager
    def warm(self) -> Any:
        self.warm_calls += 1
        yield

    def record(self, fn: Callable[[], torch.Tensor]) -> _Replayed:
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing\nmore")
        return _Replayed(fn, self.optimizer)


def graphed(trainer: Trainer, fail: bool = False, backend: str = "rerun") -> Trainer:
    """``trainer`` with its step recorded by a stand-in backend (as cuda_graph=True on
    CUDA, where the trainer builds the same StepGraph with CudaGraphs): ``rerun``
    (:class:`RunOnReplay`) or ``ops`` (:class:`~tests.train.op_replay.OpReplay`, which
    replays the recorded operations without the step's Python)."""
    stand_in = (
        RunOnReplay(trainer.optimizer, fail)
        if backend == "rerun"
        else OpReplay(trainer_state(trainer))
    )
    trainer._graph = StepGraph(trainer._step, trainer.optimizer, stand_in)
    return trainer


class HalveLR(Callback):
    """Halve the learning rate after every epoch (a deterministic LR decay)."""

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, Any]) -> None:
        for group in trainer.optimizer.param_groups:
            group["lr"] *= 0.5


def _fit(trainer: Trainer, **kwargs: Any) -> list[float]:
    result = trainer.fit(ctr_data(600), ctr_data(200, seed=1), **kwargs)
    return [h["train_loss"] for h in result.history]


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def assert_same_weights(a: Trainer, b: Trainer) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


@pytest.mark.parametrize("backend", ["rerun", "ops"])
def test_a_graphed_run_is_the_eager_run_step_for_step(backend: str) -> None:
    """600 rows at batch 64: 9 full batches and one of 24 per epoch; 3 epochs, the learning
    rate halved after each: 3 warm-up steps, then one more before each new learning rate's
    recording, the short batches eager, and the same losses and weights as the eager
    trainer, bit for bit."""
    cfg = train_config(max_epochs=3, patience=5)
    eager = Trainer(new_model(), cfg, callbacks=[HalveLR()])
    graph = graphed(Trainer(new_model(), cfg, callbacks=[HalveLR()]), backend=backend)
    assert _fit(graph) == _fit(eager)
    assert_same_weights(graph, eager)
    assert graph.last_grad_norm is not None and eager.last_grad_norm is not None
    assert torch.equal(graph.last_grad_norm, eager.last_grad_norm)  # the last (short) step's
    step = graph.step_graph
    assert step is graph._graph and step is not None and not step.failed
    assert step.counts == {"replayed": 3 * 9 - 5, "warm": 5, "eager": 3, "recorded": 3}
    assert step.backend.warm_calls == 5  # type: ignore[attr-defined]


def test_batches_are_copied_into_the_buffers_the_recording_reads() -> None:
    trainer = graphed(Trainer(new_model(), train_config()))
    loader = trainer._train_loader(ctr_data(600))
    loader.set_epoch(0)
    step = trainer._graph
    assert step is not None
    for batch in list(loader)[:6]:
        trainer.train_step(batch)
        if len(batch) == 64:
            static = step._static
            assert static is not None and static.features["c0"] is not batch.features["c0"]
            for name, tensor in batch.features.items():
                assert torch.equal(static.features[name], tensor), name
            assert torch.equal(static.labels, batch.labels)
    assert step.recorded and step.counts["replayed"] == 3  # batches 4-6 (1-3 warm up)


@pytest.mark.parametrize("backend", ["rerun", "ops"])
def test_resuming_records_again_and_reproduces_the_uninterrupted_run(
    tmp_path: Path, backend: str
) -> None:
    cfg = train_config(max_epochs=3, patience=5)
    whole = graphed(Trainer(new_model(), cfg, run_dir=tmp_path / "whole"), backend=backend)
    losses = _fit(whole)
    cut = tmp_path / "cut"
    first = graphed(Trainer(new_model(), train_config(max_epochs=1), run_dir=cut), backend=backend)
    _fit(first)
    assert first._graph is not None and first._graph.recorded
    first.load_checkpoint(cut / "checkpoint.pt")  # new optimizer state tensors
    assert not first._graph.recorded
    resumed = graphed(Trainer(new_model(), cfg, run_dir=cut), backend=backend)
    assert _fit(resumed, resume=True) == losses
    assert_same_weights(resumed, whole)


def test_a_checkpoint_saved_with_capturable_adam_resumes_without_it(tmp_path: Path) -> None:
    """A cuda_graph run's optimizer is capturable (its step count on the device); resumed on
    CPU, where capturable Adam cannot step, the optimizer takes this run's setting."""
    cfg = {"adam_implementation": "foreach"}  # fused Adam would step with capturable on CPU
    saved = Trainer(new_model(), train_config(max_epochs=1, **cfg), run_dir=tmp_path)
    _fit(saved)
    for group in saved.optimizer.param_groups:
        group["capturable"] = True  # as a cuda_graph run saves it
    saved.save_checkpoint(tmp_path / "checkpoint.pt")
    resumed = Trainer(new_model(), train_config(max_epochs=2, **cfg), run_dir=tmp_path)
    losses = _fit(resumed, resume=True)
    assert [g["capturable"] for g in resumed.optimizer.param_groups] == [False]
    assert len(losses) == 2 and math.isfinite(losses[-1])


def test_a_failed_recording_warns_once_and_trains_eagerly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = train_config(max_epochs=2)
    eager = Trainer(new_model(), cfg)
    broken = graphed(Trainer(new_model(), cfg), fail=True)
    with caplog.at_level(logging.WARNING, logger="adrank.train.trainer"):
        assert _fit(broken) == _fit(eager)
    assert_same_weights(broken, eager)
    warned = [r.getMessage() for r in caplog.records if "cuda_graph" in r.getMessage()]
    assert len(warned) == 1 and "RuntimeError: operation not permitted" in warned[0]
    assert "more" not in warned[0]  # the first line of the error only
    assert broken._graph is not None and broken._graph.failed
    assert broken._graph.failure == "RuntimeError: operation not permitted when stream is capturing"
    assert broken._graph.counts["recorded"] == 0 and broken._graph.counts["replayed"] == 0


def test_cuda_graph_is_ignored_with_a_warning_where_it_cannot_apply(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="adrank.train.trainer"):
        trainer = Trainer(new_model(), train_config(cuda_graph=True))
    assert trainer._graph is None and trainer.step_graph is None
    assert trainer.optimizer.param_groups[0]["capturable"] is False
    assert any(
        "cuda_graph=True is ignored: CUDA graphs need a CUDA device" in r.getMessage()
        for r in caplog.records
    )
    assert math.isfinite(_fit(trainer)[-1])


def test_cuda_graph_auto_is_off_without_a_word_where_it_cannot_apply(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="adrank.train.trainer"):
        trainer = Trainer(new_model(), train_config(cuda_graph="auto"))
    assert trainer.step_graph is None
    assert trainer.optimizer.param_groups[0]["capturable"] is False
    assert not [r for r in caplog.records if "cuda_graph" in r.getMessage()]


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("cpu", False, None, False, False), "need a CUDA device"),
        (("cuda", True, None, False, False), "distributed"),
        (("cuda", False, "position_method='pal'", False, False), "position_method='pal'"),
        (("cuda", False, None, True, False), "sparse_embeddings"),
        (("cuda", False, None, False, True), "fp16 AMP"),
    ],
)
def test_what_cuda_graphs_do_not_support_is_named(args: tuple[Any, ...], reason: str) -> None:
    device, *rest = args
    assert reason in (cuda_graph_unsupported(torch.device(device), *rest) or "")
    assert cuda_graph_unsupported(torch.device("cuda"), False, None, False, False) is None


def test_a_model_that_cannot_be_recorded_is_named_after_the_run_settings() -> None:
    reason = "DIEN's auxiliary loss samples its negatives"
    cuda = torch.device("cuda")
    assert cuda_graph_unsupported(cuda, False, None, False, False, model_blocker=reason) == reason
    assert "distributed" in (
        cuda_graph_unsupported(cuda, True, None, False, False, model_blocker=reason) or ""
    )


def test_cuda_graph_setting_is_checked() -> None:
    for bad in ("yes", 1, None):
        with pytest.raises(ConfigError, match="cuda_graph must be true, false or 'auto'"):
            train_config(cuda_graph=bad)
    assert train_config(cuda_graph="auto").cuda_graph == "auto"
    assert TrainConfig().cuda_graph == "auto"  # the default since session 16's H200 cells
    with pytest.raises(ValueError, match="warmup must be >= 1"):
        StepGraph(lambda b, g: torch.zeros(()), None, RunOnReplay(None), warmup=0)


# --------------------------------------------------------------------------- on CUDA ----
@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("compile_mode", [False, "default"])
def test_cuda_graph_records_and_trains_like_the_eager_step(compile_mode: Any) -> None:
    """Recorded for real, with the eager and the compiled forward: no fallback, one
    recording, replays, finite losses. With the eager forward (no dropout) the losses match
    the eager step's, the same kernels in the same order; the compiled case skips that
    comparison, which would compile twice (the runbook's GPU time is short)."""
    results = {}
    for graph in (True, False) if compile_mode is False else (True,):
        cfg = train_config(device="cuda", max_epochs=2, compile=compile_mode, cuda_graph=graph)
        seed_everything(0)
        model = build_model("deepfm", FEATURE_MAP, embedding_dim=4, hidden_units=[8],
                            net_dropout=0.0)  # fmt: skip
        trainer = Trainer(model, cfg)
        results[graph] = (_fit(trainer), trainer)
    losses, trainer = results[True]
    step = trainer._graph
    assert step is not None and not step.failed, f"recording failed: {step and step.failure}"
    assert step.counts["recorded"] == 1 and step.counts["replayed"] > 0
    assert all(math.isfinite(x) for x in losses)
    if False in results:
        assert losses == pytest.approx(results[False][0], rel=1e-4)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cuda_graph_auto_records_on_one_cuda_device() -> None:
    trainer = Trainer(new_model(), train_config(device="cuda", compile=False, cuda_graph="auto"))
    assert trainer.step_graph is not None and trainer.step_graph.asked is False
    assert trainer.optimizer.param_groups[0]["capturable"] is True
    _fit(trainer)
    assert trainer.step_graph.counts["recorded"] >= 1 and not trainer.step_graph.failed


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cuda_graph_replays_without_host_sync() -> None:
    data = ctr_data(4000)
    trainer = Trainer(new_model(), train_config(device="cuda", compile=False, cuda_graph=True))
    loader = trainer._train_loader(data)
    loader.set_epoch(0)
    batches = [b for b in loader if len(b) == 64]
    for batch in batches[:5]:  # warm-up and recording (recording synchronises once)
        trainer.train_step(batch)
    torch.cuda.synchronize()
    syncs = count_syncs(lambda: [trainer.train_step(b) for b in batches[5:]])
    assert trainer._graph is not None and trainer._graph.counts["replayed"] > 1
    assert syncs == []
    assert math.isfinite(trainer.running_loss())


def test_a_run_whose_batches_keep_changing_shape_is_told_it_gains_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every batch a new size: each one trains eagerly, and fit says why at the end."""
    trainer = graphed(Trainer(new_model(), train_config(max_epochs=1)))
    data = ctr_data(600).data
    sizes = [64, 63, 62, 61, 60, 59, 58, 57, 56]
    batches, start = [], 0
    for n in sizes:
        batches.append(data.map(lambda t, s=start, n=n: t[s : s + n]))
        start += n
    with caplog.at_level(logging.INFO, logger="adrank.train.trainer"):
        trainer.fit(batches)
    step = trainer._graph
    assert step is not None
    assert step.counts == {"replayed": 0, "warm": 1, "eager": 8, "recorded": 0}
    messages = [r.getMessage() for r in caplog.records]
    assert (
        "cuda_graph: 0 step(s) replayed, 1 warm-up, 8 eager (other batch shapes), 0 recording(s)"
        in messages
    )
    warned = [
        r for r in caplog.records if "8 of 9 steps ran without the recorded graph" in r.getMessage()
    ]
    assert [r.levelno for r in warned] == [logging.WARNING]


def test_under_auto_shapes_that_keep_changing_are_an_info_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """cuda_graph=auto: the user did not ask for graphs, so it is not a warning."""
    trainer = Trainer(new_model(), train_config(max_epochs=1))
    trainer._graph = StepGraph(
        trainer._step, trainer.optimizer, RunOnReplay(trainer.optimizer), asked=False
    )
    data = ctr_data(600).data
    batches = [data.map(lambda t, n=n: t[:n]) for n in (64, 63, 62)]
    with caplog.at_level(logging.INFO, logger="adrank.train.trainer"):
        trainer.fit(batches)
    said = [r for r in caplog.records if "steps ran without the recorded graph" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.INFO]
