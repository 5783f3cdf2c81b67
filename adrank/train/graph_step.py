"""The whole training step as one CUDA graph (``TrainConfig.cuda_graph``).

A training step of a CTR model at a small batch is bound by the host, not the GPU: the
forward, the backward, gradient clipping and Adam launch hundreds of small kernels, and on
an H200 the launches took longer than the kernels (``benchmarks/results/gpu_session2``:
both adrank and a plain loop were host-bound at batch 8,192). :class:`StepGraph` records
the trainer's whole step once, for one batch shape, and replays it for every later batch of
that shape: per step, the host copies the batch into the graph's input buffers (one
multi-tensor copy) and launches the graph.

How a run goes:

* the first ``warmup`` full-size batches train as usual, on a side stream (what CUDA graph
  capture needs: lazy initialisations, ``torch.compile``'s compilation, the optimizer's
  state), through the same input buffers the graph will read;
* the next full-size batch is recorded (the gradients are set to ``None`` first, so the
  recorded backward writes them rather than adds to them) and replayed;
* a batch of another shape (the epoch's last, shorter one) trains eagerly on the recorded
  gradient buffers (zeroed in place), so the graph stays valid;
* when the learning rate changes (``LRDecayOnPlateau``; a float learning rate is recorded
  into the fused Adam kernel) or the optimizer's state is replaced (resuming from a
  checkpoint), the step is recorded again, after one more step on the side stream;
* if recording fails, one warning, and the run trains without graphs from there (the
  failed batch included: recording does not run the step).

The arithmetic is the eager step's, kernel for kernel; the random numbers of dropout come
from the same generator through CUDA's graph-safe offsets, so a run is not bit-identical
to an eager one with the same seed, only the same in distribution.

:class:`CudaGraphs` is the recording backend; the trainer passes it. Tests on a machine
without CUDA drive :class:`StepGraph` with stand-in backends: one that runs the step where
CUDA would replay it (``tests/train/test_graph_step.py``), and one with a CUDA graph's
semantics, replaying the recorded operations without the step's Python
(``tests/train/op_replay.py``, used for every model in ``test_recordable_steps.py``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch

from adrank.data.batches import Batch

__all__ = ["CudaGraphs", "GraphBackend", "StepGraph", "cuda_graph_unsupported"]

logger = logging.getLogger("adrank.train.trainer")  # the trainer's messages

#: ``step(batch, grads)``: one optimizer step on ``batch`` returning the detached loss;
#: ``grads`` says what happens to the gradients first: ``"none"`` (set to ``None``),
#: ``"zero"`` (zeroed in place) or ``"keep"`` (left as they are: ``None`` when recording)
StepFn = Callable[[Batch, str], torch.Tensor]


class Recorded(Protocol):
    """A recorded step: :meth:`replay` runs it again; ``output`` is its loss tensor."""

    output: torch.Tensor

    def replay(self) -> None: ...


class GraphBackend(Protocol):
    """How :class:`StepGraph` warms up and records a step (:class:`CudaGraphs` on CUDA)."""

    def warm(self) -> contextlib.AbstractContextManager[None]: ...

    def record(self, fn: Callable[[], torch.Tensor]) -> Recorded: ...


class _CudaRecorded:
    def __init__(self, graph: torch.cuda.CUDAGraph, output: torch.Tensor) -> None:
        self.graph, self.output = graph, output

    def replay(self) -> None:
        self.graph.replay()


class CudaGraphs:
    """Recording on ``device`` with ``torch.cuda.CUDAGraph``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._side: torch.cuda.Stream | None = None

    @contextlib.contextmanager
    def warm(self) -> Iterator[None]:
        """Run the body on a side stream, ordered after and before the current one."""
        with torch.cuda.device(self.device):
            current = torch.cuda.current_stream()
            if self._side is None:
                self._side = torch.cuda.Stream()
            self._side.wait_stream(current)
            with torch.cuda.stream(self._side):
                yield
            current.wait_stream(self._side)

    def record(self, fn: Callable[[], torch.Tensor]) -> Recorded:
        with torch.cuda.device(self.device):
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                output = fn()
        return _CudaRecorded(graph, output)


def cuda_graph_unsupported(
    device: torch.device,
    distributed: bool,
    strategy: str | None,
    sparse_embeddings: bool,
    grad_scaler: bool,
    *,
    batch_regularizer: bool = False,
    model_blocker: str | None = None,
) -> str | None:
    """Why the whole step cannot be one CUDA graph in this run (``None``: it can).

    ``model_blocker``: the model's own reason
    (:meth:`adrank.models.base.CTRModel.cuda_graph_blocker`)."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device, training is on {device}"
    if distributed:
        return "not in distributed runs (DDP's gradient buckets are outside the graph)"
    if strategy is not None:
        return f"not with {strategy} (its towers and teachers step outside the model)"
    if sparse_embeddings:
        return "not with sparse_embeddings (sparse gradients change size every step)"
    if grad_scaler:
        return "not with fp16 AMP (its gradient scaler reads the device every step); bf16 works"
    if batch_regularizer:
        return (
            "not with embedding_regularizer_scope='batch' (it finds the batch's distinct rows "
            "with unique, whose size the host must read); the 'table' scope works"
        )
    return model_blocker


def _copy_into(dst: list[torch.Tensor], src: list[torch.Tensor]) -> None:
    """``dst[i].copy_(src[i])`` for all i, as one multi-tensor kernel per dtype where torch
    has it."""
    try:
        torch._foreach_copy_(dst, src)
    except (RuntimeError, AttributeError):  # no foreach copy for these tensors
        for d, s in zip(dst, src, strict=True):
            d.copy_(s)


class StepGraph:
    """The trainer's step, recorded once per batch shape and replayed (module docstring).

    Args:
        step: the trainer's eager step (see :data:`StepFn`).
        optimizer: its optimizer (its learning rates are watched; gradients are reset
            through it).
        backend: :class:`CudaGraphs` for the trainer's device.
        warmup: eager steps before recording (CUDA's documentation asks for a few).
        asked: the user set ``cuda_graph=true`` (``false``: ``auto``), so most steps
            running without the recording is a warning rather than an info line.
    """

    def __init__(
        self,
        step: StepFn,
        optimizer: Any,
        backend: GraphBackend,
        warmup: int = 3,
        *,
        asked: bool = True,
    ) -> None:
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1, got {warmup}")
        self.step_fn, self.optimizer, self.backend, self.warmup = step, optimizer, backend, warmup
        self.asked = asked
        self._static: Batch | None = None
        self._static_tensors: list[torch.Tensor] = []
        self._shapes: tuple[torch.Size, ...] = ()
        self._recorded: Recorded | None = None
        self._lrs: tuple[float, ...] = ()
        self._warmed = 0
        #: why recording failed (``None``: it did not), e.g. for a benchmark's report
        self.failure: str | None = None
        #: steps replayed, warm-up steps, eager steps (other shapes, or after a failed
        #: recording), and recordings, so far
        self.counts = {"replayed": 0, "warm": 0, "eager": 0, "recorded": 0}

    @property
    def failed(self) -> bool:
        return self.failure is not None

    @property
    def recorded(self) -> bool:
        return self._recorded is not None

    def invalidate(self) -> None:
        """Forget the recording: after the optimizer's state tensors were replaced (e.g. by
        ``load_state_dict``). The next full-size batch trains on the side stream (anything
        compiled since, e.g. for the epoch's shorter batch, is compiled outside the
        recording) and the one after records again."""
        self._recorded = None
        self._warmed = min(self._warmed, self.warmup - 1)

    def report(self) -> None:
        """Log how the steps ran; warn (under ``auto``: an info line) when most of them
        could not replay the recording (batches whose shapes vary, e.g. sequences padded
        per batch)."""
        c = self.counts
        logger.info(
            "cuda_graph: %d step(s) replayed, %d warm-up, %d eager (other batch shapes), "
            "%d recording(s)",
            c["replayed"], c["warm"], c["eager"], c["recorded"],
        )  # fmt: skip
        if not self.failed and c["eager"] > c["replayed"]:
            logger.log(
                logging.WARNING if self.asked else logging.INFO,
                "cuda_graph: %d of %d steps ran without the recorded graph because their "
                "batches had other shapes than the recorded %s; CUDA graphs need batches of "
                "one shape (pad sequences to a fixed length)",
                c["eager"], sum(c.values()) - c["recorded"], list(self._shapes),
            )  # fmt: skip

    def _learning_rates(self) -> tuple[float, ...]:
        return tuple(float(g["lr"]) for g in self.optimizer.param_groups)

    def __call__(self, batch: Batch) -> torch.Tensor:
        tensors = batch.tensors()
        shapes = tuple(t.shape for t in tensors)
        if self._recorded is not None and self._learning_rates() != self._lrs:
            logger.debug("cuda_graph: the learning rate changed; recording the step again")
            self.invalidate()
        if self.failed or (self._static is not None and shapes != self._shapes):
            self.counts["eager"] += 1
            # on the recorded gradient buffers (zeroed in place) while a recording is live
            return self.step_fn(batch, "zero" if self._recorded is not None else "none")
        if self._static is None:
            self._static = batch.map(lambda t: t.detach().clone())
            self._static_tensors, self._shapes = self._static.tensors(), shapes
        _copy_into(self._static_tensors, tensors)
        if self._recorded is None:
            if self._warmed < self.warmup:
                self._warmed += 1
                self.counts["warm"] += 1
                with self.backend.warm():
                    return self.step_fn(self._static, "none")
            if not self._record(batch):
                self.counts["eager"] += 1
                return self.step_fn(batch, "none")
        assert self._recorded is not None
        self._recorded.replay()
        self.counts["replayed"] += 1
        return self._recorded.output

    def _record(self, batch: Batch) -> bool:
        """Record the step on the input buffers; ``False`` (and eager from now on) if that
        fails. Recording runs nothing, so the batch still has to be trained on."""
        assert self._static is not None
        static = self._static
        self.optimizer.zero_grad(set_to_none=True)  # the recorded backward writes them
        try:
            self._recorded = self.backend.record(lambda: self.step_fn(static, "keep"))
        except Exception as exc:  # any capture error: eager training is exact
            self._recorded = None
            self.failure = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
            self.optimizer.zero_grad(set_to_none=True)
            logger.warning(
                "cuda_graph: recording the training step as a CUDA graph failed (%s); "
                "training without CUDA graphs from here",
                self.failure,
            )
            return False
        self._lrs = self._learning_rates()
        self.counts["recorded"] += 1
        logger.info("cuda_graph: recorded the training step for batches of %d rows", len(batch))
        return True
