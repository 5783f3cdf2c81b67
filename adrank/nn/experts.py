"""Mixture-of-experts layers for multi-task models.

* ``ExpertBank``: E independent MLP experts over one input (MMoE, PLE).
* ``SoftmaxGate``: a per-sample softmax over experts, ``g(x) = softmax(W x) . S(x)`` (MMoE,
  Ma et al., KDD 2018; PLE, Tang et al., RecSys 2020).
* ``CGCLayer``: one Customized Gate Control extraction level of PLE: task-specific experts
  per task, shared experts, one gate per task over its own and the shared experts, and (in
  levels that feed another level) a shared gate over *all* experts of the level.

Notation: B batch, I input width, E experts, H expert output width, K tasks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from adrank.nn.mlp import MLPBlock


class ExpertBank(nn.Module):
    """``num_experts`` MLP experts of the same shape.

    Args:
        input_dim: I.
        num_experts: E >= 1.
        hidden_units: widths of each expert's layers (the last one is H); non-empty.
        hidden_activations / dropout / batch_norm: as in :class:`MLPBlock`.

    Shapes: (B, I) -> (B, E, H).
    """

    def __init__(
        self,
        input_dim: int,
        num_experts: int,
        hidden_units: Sequence[int],
        hidden_activations: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"an expert bank needs num_experts >= 1, got {num_experts}")
        if not hidden_units:
            raise ValueError("experts need at least one hidden layer (hidden_units is empty)")
        self.experts = nn.ModuleList(
            MLPBlock(input_dim, hidden_units, hidden_activations, dropout, batch_norm)
            for _ in range(num_experts)
        )
        self.num_experts = num_experts
        self.output_dim = int(hidden_units[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([expert(x) for expert in self.experts], dim=1)  # (B, E, H)


class SoftmaxGate(nn.Module):
    """A gating network: expert weights ``w = softmax(W x + b)`` (B, E) and their mixture
    ``sum_e w_e S_e`` of the expert outputs S (B, E, H).

    Shapes: ``weights``: (B, I) -> (B, E); ``forward(x, experts)``: (B, I), (B, E, H) -> (B, H).
    """

    def __init__(self, input_dim: int, num_experts: int) -> None:
        super().__init__()
        self.linear = nn.Linear(input_dim, num_experts)
        self.num_experts = num_experts

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear(x), dim=-1)

    def forward(self, x: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        w = self.weights(x)  # (B, E)
        return torch.bmm(w.unsqueeze(1), experts).squeeze(1)  # (B, 1, E) @ (B, E, H) -> (B, H)


class CGCLayer(nn.Module):
    """One PLE extraction level (Customized Gate Control).

    Task k's gate mixes its ``num_specific_experts`` experts and the ``num_shared_experts``
    shared ones (the selected matrix ``S^k = [E_k; E_s]``, paper Eq. 3). With
    ``shared_gate`` (every level but the last) a shared gate mixes **all** experts of the
    level, every task's and the shared ones, into the input of the next level's shared
    experts: "the selected matrix of the shared module ... consists of all shared experts
    and task-specific experts in this layer" (paper, Sec. 4.3).

    Task k's experts and gate read ``inputs[k]``; the shared experts and the shared gate read
    ``inputs[K]`` (at the first level all K + 1 inputs are the same embedding).

    Shapes: list of K + 1 tensors (B, I) -> list of K (+1 with ``shared_gate``) tensors (B, H).
    """

    def __init__(
        self,
        input_dim: int,
        num_tasks: int,
        num_specific_experts: int,
        num_shared_experts: int,
        hidden_units: Sequence[int],
        hidden_activations: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        shared_gate: bool = True,
    ) -> None:
        super().__init__()
        if num_tasks < 1:
            raise ValueError(f"CGCLayer needs num_tasks >= 1, got {num_tasks}")
        for name, value in [
            ("num_specific_experts", num_specific_experts),
            ("num_shared_experts", num_shared_experts),
        ]:
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")

        def bank(n: int) -> ExpertBank:
            return ExpertBank(input_dim, n, hidden_units, hidden_activations, dropout, batch_norm)

        self.num_tasks = num_tasks
        self.task_experts = nn.ModuleList(bank(num_specific_experts) for _ in range(num_tasks))
        self.shared_experts = bank(num_shared_experts)
        per_task = num_specific_experts + num_shared_experts
        self.task_gates = nn.ModuleList(SoftmaxGate(input_dim, per_task) for _ in range(num_tasks))
        total = num_tasks * num_specific_experts + num_shared_experts
        self.shared_gate = SoftmaxGate(input_dim, total) if shared_gate else None
        self.output_dim = self.shared_experts.output_dim

    def forward(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(inputs) != self.num_tasks + 1:
            raise ValueError(f"CGCLayer takes {self.num_tasks + 1} inputs, got {len(inputs)}")
        shared = self.shared_experts(inputs[-1])  # (B, Es, H)
        specific = [bank(x) for bank, x in zip(self.task_experts, inputs, strict=False)]
        outputs = [
            gate(x, torch.cat([own, shared], dim=1))  # (B, Ek + Es, H) -> (B, H)
            for gate, x, own in zip(self.task_gates, inputs, specific, strict=False)
        ]
        if self.shared_gate is not None:
            every = torch.cat([*specific, shared], dim=1)  # (B, K * Ek + Es, H)
            outputs.append(self.shared_gate(inputs[-1], every))
        return outputs
