"""A CUDA graph's semantics on CPU, for tests: record a step's operations once, replay them.

A CUDA graph replays the kernels it recorded on the memory it recorded, and nothing else:
Python does not run again, so a step that keeps state in Python (a counter, a float read
from a tensor, a shape chosen per batch) replays the recording's values. The stand-in of
``test_graph_step.py`` re-runs the step's Python on replay and cannot see that; this one
cannot miss it:

* **record**: the step runs once under a dispatch mode that keeps every ATen operation
  (forward, the autograd engine's backward, clipping, the optimizer) with the tensors it
  read and wrote; an operation that reads the device on the host fails the recording, as
  it would fail CUDA's. Then everything the step changed is put back (parameters, buffers,
  the optimizer's state, the trainer's accumulators, the random generator): CUDA's
  recording runs nothing either.
* **replay**: the operations run again, in order, on the recorded tensors; each result is
  copied into the tensor the recording produced, so later operations (and the parameters'
  ``.grad``) read the new values. View operations are not re-run (their recorded views
  alias the memory they view), in-place ones are.

Dropout's masks come from the same generator in the same order as an eager step's, so a
replayed run is the eager run bit for bit, unless the step depends on Python state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

#: operations CUDA cannot record (the host reads their result, or their size is the data's)
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


def _is_view(func: Any) -> bool:
    """Every output aliases an input without writing it (``select``, ``view``, ...)."""
    returns = func._schema.returns
    return bool(returns) and all(
        r.alias_info is not None and not r.alias_info.is_write for r in returns
    )


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[Any, tuple, dict, Any]] = []

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if str(func.overloadpacket) in HOST_READS:
            raise RuntimeError(f"operation not permitted when stream is capturing: {func}")
        out = func(*args, **kwargs)
        if not _is_view(func):
            self.ops.append((func, args, kwargs, out))
        return out


class _Recording:
    def __init__(self, ops: list[tuple[Any, tuple, dict, Any]], output: torch.Tensor) -> None:
        self.ops, self.output = ops, output

    def replay(self) -> None:
        with torch.no_grad():
            for func, args, kwargs, recorded in self.ops:
                result = func(*args, **kwargs)
                _copy_results(recorded, result)


def _copy_results(recorded: Any, result: Any) -> None:
    """``recorded.copy_(result)``, through tuples and lists of tensors."""
    if isinstance(recorded, torch.Tensor):
        if isinstance(result, torch.Tensor) and recorded is not result:
            recorded.copy_(result)
    elif isinstance(recorded, list | tuple):
        for r, s in zip(recorded, result, strict=True):
            _copy_results(r, s)


class OpReplay:
    """:class:`adrank.train.graph_step.GraphBackend` with a CUDA graph's semantics on CPU.

    ``state`` returns every tensor the step may change (see :func:`trainer_state`); they
    are restored after recording, with the default generator's state.
    """

    def __init__(self, state: Callable[[], list[torch.Tensor]]) -> None:
        self.state = state
        self.warm_calls = 0
        self.recordings = 0

    def warm(self) -> contextlib.AbstractContextManager[None]:
        self.warm_calls += 1
        return contextlib.nullcontext()

    def record(self, fn: Callable[[], torch.Tensor]) -> _Recording:
        before = [(t, t.detach().clone()) for t in self.state()]
        rng = torch.get_rng_state()
        recorder = _Recorder()
        try:
            with recorder:
                output = fn()
        finally:
            torch.set_rng_state(rng)
            with torch.no_grad():
                for tensor, saved in before:
                    tensor.copy_(saved)
        self.recordings += 1
        return _Recording(recorder.ops, output)


def trainer_state(trainer: Any) -> Callable[[], list[torch.Tensor]]:
    """What a trainer's step changes: parameters, buffers, the optimizer's state tensors,
    the running loss and the last gradient norm."""

    def state() -> list[torch.Tensor]:
        tensors = [p.data for p in trainer.model.parameters()]
        tensors += [b for b in trainer.model.buffers()]
        for per_param in trainer.optimizer.state.values():
            tensors += [v for v in per_param.values() if isinstance(v, torch.Tensor)]
        tensors.append(trainer._loss_sum)
        if trainer.last_grad_norm is not None:
            tensors.append(trainer.last_grad_norm)
        return tensors

    return state
