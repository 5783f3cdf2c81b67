"""Every registered model's training step can be recorded as a CUDA graph (issue 18).

``cuda_graph=True`` records the trainer's whole step, and CUDA refuses to record, or a GPU
run pays a host round trip per step for, any operation whose result the host must read or
whose output size depends on the data: ``item()``, ``nonzero``, ``unique``, a boolean mask
index, or a tensor built from host data inside the step (a host-to-device copy). On CPU
those operations are visible by name to a dispatch mode, so this test runs one trainer step
of every model (forward, the tasks' and the auxiliary losses, backward, clipping, Adam) and
names any it finds, before a GPU session would discover it as a failed recording.

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
from adrank.train import Trainer
from adrank.train.graph_step import cuda_graph_unsupported
from tests.models.test_models import MODELS, build, learnable_batch, model_feature_map

#: operations that read the device on the host, or size their output by the data
HOST_READS = frozenset(
    {
        "aten._local_scalar_dense",  # item(), float(t), bool(t), if t: ...
        "aten.nonzero",
        "aten._unique",
        "aten._unique2",
        "aten.unique_dim",
        "aten.unique_consecutive",
        "aten.masked_select",
        "aten.masked_scatter",
        "aten.equal",
        "aten.is_nonzero",
        "aten.bincount",
        "aten.histc",
        "aten.repeat_interleave",
        "aten.lift_fresh",  # torch.tensor(host data), or indexing with a Python list
    }
)
INDEX_OPS = frozenset({"aten.index", "aten.index_put", "aten.index_put_", "aten._index_put_impl_"})
#: models whose training step has a data-dependent part (module docstring)
NOT_RECORDABLE = {"dien", "dmin"}


def model_for(name: str, **params: Any) -> Any:
    fmap = model_feature_map(name, with_numeric=True)
    return build(name, fmap) if not params else build_model(name, fmap, **params)


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
