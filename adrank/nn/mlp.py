"""Multi-layer perceptron block and activation lookup."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from adrank.nn.dropout import Dropout

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "prelu": nn.PReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


def activation(name: str | None) -> nn.Module:
    """An activation module by (case-insensitive) name, e.g. ``"relu"``, ``"ReLU"``."""
    if name is None:
        return nn.Identity()
    key = name.lower()
    if key not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[key]()


def check_widths(hidden_units: Sequence[int], name: str = "hidden_units") -> None:
    """ValueError unless every layer width is >= 1 (a 0-wide layer makes the output a
    constant, or fails in the middle of a forward pass)."""
    if any(u < 1 for u in hidden_units):
        raise ValueError(f"every width in {name} must be >= 1, got {list(hidden_units)}")


class MLPBlock(nn.Module):
    """Linear -> [BatchNorm|LayerNorm] -> activation -> dropout, repeated, then an optional
    output projection.

    Args:
        input_dim: width of the input (B, input_dim).
        hidden_units: widths of the hidden layers (may be empty).
        hidden_activations: activation name, or one per layer.
        dropout: dropout rate after each hidden layer.
        batch_norm / layer_norm: normalization after each hidden linear layer.
        output_dim: if set, a final linear layer to this width (no activation).
        output_bias: bias on the final layer.

    Shapes: (B, input_dim) -> (B, output_dim or last hidden width or input_dim).
    """

    def __init__(
        self,
        input_dim: int,
        hidden_units: Sequence[int] = (),
        hidden_activations: str | Sequence[str] = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        layer_norm: bool = False,
        output_dim: int | None = None,
        output_bias: bool = True,
    ) -> None:
        super().__init__()
        units = list(hidden_units or [])
        check_widths(units)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        acts = (
            [hidden_activations] * len(units)
            if isinstance(hidden_activations, str)
            else list(hidden_activations)
        )
        if len(acts) != len(units):
            raise ValueError(f"{len(acts)} activations given for {len(units)} hidden layers")
        layers: list[nn.Module] = []
        width = input_dim
        for u, act in zip(units, acts, strict=True):
            layers.append(nn.Linear(width, u))
            if batch_norm:
                layers.append(nn.BatchNorm1d(u))
            elif layer_norm:
                layers.append(nn.LayerNorm(u))
            layers.append(activation(act))
            if dropout > 0:
                layers.append(Dropout(dropout))
            width = u
        if output_dim is not None:
            layers.append(nn.Linear(width, output_dim, bias=output_bias))
            width = output_dim
        self.net = nn.Sequential(*layers)
        self.output_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
