"""How the trainer's step runs on its device: the model's training forward (compiled with
``torch.compile`` on one CUDA device, with an eager fallback for ``compile=auto``), the
``DistributedDataParallel`` wrapper, TF32 matmuls turned on for a run and restored, and the
checks of sparse embedding updates. Used by :class:`adrank.train.trainer.Trainer`."""

from __future__ import annotations

import itertools
import logging
import types
from typing import Any

import torch

from adrank.config import TrainConfig
from adrank.debias.position import registered_name
from adrank.models.base import CTRModel, ModelOutput

__all__ = [
    "Tf32",
    "capturing",
    "check_sparse_embeddings",
    "cudagraph_skips",
    "eager_fallback",
    "own_code",
    "training_forward",
    "watch_cudagraphs",
    "wrap_ddp",
]

logger = logging.getLogger("adrank.train.trainer")  # the trainer's messages, as before


class _TrainingForward(torch.nn.Module):
    """``model.training_outputs`` as a plain forward returning ``(logits, aux)``, so
    ``DistributedDataParallel`` sees every output tensor that the loss uses."""

    def __init__(self, model: CTRModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, features: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        outputs = self.model.training_outputs(features)
        return outputs.logits, outputs.aux


def wrap_ddp(model: CTRModel, device: torch.device) -> torch.nn.parallel.DistributedDataParallel:
    """DDP around the training forward (a collective: every rank must call it).

    ``static_graph``: our models run the same graph every step, so DDP learns from the first
    step which parameters (if any) the loss does not reach, without the per-step graph
    search of ``find_unused_parameters``. ``gradient_as_bucket_view`` keeps one copy of the
    gradients instead of two (they matter for large embedding tables).
    """
    return torch.nn.parallel.DistributedDataParallel(
        _TrainingForward(model),
        device_ids=[device] if device.type == "cuda" else None,
        broadcast_buffers=False,  # averaged per epoch by Trainer._sync_buffers instead
        static_graph=True,
        gradient_as_bucket_view=True,
    )


def training_forward(
    model: CTRModel,
    config: TrainConfig,
    device: torch.device,
    ddp: torch.nn.parallel.DistributedDataParallel | None,
    *,
    graphed: bool = False,
) -> Any:
    """``model.training_outputs``, compiled with ``torch.compile`` when ``config.compile``
    asks for it on a single CUDA device (``auto``: there, and with an eager fallback;
    elsewhere an explicit mode is ignored with a warning). ``graphed``: the whole step is
    recorded as a CUDA graph (``cuda_graph``), so ``reduce-overhead``'s own CUDA graphs
    would nest inside it: the forward compiles in ``default`` mode instead."""
    mode = config.resolved_compile_mode(device.type, ddp is not None)
    if graphed and mode == "reduce-overhead":
        logger.warning(
            "compile='reduce-overhead' with cuda_graph=True: the whole step is one CUDA "
            "graph, so the forward compiles in 'default' mode"
        )
        mode = "default"
    if mode is None:
        return model.training_outputs
    if device.type != "cuda" or ddp is not None:  # an explicit mode: say it is ignored
        where = "in distributed runs" if ddp is not None else f"on {device}"
        logger.warning(
            "compile=%r is ignored %s: it applies to one CUDA device", config.compile, where
        )
        return model.training_outputs

    def forward(features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        outputs = model.training_outputs(features)
        return outputs.logits, outputs.aux

    compiled = torch.compile(own_code(forward), mode=mode)
    if config.compile != "auto":
        call = lambda features: ModelOutput(*compiled(features))  # noqa: E731
        return watch_cudagraphs(call) if mode == "reduce-overhead" else call
    return eager_fallback(compiled, forward, registered_name(model))


_compiled_forwards = itertools.count()


def own_code(fn: Any) -> Any:
    """``fn`` with a code object of its own (a unique name, the same body and closure).

    torch.compile keeps compiled graphs, and its limit of 8 per function
    (``torch._dynamo.config.recompile_limit``), on the code object. Every trainer's
    forward closure shares one code object, so in a process that trains several models
    (``adrank benchmark``, a sweep) the ninth distinct model or setting would silently run
    eagerly. With its own code object each trainer compiles for itself."""
    code = fn.__code__.replace(co_name=f"{fn.__code__.co_name}_{next(_compiled_forwards)}")
    return types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)


def cudagraph_skips() -> int:
    """How many compiled graphs inductor has declined to record as CUDA graphs so far."""
    from torch._dynamo.utils import counters

    return int(counters["inductor"]["cudagraph_skips"])


def watch_cudagraphs(call: Any, after: int = 3) -> Any:
    """``call``, with one warning if inductor skipped CUDA graphs for any graph compiled in
    the first ``after`` calls (the forward compiles in call 1, its backward right after):
    ``compile=reduce-overhead`` then runs those graphs without CUDA graphs, i.e. like the
    default mode, and the user should know why it is not faster."""
    state = {"calls": 0, "base": 0}

    def watched(features: dict[str, torch.Tensor]) -> ModelOutput:
        n = state["calls"]
        if n == 0:
            state["base"] = cudagraph_skips()
        elif n == after and (skipped := cudagraph_skips() - state["base"]):
            logger.warning(
                "compile='reduce-overhead': inductor did not record CUDA graphs for %d "
                "compiled graph(s), which run without them; TORCH_LOGS=cudagraphs says why",
                skipped,
            )
        state["calls"] = n + 1
        return call(features)

    return watched


def capturing() -> bool:
    """Whether the current CUDA stream is recording a CUDA graph (``cuda_graph``)."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def eager_fallback(compiled: Any, eager: Any, name: str) -> Any:
    """``compiled`` until it raises, then ``eager`` for good (one warning): ``compile=auto``
    must never stop a training run that eager mode can do. Both return (logits, aux).

    An error while a CUDA graph is being recorded (``cuda_graph``) is the recording's, not
    the compiler's (an operation that CUDA cannot record; eager mode would fail the same
    way on the invalidated capture): it propagates to
    :class:`~adrank.train.graph_step.StepGraph`, which trains without graphs from there,
    and the forward stays compiled."""
    state = {"fn": compiled}

    def call(features: dict[str, torch.Tensor]) -> ModelOutput:
        if state["fn"] is compiled:
            try:
                return ModelOutput(*compiled(features))
            except Exception as exc:  # any compiler failure: eager is exact
                if capturing():
                    raise
                logger.warning(
                    "torch.compile failed on %s (%s: %s); training eagerly from here "
                    "(set train.compile=false to skip compiling)",
                    name, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "",
                )  # fmt: skip
                state["fn"] = eager
        return ModelOutput(*state["fn"](features))

    return call


class Tf32:
    """Turn TF32 matmuls on (when ``on``) until :meth:`restore` (torch's flags are global)."""

    def __init__(self, on: bool) -> None:
        self.saved = None
        if on:
            self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    def restore(self) -> None:
        if self.saved is not None:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved
            self.saved = None


def check_sparse_embeddings(config: TrainConfig, world_size: int, amp: bool) -> None:
    """``sparse_embeddings`` works with the batch-scope regularizer, one process, no AMP."""
    if config.embedding_regularizer > 0 and config.embedding_regularizer_scope == "table":
        raise ValueError(
            "sparse_embeddings needs embedding_regularizer_scope='batch' (the 'table' scope "
            "penalizes every row each step, which makes the gradient dense) or "
            "embedding_regularizer=0"
        )
    if world_size > 1:
        raise ValueError("sparse_embeddings is single-process only; DDP needs dense gradients")
    if amp:
        raise ValueError("sparse_embeddings does not support amp; set amp=false")
