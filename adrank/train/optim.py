"""Optimizers and gradient clipping for the trainer.

* :func:`build_optimizer`: Adam over all parameters (by default the fused kernel where torch
  has one; ``TrainConfig.adam_implementation`` picks ``fused``, ``foreach`` or
  ``single_tensor``), or, with ``sparse_embeddings``, :class:`SparseDenseAdam`.
* :class:`SparseDenseAdam`: Adam for the dense parameters plus ``torch.optim.SparseAdam``
  ("lazy Adam") for the embedding tables, whose gradients are then sparse. A step touches
  only the embedding rows the batch used, instead of reading and writing every row of
  every table (four full-table passes per step for dense Adam). This is what keeps
  training fast when hashed vocabularies make the tables tens of millions of rows. With
  ``row_steps=True`` the tables get :class:`~adrank.train.row_adam.RowAdam` instead (one
  step count per row, for vocabularies that grow during training).
* :func:`clip_grad_norm`: ``torch.nn.utils.clip_grad_norm_`` that also accepts sparse
  gradients (torch's raises on them).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from adrank.train.row_adam import RowAdam

logger = logging.getLogger(__name__)

__all__ = ["SparseDenseAdam", "build_optimizer", "clip_grad_norm", "enable_sparse_embeddings"]


def _adam(
    params: list[nn.Parameter],
    lr: float,
    device: torch.device,
    implementation: str = "auto",
    capturable: bool = False,
) -> torch.optim.Adam:
    """Adam with the chosen kernel (``TrainConfig.adam_implementation``).

    ``auto``: the fused kernel where torch has one (a few % faster on CPU and CUDA), else the
    default; ``fused``: the fused kernel or a clear error; ``foreach``: one multi-tensor
    kernel per operation; ``single_tensor``: a loop over the parameters (slowest, for
    comparisons). ``capturable``: the step count stays on the device, so the step can be
    recorded in a CUDA graph (``TrainConfig.cuda_graph``).
    """
    if implementation == "auto":
        if device.type in ("cpu", "cuda"):
            try:
                return torch.optim.Adam(params, lr=lr, fused=True, capturable=capturable)
            except (RuntimeError, TypeError) as exc:  # e.g. dtypes the fused kernel lacks
                logger.debug("fused Adam unavailable (%s); using the default implementation", exc)
        return torch.optim.Adam(params, lr=lr, capturable=capturable)
    if implementation == "fused":
        try:
            return torch.optim.Adam(params, lr=lr, fused=True, capturable=capturable)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(
                f"adam_implementation='fused' is not available on {device} with these "
                f"parameters ({exc}); use 'auto' or 'foreach'"
            ) from exc
    if implementation in ("foreach", "single_tensor"):
        foreach = implementation == "foreach"
        return torch.optim.Adam(params, lr=lr, foreach=foreach, capturable=capturable)
    raise ValueError(
        f"adam_implementation must be 'auto', 'fused', 'foreach' or 'single_tensor', got "
        f"{implementation!r}"
    )


def enable_sparse_embeddings(model: nn.Module) -> list[nn.Parameter]:
    """Switch every ``nn.Embedding`` of ``model`` to sparse gradients; return their weights."""
    weights: list[nn.Parameter] = []
    for module in model.modules():
        if isinstance(module, nn.Embedding) and module.weight.requires_grad:
            module.sparse = True
            weights.append(module.weight)
    return weights


class SparseDenseAdam:
    """Adam for dense parameters, ``SparseAdam`` for parameters with sparse gradients.

    Exposes the parts of the ``torch.optim.Optimizer`` interface the trainer uses:
    ``param_groups`` (both optimizers' groups, so LR decay reaches both), ``zero_grad``,
    ``step``, ``state_dict`` and ``load_state_dict``.

    ``SparseAdam`` keeps Adam's moment estimates per row and updates a row only in steps
    where it has a gradient (lazy Adam): rows absent from a batch keep their moments and
    weights instead of decaying, the usual trade-off for large embedding tables.
    """

    def __init__(
        self,
        dense: list[nn.Parameter],
        sparse: list[nn.Parameter],
        lr: float,
        device: torch.device,
        implementation: str = "auto",
        row_steps: bool = False,
    ) -> None:
        if not sparse:
            raise ValueError("SparseDenseAdam needs at least one sparse parameter")
        self.dense = _adam(dense, lr, device, implementation) if dense else None
        self.sparse: torch.optim.Optimizer = (
            RowAdam(sparse, lr=lr) if row_steps else torch.optim.SparseAdam(sparse, lr=lr)
        )

    def _optimizers(self) -> list[torch.optim.Optimizer]:
        return [o for o in (self.dense, self.sparse) if o is not None]

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for o in self._optimizers() for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self._optimizers():
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self._optimizers():
            o.step()

    def state_dict(self) -> dict[str, Any]:
        return {
            "dense": None if self.dense is None else self.dense.state_dict(),
            "sparse": self.sparse.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"dense", "sparse"}:
            raise ValueError(
                "optimizer state is not from a sparse_embeddings run (expected 'dense' and "
                "'sparse' parts); resume with the sparse_embeddings setting it was saved with"
            )
        if self.dense is not None and state["dense"] is not None:
            self.dense.load_state_dict(state["dense"])
        self.sparse.load_state_dict(state["sparse"])


def build_optimizer(
    model: nn.Module,
    lr: float,
    device: torch.device,
    sparse_embeddings: bool = False,
    implementation: str = "auto",
    row_steps: bool = False,
    *,
    capturable: bool = False,
) -> torch.optim.Optimizer | SparseDenseAdam:
    """Adam over ``model``'s trainable parameters (``implementation``, ``capturable``: see
    :func:`_adam`); see the module docstring (``row_steps`` needs ``sparse_embeddings``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not sparse_embeddings:
        return _adam(params, lr, device, implementation, capturable)
    sparse = enable_sparse_embeddings(model)
    if not sparse:
        raise ValueError("sparse_embeddings=True but the model has no nn.Embedding tables")
    sparse_ids = {id(p) for p in sparse}
    dense = [p for p in params if id(p) not in sparse_ids]
    return SparseDenseAdam(dense, sparse, lr, device, implementation, row_steps)


def clip_grad_norm(params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale gradients in place so their global L2 norm is at most ``max_norm``.

    Same result as ``torch.nn.utils.clip_grad_norm_`` (bit for bit) for dense gradients;
    sparse (COO) gradients are coalesced first, so duplicate indices count once. Returns the
    total norm before clipping, as a tensor (no host sync).

    When every gradient is dense and they share one device and dtype (the usual case), the
    same four operations as torch's foreach path run directly: one ``_foreach_norm``, the
    norm of the stacked norms, the clamped coefficient and one ``_foreach_mul_``. torch's
    function regroups the tensors by device and dtype twice per call, and that Python work
    was about 0.4 ms of a 4 ms CPU step of a small DeepFM (host time is what bounds small
    batches on a GPU).
    """
    params = [p for p in params if p.grad is not None]
    grads: list[torch.Tensor] = [p.grad for p in params]  # type: ignore[misc]
    if not grads:
        return torch.zeros(())
    device, dtype = grads[0].device, grads[0].dtype
    if device.type in ("cpu", "cuda") and all(
        not g.is_sparse and g.device == device and g.dtype == dtype for g in grads
    ):
        with torch.no_grad():
            norms = torch._foreach_norm(grads, 2.0)
            total = torch.linalg.vector_norm(torch.stack(norms), 2.0)
            coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
            torch._foreach_mul_(grads, coef)
        return total
    if not any(g.is_sparse for g in grads):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    return _clip_with_sparse(params, max_norm)


def _clip_with_sparse(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    norms = []
    for p in params:
        if p.grad.is_sparse:  # type: ignore[union-attr]
            p.grad = p.grad.coalesce()  # type: ignore[union-attr]
            norms.append(torch.linalg.vector_norm(p.grad._values()))
        else:
            norms.append(torch.linalg.vector_norm(p.grad))
    total = torch.linalg.vector_norm(torch.stack(norms))
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for p in params:
        if p.grad.is_sparse:  # type: ignore[union-attr]
            p.grad._values().mul_(coef)  # type: ignore[union-attr]
        else:
            p.grad.mul_(coef)
    return total
