"""Layers for multi-domain models: the domain input with its trained fallback slot,
star-topology linear layers, partitioned normalisation and gate neural units.

**How a model receives the domain.** A schema declares the ``domain`` role on a column that
is *also* a categorical feature (``roles: {domain: homework}`` and a feature ``homework``).
The model finds that feature with :func:`domain_field` and reads its ids from the
``features`` dict like any other field, so the trainer, the predictor, ``/v1/rank`` and
TorchScript/ONNX export need nothing new. The role itself (``__domain__`` in processed data)
drives per-domain metrics (``slice_metrics(..., by="domain")``).

**Unknown-domain fallback.** Ids are ``0`` padding, ``1`` OOV, ``2..`` the domains seen in
training. A request whose domain is missing or was never seen in training gets the OOV id,
so the OOV slot is the fallback. :class:`DomainInput` trains it by *domain dropout*: in
training mode each row's id is replaced by OOV with probability ``domain_dropout``, so the
fallback slot sees a random sample of every domain (a pooled model inside the multi-domain
one). With ``domain_dropout = 0`` the slot never trains and an unknown domain gets an
untrained path.

Shapes: B batch, D width, K domain slots (the domain field's vocabulary size).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from adrank.data.feature_map import FeatureMap
from adrank.data.schema import OOV_ID
from adrank.nn.dropout import Dropout
from adrank.nn.mlp import check_widths


def domain_field(feature_map: FeatureMap) -> str:
    """The categorical field that carries the ``domain`` role's column.

    Raises ValueError naming the role column when the feature map has no domain role, or
    when that column is not a categorical feature."""
    role = feature_map.roles.get("domain")
    if role is None:
        raise ValueError(
            "multi-domain models need a 'domain' role in the schema (roles: {domain: <column>}) "
            "with that column also declared as a categorical feature"
        )
    for f in feature_map.fields:
        if f.name == role.source and f.kind == "categorical":
            return f.name
    raise ValueError(
        f"the domain role's column {role.source!r} must also be a categorical feature of the "
        f"schema (multi-domain models read the domain ids from it); categorical features: "
        f"{[f.name for f in feature_map.of_kind('categorical')]}"
    )


class DomainInput(nn.Module):
    """Domain ids (B,) in ``[1, K)`` from the domain field, with domain dropout in training.

    ``forward`` returns the features with the domain field replaced by those ids, and the
    ids: a dropped row then looks unknown everywhere (its domain embedding too), as an
    unknown domain does at serving, so every part of the fallback path is trained.

    Args:
        feature_map: must declare a domain role on a categorical feature.
        domain_dropout: probability that a training row's id becomes the OOV (fallback) id.
    """

    def __init__(self, feature_map: FeatureMap, domain_dropout: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= domain_dropout < 1.0:
            raise ValueError(f"domain_dropout must be in [0, 1), got {domain_dropout}")
        self.field = domain_field(feature_map)
        self.num_slots = max(feature_map.field(self.field).vocab_size, OOV_ID + 1)
        self.domain_dropout = domain_dropout

    def forward(
        self, features: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        ids = features[self.field].long().clamp(min=OOV_ID, max=self.num_slots - 1)
        if self.training and self.domain_dropout > 0:
            drop = torch.rand(ids.shape, device=ids.device) < self.domain_dropout
            ids = torch.where(drop, torch.full_like(ids, OOV_ID), ids)
        return {**features, self.field: ids}, ids


class StarLinear(nn.Module):
    """Star-topology linear layer (STAR, Sheng et al., CIKM 2021): slot ``k``'s weight is
    ``W_shared * W_k`` (elementwise) and its bias ``b_shared + b_k``.

    ``W_k`` starts at ones and ``b_k`` at zero, so every slot starts as the shared layer.
    Every slot's output is computed and the row's own is gathered (K is small).

    Shapes: x (B, D_in), slot (B,) int64 in ``[0, K)`` -> (B, D_out).
    """

    def __init__(self, input_dim: int, output_dim: int, num_slots: int) -> None:
        super().__init__()
        self.shared_weight = nn.Parameter(torch.empty(input_dim, output_dim))
        self.shared_bias = nn.Parameter(torch.zeros(output_dim))
        self.slot_weight = nn.Parameter(torch.ones(num_slots, input_dim, output_dim))
        self.slot_bias = nn.Parameter(torch.zeros(num_slots, output_dim))
        self.reset_custom_parameters()

    def reset_custom_parameters(self) -> None:
        nn.init.xavier_normal_(self.shared_weight)
        nn.init.zeros_(self.shared_bias)
        nn.init.ones_(self.slot_weight)
        nn.init.zeros_(self.slot_bias)

    def forward(self, x: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
        weight = self.shared_weight.unsqueeze(0) * self.slot_weight  # (K, D_in, D_out)
        every = torch.einsum("bi,kio->bko", x, weight)  # (B, K, D_out)
        index = slot.view(-1, 1, 1).expand(-1, 1, every.shape[-1])
        mine = every.gather(1, index).squeeze(1)  # (B, D_out)
        return mine + self.shared_bias + self.slot_bias[slot]


class StarMLP(nn.Module):
    """A stack of :class:`StarLinear` layers with activations, ending in one logit.

    Shapes: x (B, D_in), slot (B,) -> (B,).
    """

    def __init__(
        self, input_dim: int, hidden_units: list[int], num_slots: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        check_widths(hidden_units)
        widths = [input_dim, *hidden_units, 1]
        self.layers = nn.ModuleList(
            StarLinear(a, b, num_slots) for a, b in itertools.pairwise(widths)
        )
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x, slot)
            if i < last:
                x = self.dropout(torch.relu(x))
        return x.squeeze(-1)


class PartitionedNorm(nn.Module):
    """Partitioned normalisation (STAR): batch normalisation whose scale and shift are
    ``gamma * gamma_k`` and ``beta + beta_k`` for slot ``k``, and whose statistics are kept
    per slot. In training each row is normalised with its own slot's batch statistics (the
    paper's batches come from one domain; ours mix domains) and each slot's running
    statistics are updated from its rows; in evaluation each slot's running statistics
    are used.

    Shapes: x (B, D), slot (B,) -> (B, D).
    """

    def __init__(self, dim: int, num_slots: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum = momentum
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))
        self.slot_gamma = nn.Parameter(torch.ones(num_slots, dim))
        self.slot_beta = nn.Parameter(torch.zeros(num_slots, dim))
        self.register_buffer("running_mean", torch.zeros(num_slots, dim))
        self.register_buffer("running_var", torch.ones(num_slots, dim))

    def forward(self, x: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
        if self.training:
            num_slots = self.running_mean.shape[0]
            count = torch.zeros(num_slots, device=x.device, dtype=x.dtype)
            count = count.index_add(0, slot, torch.ones_like(slot, dtype=x.dtype))
            total = torch.zeros_like(self.running_mean, dtype=x.dtype).index_add(0, slot, x)
            mean = total / count.clamp(min=1).unsqueeze(1)  # (K, D)
            centred = x - mean[slot]
            squares = torch.zeros_like(total).index_add(0, slot, centred * centred)
            var = squares / count.clamp(min=1).unsqueeze(1)
            with torch.no_grad():
                seen = (count > 0).unsqueeze(1)
                m = self.momentum
                self.running_mean.copy_(
                    torch.where(seen, (1 - m) * self.running_mean + m * mean, self.running_mean)
                )
                self.running_var.copy_(
                    torch.where(seen, (1 - m) * self.running_var + m * var, self.running_var)
                )
            normed = centred / torch.sqrt(var[slot] + self.eps)
        else:
            normed = (x - self.running_mean[slot]) / torch.sqrt(self.running_var[slot] + self.eps)
        return normed * (self.gamma * self.slot_gamma[slot]) + self.beta + self.slot_beta[slot]


class GateNU(nn.Module):
    """Gate neural unit (PEPNet, Chang et al., KDD 2023):
    ``gamma * sigmoid(W2 relu(W1 x + b1) + b2)``, values in ``(0, gamma)``; with
    ``gamma = 2`` a zero pre-activation gives a gate of 1 (the input unchanged).

    Shapes: (B, D_in) -> (B, D_out).
    """

    def __init__(self, input_dim: int, output_dim: int, hidden_dim: int, gamma: float = 2.0):
        super().__init__()
        if hidden_dim < 1:
            raise ValueError(f"gate_hidden_dim must be >= 1, got {hidden_dim}")
        self.gamma = gamma
        self.hidden = nn.Linear(input_dim, hidden_dim)
        self.out = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * torch.sigmoid(self.out(torch.relu(self.hidden(x))))
