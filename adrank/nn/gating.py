"""Gating, bilinear and feature-generation layers.

* ``SqueezeExcitation`` and ``BilinearInteraction``: FiBiNET (Huang et al., RecSys 2019).
* ``InstanceGuidedMask`` and ``MaskBlock``: MaskNet (Wang et al., DLP-KDD 2021).
* ``FeatureSelectionGate`` and ``MultiHeadBilinearFusion``: FinalMLP (Mao et al., AAAI 2023).
* ``FieldGate``, ``FactorizedInteraction`` and ``FactorizedInteractionBlock``: FinalNet
  (Zhu et al., SIGIR 2023).
* ``FieldConvolution`` and ``FeatureGenerationCNN``: FGCNN (Liu et al., WWW 2019).

Notation: B batch, F fields, D embedding dim, P = F(F-1)/2 field pairs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from adrank.data.feature_map import FeatureMap
from adrank.nn.dropout import Dropout
from adrank.nn.embedding import FeatureEmbedding
from adrank.nn.interaction import pair_indices
from adrank.nn.mlp import MLPBlock, activation, check_widths

BilinearType = Literal["field_all", "field_each", "field_interaction"]
ResidualType = Literal["concat", "sum"]


class SqueezeExcitation(nn.Module):
    """SENET field re-weighting: ``A = act(W2 ReLU(W1 mean_D(E)))``, output ``E * A``.

    Args:
        num_fields: F.
        reduction_ratio: bottleneck width is ``max(1, int(F / reduction_ratio))``.
        excitation_activation: activation on the weights (``"relu"`` as in FiBiNET, or
            ``"sigmoid"``).

    Shapes: (B, F, D) -> (B, F, D); :meth:`field_weights` gives the (B, F, 1) weights.
    """

    def __init__(
        self, num_fields: int, reduction_ratio: float = 3.0, excitation_activation: str = "relu"
    ) -> None:
        super().__init__()
        if not reduction_ratio > 0:  # 0: ZeroDivisionError; < 0: silently a width of 1
            raise ValueError(f"reduction_ratio must be > 0, got {reduction_ratio}")
        reduced = max(1, int(num_fields / reduction_ratio))
        self.excitation = nn.Sequential(
            nn.Linear(num_fields, reduced, bias=False),
            nn.ReLU(),
            nn.Linear(reduced, num_fields, bias=False),
            activation(excitation_activation),
        )

    def field_weights(self, emb: torch.Tensor) -> torch.Tensor:
        """(B, F, D) -> (B, F, 1) per-field weights."""
        return self.excitation(emb.mean(dim=-1)).unsqueeze(-1)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return emb * self.field_weights(emb)


class BilinearInteraction(nn.Module):
    """FiBiNET bilinear interaction ``p_ij = (e_i W) * e_j`` for every pair i < j.

    ``bilinear_type`` picks the weights: ``field_all`` one (D, D) matrix shared by all pairs,
    ``field_each`` one per left field i, ``field_interaction`` one per pair (i, j).

    Shapes: (B, F, D) -> (B, P, D), pairs ordered as in
    :func:`adrank.nn.interaction.pair_indices`.
    """

    def __init__(
        self, num_fields: int, embedding_dim: int, bilinear_type: BilinearType = "field_interaction"
    ) -> None:
        super().__init__()
        rows, cols = pair_indices(num_fields)
        shapes = {
            "field_all": (embedding_dim, embedding_dim),
            "field_each": (num_fields, embedding_dim, embedding_dim),
            "field_interaction": (rows.numel(), embedding_dim, embedding_dim),
        }
        if bilinear_type not in shapes:
            raise ValueError(
                f"unknown bilinear_type {bilinear_type!r}; expected one of {sorted(shapes)}"
            )
        self.bilinear_type = bilinear_type
        self.weight = nn.Parameter(torch.empty(shapes[bilinear_type]))
        nn.init.xavier_normal_(self.weight)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        right = emb[:, self.cols]  # (B, P, D)
        if self.bilinear_type == "field_interaction":
            left = torch.einsum("bpi,pij->bpj", emb[:, self.rows], self.weight)  # (B, P, D)
            return left * right
        if self.bilinear_type == "field_all":
            hidden = emb @ self.weight  # (B, F, D)
        else:  # field_each
            hidden = torch.einsum("bfi,fij->bfj", emb, self.weight)  # (B, F, D)
        return hidden[:, self.rows] * right


class InstanceGuidedMask(nn.Module):
    """MaskNet instance-guided mask: ``Linear -> ReLU -> Linear`` from the flat embedding.

    The aggregation layer is ``int(output_dim * reduction_ratio)`` wide (MaskNet's "reduction
    ratio" widens it). Shapes: (B, input_dim) -> (B, output_dim).
    """

    def __init__(self, input_dim: int, output_dim: int, reduction_ratio: float = 1.0) -> None:
        super().__init__()
        if not reduction_ratio > 0:  # <= 0: silently a width of 1
            raise ValueError(f"reduction_ratio must be > 0, got {reduction_ratio}")
        aggregation_dim = max(1, int(output_dim * reduction_ratio))
        self.net = nn.Sequential(
            nn.Linear(input_dim, aggregation_dim),
            nn.ReLU(),
            nn.Linear(aggregation_dim, output_dim),
        )

    def forward(self, flat_emb: torch.Tensor) -> torch.Tensor:
        return self.net(flat_emb)


class MaskBlock(nn.Module):
    """MaskNet MaskBlock: ``dropout(act(LN(W (mask(V_emb) * V_hidden))))``.

    Args:
        input_dim: width of the flat embedding that drives the mask (F * D).
        hidden_dim: width of the masked input ``V_hidden``.
        output_dim: width of the block output.
        hidden_activation: activation name.
        reduction_ratio: see :class:`InstanceGuidedMask`.
        dropout: dropout after the activation.
        layer_norm: LayerNorm before the activation (MaskNet's default).

    Shapes: (B, input_dim), (B, hidden_dim) -> (B, output_dim).
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        hidden_activation: str = "relu",
        reduction_ratio: float = 1.0,
        dropout: float = 0.0,
        layer_norm: bool = True,
    ) -> None:
        super().__init__()
        self.mask = InstanceGuidedMask(input_dim, hidden_dim, reduction_ratio)
        layers: list[nn.Module] = [nn.Linear(hidden_dim, output_dim, bias=False)]
        if layer_norm:
            layers.append(nn.LayerNorm(output_dim))
        layers.append(activation(hidden_activation))
        if dropout > 0:
            layers.append(Dropout(dropout))
        self.hidden = nn.Sequential(*layers)
        self.output_dim = output_dim

    def forward(self, flat_emb: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        return self.hidden(self.mask(flat_emb) * hidden)


class FeatureSelectionGate(nn.Module):
    """FinalMLP feature selection: ``flat_emb * 2 * sigmoid(MLP(context))``.

    The context is the (own) embeddings of ``context_fields`` concatenated, or, when no
    context field is given, a learned vector of width D shared by all samples.

    Args:
        feature_map: the inputs (context fields are looked up here).
        embedding_dim: D, for the context embeddings / bias vector.
        output_dim: width of the gated input (F * D).
        context_fields: names of the context fields (may be empty).
        hidden_units: hidden layers of the gate MLP (ReLU).

    Shapes: features, (B, output_dim) -> (B, output_dim); :meth:`gates` -> (B, output_dim)
    with values in (0, 2).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int,
        output_dim: int,
        context_fields: Sequence[str] = (),
        hidden_units: Sequence[int] = (64,),
    ) -> None:
        super().__init__()
        missing = [n for n in context_fields if n not in feature_map.names]
        if missing:
            raise ValueError(
                f"feature-selection context fields {missing} are not in the feature map; "
                f"known fields: {feature_map.names}"
            )
        self.context_embedding = (
            FeatureEmbedding(feature_map, embedding_dim, fields=list(context_fields))
            if context_fields
            else None
        )
        self.context_bias = None if context_fields else nn.Parameter(torch.zeros(embedding_dim))
        context_dim = embedding_dim * max(1, len(context_fields))
        self.gate = MLPBlock(context_dim, hidden_units, "relu", output_dim=output_dim)

    def gates(self, features: dict[str, torch.Tensor], batch_size: int) -> torch.Tensor:
        """(B, output_dim) gate values in (0, 2)."""
        if self.context_embedding is not None:
            context = self.context_embedding(features).flatten(1)  # (B, Fc * D)
        else:
            context = self.context_bias.expand(batch_size, -1)  # (B, D)
        return 2.0 * torch.sigmoid(self.gate(context))

    def forward(self, features: dict[str, torch.Tensor], flat_emb: torch.Tensor) -> torch.Tensor:
        return flat_emb * self.gates(features, flat_emb.shape[0])


class MultiHeadBilinearFusion(nn.Module):
    """FinalMLP fusion of two streams: ``w_x x + w_y y + sum_h x_h^T W_h y_h``.

    ``x`` and ``y`` are split into ``num_heads`` chunks; each head has its own bilinear
    weight. Args: ``x_dim``, ``y_dim`` (each divisible by ``num_heads``), ``output_dim``.

    Shapes: (B, x_dim), (B, y_dim) -> (B, output_dim).
    """

    def __init__(self, x_dim: int, y_dim: int, output_dim: int = 1, num_heads: int = 1) -> None:
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {num_heads}")
        if x_dim % num_heads or y_dim % num_heads:
            raise ValueError(
                f"fusion input widths ({x_dim}, {y_dim}) must both be divisible by "
                f"num_heads={num_heads}"
            )
        self.num_heads = num_heads
        self.head_x_dim = x_dim // num_heads
        self.head_y_dim = y_dim // num_heads
        self.w_x = nn.Linear(x_dim, output_dim)
        self.w_y = nn.Linear(y_dim, output_dim)
        self.w_xy = nn.Parameter(
            torch.empty(num_heads, self.head_x_dim, output_dim, self.head_y_dim)
        )
        # Xavier-normal std of the equivalent (H * Dx * Dy, output_dim) matrix.
        fan = num_heads * self.head_x_dim * self.head_y_dim + output_dim
        nn.init.normal_(self.w_xy, std=math.sqrt(2.0 / fan))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        head_x = x.view(x.shape[0], self.num_heads, self.head_x_dim)  # (B, H, Dx)
        head_y = y.view(y.shape[0], self.num_heads, self.head_y_dim)  # (B, H, Dy)
        xy = torch.einsum("bhi,hioj,bhj->bo", head_x, self.w_xy, head_y)  # (B, O)
        return self.w_x(x) + self.w_y(y) + xy


class FieldGate(nn.Module):
    """FinalNet field gate: ``[E, E * G]`` with ``G = W E + b`` mixing fields per dimension.

    Initialised to ``W = 0, b = 1`` so the gates start at 1.
    Shapes: (B, F, D) -> (B, 2F, D); :meth:`gates` -> (B, F, D).
    """

    def __init__(self, num_fields: int) -> None:
        super().__init__()
        self.proj = nn.Linear(num_fields, num_fields)
        self.reset_custom_parameters()

    def reset_custom_parameters(self) -> None:
        """Gates start at 1 (re-applied after the model-wide default init)."""
        nn.init.zeros_(self.proj.weight)
        nn.init.ones_(self.proj.bias)

    def gates(self, emb: torch.Tensor) -> torch.Tensor:
        return self.proj(emb.transpose(1, 2)).transpose(1, 2)  # (B, F, D)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return torch.cat([emb, emb * self.gates(emb)], dim=1)


class FactorizedInteraction(nn.Module):
    """FinalNet factorized interaction: a linear layer whose output halves multiply.

    ``[h2, h1] = W x + b``; ``concat``: ``[h2, h1 * h2]`` (same parameter count as a
    Linear to ``output_dim``; needs an even ``output_dim``), ``sum``: ``h2 + h1 * h2``.
    Shapes: (B, input_dim) -> (B, output_dim).
    """

    def __init__(
        self, input_dim: int, output_dim: int, residual_type: ResidualType = "concat"
    ) -> None:
        super().__init__()
        if residual_type not in ("concat", "sum"):
            raise ValueError(f"residual_type must be 'concat' or 'sum', got {residual_type!r}")
        if residual_type == "concat" and output_dim % 2:
            raise ValueError(f"residual_type='concat' needs an even output_dim, got {output_dim}")
        self.residual_type = residual_type
        self.linear = nn.Linear(input_dim, output_dim * (2 if residual_type == "sum" else 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h2, h1 = self.linear(x).chunk(2, dim=-1)
        if self.residual_type == "concat":
            return torch.cat([h2, h1 * h2], dim=-1)
        return h2 + h1 * h2


class FactorizedInteractionBlock(nn.Module):
    """FinalNet block: (FactorizedInteraction -> [BatchNorm] -> activation -> dropout) x L.

    A drop-in for an MLP's hidden layers. Shapes: (B, input_dim) -> (B, hidden_units[-1]).
    """

    def __init__(
        self,
        input_dim: int,
        hidden_units: Sequence[int],
        hidden_activations: str | None = "relu",
        dropout: float = 0.0,
        batch_norm: bool = True,
        residual_type: ResidualType = "concat",
    ) -> None:
        super().__init__()
        if not hidden_units:
            raise ValueError("FactorizedInteractionBlock needs at least one hidden layer")
        check_widths(hidden_units)
        layers: list[nn.Module] = []
        width = input_dim
        for units in hidden_units:
            layers.append(FactorizedInteraction(width, units, residual_type))
            if batch_norm:
                layers.append(nn.BatchNorm1d(units))
            layers.append(activation(hidden_activations))
            if dropout > 0:
                layers.append(Dropout(dropout))
            width = units
        self.net = nn.Sequential(*layers)
        self.output_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FieldConvolution(nn.Module):
    """A ``(k, 1)`` convolution over the field axis with "same" padding, computed as one GEMM.

    Holds an ``nn.Conv2d(in_channels, out_channels, (k, 1))`` for its parameters (so state
    dicts and initialisation are a Conv2d's), but runs it as a banded (Toeplitz) matrix
    product on channels-last maps: input ``(N, F, C_in)`` -> ``(N, F, C_out)``, where ``N``
    folds the batch and the embedding columns together. On CPU this is several times faster
    than ``conv2d``'s forward + backward for CTR-sized inputs (F up to a few dozen fields),
    and gives the same result up to float rounding.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_height: int, height: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, (kernel_height, 1))
        self.height = height
        left = (kernel_height - 1) // 2  # PyTorch's padding="same" puts the extra pad last
        # tap[j, i]: which kernel row links input field j to output field i (valid: any)
        tap = torch.arange(height).view(-1, 1) - torch.arange(height).view(1, -1) + left
        valid = (tap >= 0) & (tap < kernel_height)
        self.register_buffer("tap", tap.clamp(0, kernel_height - 1), persistent=False)
        self.register_buffer("valid", valid.float(), persistent=False)

    def banded_weight(self) -> torch.Tensor:
        """The ``(F * C_in, F * C_out)`` matrix M with ``y[i, o] = sum_jc x[j, c] M[jc, io]``."""
        w = self.conv.weight[..., 0].permute(2, 1, 0)  # (k, C_in, C_out)
        band = w[self.tap] * self.valid[:, :, None, None]  # (F_in j, F_out i, C_in, C_out)
        c_in, c_out = w.shape[1:]
        return band.transpose(1, 2).reshape(self.height * c_in, self.height * c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.flatten(1) @ self.banded_weight()  # (N, F * C_out); shape-free for export
        return y.unflatten(1, (self.height, -1)) + self.conv.bias


class FeatureGenerationCNN(nn.Module):
    """FGCNN feature generation: convolution + pooling over fields, then recombination.

    Layer i: convolution over fields (kernel ``(k_i, 1)``, "same" height; see
    :class:`FieldConvolution`) -> [BatchNorm] -> activation -> max-pool ``(p_i, 1)`` (ceil
    mode, so the height becomes ``ceil(h / p_i)``), then a fully-connected recombination of
    the pooled map (flattened as channels x height x D) into ``h_i * r_i`` new D-dim features.

    Internally the maps are kept channels-last as ``(B * D, h, C)``: every embedding column
    is an independent 1-D signal over fields, so convolution is one GEMM, BatchNorm is
    ``BatchNorm1d`` over the rows of ``(B * D * h, C)`` (the same statistics as
    ``BatchNorm2d`` over ``(B, C, h, D)``) and pooling is a reshape + max.

    Shapes: (B, F, D) -> (B, num_new_fields, D), ``num_new_fields = sum_i h_i * r_i``.
    """

    def __init__(
        self,
        num_fields: int,
        embedding_dim: int,
        channels: Sequence[int] = (14, 16, 18, 20),
        kernel_heights: Sequence[int] = (7, 7, 7, 7),
        pooling_sizes: Sequence[int] = (2, 2, 2, 2),
        recombined_channels: Sequence[int] = (3, 3, 3, 3),
        conv_activation: str = "tanh",
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        lengths = {len(channels), len(kernel_heights), len(pooling_sizes), len(recombined_channels)}
        if len(lengths) != 1 or not channels:
            raise ValueError(
                "channels, kernel_heights, pooling_sizes and recombined_channels must be "
                f"non-empty and of equal length, got {list(channels)}, {list(kernel_heights)}, "
                f"{list(pooling_sizes)}, {list(recombined_channels)}"
            )
        for name, values in [
            ("channels", channels),
            ("kernel_heights", kernel_heights),
            ("pooling_sizes", pooling_sizes),
        ]:
            check_widths(values, name)  # 0 failed in forward (or divided by zero)
        self.embedding_dim = embedding_dim
        self.pooling_sizes = [int(p) for p in pooling_sizes]
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.activations = nn.ModuleList()
        self.recombine = nn.ModuleList()
        height, in_channels, self.num_new_fields = num_fields, 1, 0
        for out_c, k, p, r in zip(
            channels, kernel_heights, pooling_sizes, recombined_channels, strict=True
        ):
            self.convs.append(FieldConvolution(in_channels, out_c, k, height))
            self.norms.append(nn.BatchNorm1d(out_c) if batch_norm else nn.Identity())
            self.activations.append(activation(conv_activation))
            height = math.ceil(height / p)
            self.recombine.append(
                nn.Sequential(
                    nn.Linear(height * embedding_dim * out_c, height * embedding_dim * r),
                    activation(conv_activation),
                )
            )
            self.num_new_fields += height * r
            in_channels = out_c

    @staticmethod
    def _max_pool(x: torch.Tensor, size: int) -> torch.Tensor:
        """Ceil-mode max-pool over fields: (N, h, C) -> (N, ceil(h / size), C)."""
        if size == 1:
            return x
        pad = -x.shape[1] % size
        if pad:
            x = nn.functional.pad(x, (0, 0, 0, pad), value=float("-inf"))
        return x.unflatten(1, (-1, size)).amax(dim=2)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        dim = self.embedding_dim
        x = emb.transpose(1, 2).flatten(0, 1).unsqueeze(-1)  # (B*D, F, 1)
        new_features = []
        for conv, norm, act, pool, recombine in zip(
            self.convs,
            self.norms,
            self.activations,
            self.pooling_sizes,
            self.recombine,
            strict=True,
        ):
            x = conv(x)  # (B*D, h, C_i)
            x = norm(x.flatten(0, 1)).view_as(x)
            x = self._max_pool(act(x), pool)  # (B*D, h_i, C_i)
            # flatten as (C, h, D) per example, the layout of a (B, C, h, D) feature map
            flat = x.unflatten(0, (-1, dim)).permute(0, 3, 2, 1).flatten(1)
            new = recombine(flat)  # (B, h_i * r_i * D)
            new_features.append(new.unflatten(1, (-1, dim)))
        return torch.cat(new_features, dim=1)  # (B, num_new_fields, D)
