"""Every registered model's training step can be recorded as a CUDA graph, and replaying
the recording trains like the eager step (issue 18).

``cuda_graph=True`` records the trainer's whole step, and CUDA refuses to record, or a GPU
run pays a host round trip per step for, any operation whose result the host must read or
whose output size depends on the data: ``item()``, ``nonzero``, ``unique``, a boolean mask
index, or a tensor built from host data inside the step (a host-to-device copy). On CPU
those operations are visible by name to a dispatch mode, so this test runs one trainer step
of every model (forward, the tasks' and the auxiliary losses, backward, clipping, Adam) and
names any it finds, before a GPU session would discover it as a failed recording. Then
each model trains through :class:`StepGraph` with :class:`tests.train.op_replay.OpReplay`,
a stand-in with a CUDA graph's semantics (its recorded operations replayed, Python not run
again), and must train bit for bit like the eager trainer.

DIEN and DMIN are the known exceptions: their auxiliary loss draws negatives among the
batch's distinct items (``unique``). They say so (:meth:`CTRModel.cuda_graph_blocker`), so
``cuda_graph=True`` is ignored for them with that reason, and they train without graphs.
"""

from __future__ import annotations

import collections
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from adrank.config import TrainConfig
from adrank.data.batches import Batch
from adrank.models import build_model
from adrank.models.base import CTRModel
from adrank.train import Trainer
from adrank.train.graph_step import StepGraph, cuda_graph_unsupported
from tests.models.test_models import (
    MODELS,
    learnable_batch,
    model_feature_map,
    random_features,
)
from tests.train.op_replay import HOST_READS, OpReplay, trainer_state

INDEX_OPS = frozenset({"aten.index", "aten.index_put", "aten.index_put_", "aten._index_put_impl_"})
#: models whose training step has a data-dependent part (module docstring)
NOT_RECORDABLE = {"dien", "dmin"}


def model_for(name: str, **params: Any) -> Any:
    """``name`` on the tiny feature map with a numeric field, built from seed 0."""
    torch.manual_seed(0)
    return build_model(name, model_feature_map(name, with_numeric=True), **params)


class HostReads(TorchDispatchMode):
    """Counts the operations of :data:`HOST_READS`, and indexing by a boolean mask."""

    def __init__(self) -> None:
        super().__init__()
        self.found: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        name = str(func.overloadpacket)
        if name in HOST_READS:
            self.found[name] += 1
        elif name in INDEX_OPS and _has_mask(args[1] if len(args) > 1 else None):
            self.found[f"{name} (boolean mask)"] += 1
        return func(*args, **(kwargs or {}))


def _has_mask(indices: Any) -> bool:
    return isinstance(indices, list | tuple) and any(
        isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices
    )


def step_host_reads(model: Any, **settings: Any) -> dict[str, int]:
    """The host reads of one trainer step of ``model`` (after a first step: lazy
    initialisation, e.g. Adam's state, happens before recording too)."""
    features, labels = learnable_batch(model.feature_map)
    batch = Batch(features, labels)
    trainer = Trainer(model, TrainConfig(progress=False, **settings))
    trainer.model.train()
    trainer.train_step(batch)
    with HostReads() as reads:
        trainer.train_step(batch)
    return dict(reads.found)


def test_the_detector_sees_host_reads() -> None:
    with HostReads() as reads:
        x = torch.arange(6.0)
        x[x > 2].sum().item()
        torch.unique(torch.tensor([1, 1, 2]))
    assert set(reads.found) == {
        "aten.index (boolean mask)",
        "aten._local_scalar_dense",
        "aten._unique2",
        "aten.lift_fresh",
    }


@pytest.mark.parametrize("name", sorted(set(MODELS) - NOT_RECORDABLE))
def test_training_step_reads_nothing_back_from_the_device(name: str) -> None:
    model = model_for(name)
    assert model.cuda_graph_blocker() is None
    assert step_host_reads(model) == {}


@pytest.mark.parametrize("name", sorted(NOT_RECORDABLE))
def test_the_known_exceptions_say_why_and_without_their_auxiliary_loss_are_recordable(
    name: str,
) -> None:
    """If one of them stops reading the device, it leaves NOT_RECORDABLE and docs/gpu.md."""
    model = model_for(name)
    assert "auxiliary loss" in (model.cuda_graph_blocker() or "")
    assert step_host_reads(model)
    plain = model_for(name, aux_loss_weight=0.0)
    assert plain.cuda_graph_blocker() is None
    assert step_host_reads(plain) == {}


def test_regularizers_and_clipping_keep_the_step_recordable() -> None:
    model = model_for("deepfm")
    reads = step_host_reads(model, embedding_regularizer=0.01, net_regularizer=0.01)
    assert reads == {}


def test_the_batch_scope_regularizer_reads_the_device_and_is_named() -> None:
    """Its distinct rows come from unique: cuda_graph_unsupported names it up front."""
    model = model_for("deepfm")
    reads = step_host_reads(model, embedding_regularizer=0.01, embedding_regularizer_scope="batch")
    assert reads.get("aten._unique2")
    reason = cuda_graph_unsupported(
        torch.device("cuda"), False, None, False, False, batch_regularizer=True
    )
    assert "embedding_regularizer_scope='batch'" in (reason or "")


# ----------------------------------------------------- replaying the recorded step ----
def _train(model: CTRModel, graphed: bool) -> tuple[list[float], Trainer]:
    """8 steps at batch 32 (the 7th a short batch of 20), eager or through StepGraph with
    the CUDA-graph stand-in; the losses and the trainer."""
    fmap = model.feature_map
    trainer = Trainer(model, TrainConfig(progress=False, batch_size=32, seed=0))
    if graphed:
        trainer._graph = StepGraph(
            trainer._step, trainer.optimizer, OpReplay(trainer_state(trainer))
        )
    trainer.model.train()
    torch.manual_seed(1)
    losses = []
    for step in range(8):
        features = random_features(fmap, 20 if step == 6 else 32, seed=step)
        click = (features["user"] % 2 == 0).float()
        labels = click[:, None]
        if len(fmap.labels) == 2:
            labels = torch.stack([click, click * (features["item"] % 2 == 0).float()], dim=1)
        losses.append(float(trainer.train_step(Batch(features, labels))))
    return losses, trainer


def assert_replay_is_eager(name: str, **params: Any) -> Trainer:
    eager_losses, eager = _train(model_for(name, **params), graphed=False)
    losses, graphed = _train(model_for(name, **params), graphed=True)
    assert losses == eager_losses
    want, got = eager.model.state_dict(), graphed.model.state_dict()
    for key in want:
        assert torch.equal(want[key], got[key]), key
    return graphed


@pytest.mark.parametrize("name", sorted(set(MODELS) - NOT_RECORDABLE))
def test_replaying_the_recorded_step_trains_like_the_eager_step(name: str) -> None:
    """3 warm-up steps, one recording, replays (and the short batch eagerly): the same
    losses and weights as eager training, bit for bit (dropout included: the replay draws
    from the generator in the eager step's order)."""
    graphed = assert_replay_is_eager(name)
    step = graphed.step_graph
    assert step is not None and step.failure is None
    assert step.counts == {"replayed": 4, "warm": 3, "eager": 1, "recorded": 1}


def test_a_model_that_cannot_be_recorded_trains_eagerly_after_the_failed_recording() -> None:
    graphed = assert_replay_is_eager("dien")
    step = graphed.step_graph
    assert step is not None and "capturing" in (step.failure or "")
    assert step.counts["replayed"] == 0


class _CountsCalls(torch.nn.Module):
    """Scales its input by how often it ran: state a CUDA graph replay never updates."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x * (1.0 + 0.1 * self.calls)


def test_the_stand_in_replays_no_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check is not vacuous: a model whose step depends on Python state trains
    differently when replayed, as it would on CUDA."""
    model = model_for("lr")
    counter = _CountsCalls()
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda features: counter(forward(features)))
    eager_model = model_for("lr")
    eager_counter = _CountsCalls()
    eager_forward = eager_model.forward
    monkeypatch.setattr(
        eager_model, "forward", lambda features: eager_counter(eager_forward(features))
    )
    eager_losses, _ = _train(eager_model, graphed=False)
    losses, graphed = _train(model, graphed=True)
    assert graphed.step_graph is not None and graphed.step_graph.counts["replayed"] == 4
    assert losses[:4] == eager_losses[:4] and losses != eager_losses
    assert counter.calls == 5 and eager_counter.calls == 8  # warm-up 3, recording, short batch
