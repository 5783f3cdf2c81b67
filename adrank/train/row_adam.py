"""Adam with a step count per embedding row (:class:`RowAdam`).

``torch.optim.Adam`` and ``torch.optim.SparseAdam`` keep one step count per parameter. For
an embedding table that grows (new ids get rows while training goes on, see
:mod:`adrank.stream.vocab`) that count is wrong for the rows added later: a row admitted at
step 10,000 would be bias-corrected as if it had 10,000 steps of moment estimates behind
it, so its first update is ``(1 - beta1) / sqrt(1 - beta2)`` ≈ 3.2 times the learning rate
instead of the learning rate. :class:`RowAdam` keeps ``step`` as a tensor (N,) per table,
one count per row, and bias-corrects every row with its own count.

With a sparse gradient (``nn.Embedding(sparse=True)``) only the rows in the gradient move
and count a step ("lazy Adam", like ``SparseAdam``); with a dense gradient every row does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

__all__ = ["RowAdam", "row_state_from_adam"]


class RowAdam(torch.optim.Optimizer):
    """Adam for 2-D parameters (embedding tables) with per-row step counts.

    State per parameter (N, D): ``exp_avg`` (N, D), ``exp_avg_sq`` (N, D), ``step`` (N,)
    float32. A row with gradient ``g`` at its ``s``-th step (torch.optim.Adam's formula,
    per row)::

        m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
        w -= lr / (1 - beta1^s) * m / (sqrt(v) / sqrt(1 - beta2^s) + eps)

    so a row's first step is ``lr * g / (|g| + eps)`` whenever it was added.
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        if lr <= 0 or eps <= 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(
                f"RowAdam needs lr > 0, eps > 0, 0 <= betas < 1; got {lr}, {eps}, {betas}"
            )
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2:
                    raise ValueError(
                        f"RowAdam takes 2-D tables (rows, dim); got a parameter of shape "
                        f"{tuple(p.shape)}: give it to a dense optimizer instead"
                    )

    def _state(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        state = self.state[p]
        if not state:
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] = torch.zeros(p.shape[0], dtype=torch.float32, device=p.device)
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self._state(p)
                grad = p.grad
                if grad.is_sparse:
                    grad = grad.coalesce()
                    rows, g = grad.indices()[0], grad.values()
                else:
                    rows, g = None, grad
                m_all, v_all, s_all = state["exp_avg"], state["exp_avg_sq"], state["step"]
                m = m_all if rows is None else m_all.index_select(0, rows)
                v = v_all if rows is None else v_all.index_select(0, rows)
                s = (s_all if rows is None else s_all.index_select(0, rows)) + 1
                m = m.mul(beta1).add_(g, alpha=1 - beta1)
                v = v.mul(beta2).addcmul_(g, g, value=1 - beta2)
                bias1 = 1 - torch.pow(beta1, s)  # (rows,)
                bias2 = 1 - torch.pow(beta2, s)
                denom = (v.sqrt() / bias2.sqrt().unsqueeze(1)).add_(eps)
                update = m / denom * (lr / bias1).unsqueeze(1)
                if rows is None:
                    m_all.copy_(m)
                    v_all.copy_(v)
                    s_all.copy_(s)
                    p.sub_(update)
                else:
                    m_all.index_copy_(0, rows, m)
                    v_all.index_copy_(0, rows, v)
                    s_all.index_copy_(0, rows, s)
                    p.index_add_(0, rows, update, alpha=-1.0)
        return loss

    @torch.no_grad()
    def reset_rows(self, p: torch.Tensor, rows: torch.Tensor) -> None:
        """Forget the moments and the step count of ``rows`` of ``p`` (a re-used or newly
        admitted row starts like a new parameter)."""
        if p not in self.state or not self.state[p]:
            return
        state = self.state[p]
        state["exp_avg"][rows] = 0
        state["exp_avg_sq"][rows] = 0
        state["step"][rows] = 0


def row_state_from_adam(state: dict[str, Any], rows: int) -> dict[str, torch.Tensor]:
    """Turn ``torch.optim.Adam``/``SparseAdam`` state of an (N, D) table (one scalar step)
    into :class:`RowAdam` state: every row had that many steps."""
    step = state["step"]
    step = float(step.item() if isinstance(step, torch.Tensor) else step)
    exp_avg = state["exp_avg"]
    if exp_avg.is_sparse:  # never, for Adam; kept for safety with SparseAdam's dense state
        exp_avg = exp_avg.to_dense()
    return {
        "exp_avg": exp_avg.clone(),
        "exp_avg_sq": state["exp_avg_sq"].clone(),
        "step": torch.full((rows,), step, dtype=torch.float32, device=exp_avg.device),
    }
