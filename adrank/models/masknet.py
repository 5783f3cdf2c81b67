"""MaskNet (Wang et al., "MaskNet: Introducing Feature-Wise Multiplication to CTR Ranking
Models by Instance-Guided Mask", DLP-KDD 2021): MaskBlocks multiply a hidden representation
by a mask computed from the whole embedding. ``serial`` stacks MaskBlocks; ``parallel`` runs
several MaskBlocks on the embedding side by side and feeds their concatenation to an MLP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from adrank.data.feature_map import FeatureMap
from adrank.models.base import CTRModel
from adrank.models.registry import register
from adrank.nn.embedding import FeatureEmbedding
from adrank.nn.gating import MaskBlock
from adrank.nn.mlp import MLPBlock, check_widths


@register("masknet")
class MaskNet(CTRModel):
    """Serial or parallel MaskNet over flat field embeddings. Shapes: features -> (B,).

    ``dnn_hidden_units`` are the MaskBlock widths (serial) or the MLP after the blocks
    (parallel). ``emb_layernorm`` layer-normalizes each field embedding before it is masked
    (the mask itself is always computed from the raw embeddings).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        model_type: Literal["serial", "parallel"] = "parallel",
        dnn_hidden_units: Sequence[int] = (400, 400, 400),
        dnn_hidden_activations: str = "relu",
        parallel_num_blocks: int = 3,
        parallel_block_dim: int = 50,
        reduction_ratio: float = 2.0,
        net_dropout: float = 0.1,
        net_layernorm: bool = True,
        emb_layernorm: bool = False,
    ) -> None:
        super().__init__(feature_map)
        if model_type not in ("serial", "parallel"):
            raise ValueError(f"model_type must be 'serial' or 'parallel', got {model_type!r}")
        if model_type == "parallel" and parallel_num_blocks < 1:
            raise ValueError(f"parallel_num_blocks must be >= 1, got {parallel_num_blocks}")
        check_widths(dnn_hidden_units, "dnn_hidden_units")
        if model_type == "parallel" and parallel_block_dim < 1:  # 0: a constant output
            raise ValueError(f"parallel_block_dim must be >= 1, got {parallel_block_dim}")
        self.model_type = model_type
        input_dim = feature_map.num_fields * embedding_dim
        self.embedding = FeatureEmbedding(feature_map, embedding_dim)
        # A separate LayerNorm(D) per field (own affine parameters), as in the paper.
        self.emb_norm = (
            nn.ModuleList(nn.LayerNorm(embedding_dim) for _ in range(feature_map.num_fields))
            if emb_layernorm
            else None
        )
        block = {
            "hidden_activation": dnn_hidden_activations,
            "reduction_ratio": reduction_ratio,
            "dropout": net_dropout,
            "layer_norm": net_layernorm,
        }
        if model_type == "serial":
            widths = [input_dim, *dnn_hidden_units]
            self.blocks = nn.ModuleList(
                MaskBlock(input_dim, widths[i], widths[i + 1], **block)
                for i in range(len(widths) - 1)
            )
            self.head = MLPBlock(widths[-1], output_dim=1)
        else:
            self.blocks = nn.ModuleList(
                MaskBlock(input_dim, input_dim, parallel_block_dim, **block)
                for _ in range(parallel_num_blocks)
            )
            self.head = MLPBlock(
                parallel_block_dim * parallel_num_blocks,
                dnn_hidden_units,
                dnn_hidden_activations,
                dropout=net_dropout,
                output_dim=1,
            )

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embedding(features)  # (B, F, D)
        hidden = emb
        if self.emb_norm is not None:
            hidden = torch.stack([norm(emb[:, i]) for i, norm in enumerate(self.emb_norm)], 1)
        flat_emb, flat_hidden = emb.flatten(1), hidden.flatten(1)  # (B, F * D)
        if self.model_type == "serial":
            out = flat_hidden
            for block in self.blocks:
                out = block(flat_emb, out)
        else:
            out = torch.cat([block(flat_emb, flat_hidden) for block in self.blocks], dim=-1)
        return self.head(out).squeeze(-1)
