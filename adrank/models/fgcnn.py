"""FGCNN (Liu et al., "Feature Generation by Convolutional Neural Network for Click-Through
Rate Prediction", WWW 2019): a CNN over the field embeddings generates new features; the
original plus generated features and all their pairwise inner products (IPNN) feed a DNN."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from adrank.data.feature_map import FeatureMap
from adrank.models.base import CTRModel
from adrank.models.registry import register
from adrank.nn.embedding import FeatureEmbedding
from adrank.nn.gating import FeatureGenerationCNN
from adrank.nn.interaction import InnerProductInteraction
from adrank.nn.mlp import MLPBlock


@register("fgcnn")
class FGCNN(CTRModel):
    """logit = MLP([flatten(E'), <E'_i, E'_j>_{i<j}]), E' = [E, CNN(E_fg)]: (B, F + N, D).

    ``E_fg`` is a second embedding of the same fields unless ``share_embedding``. No BARS
    Frappe entry exists; the defaults are FuxiCTR's FGCNN config with the DNN scaled down
    from [4096, 2048, 1024, 512] to [400, 400, 400] for Frappe-sized data.
    Shapes: features -> (B,).
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int = 10,
        share_embedding: bool = False,
        channels: Sequence[int] = (14, 16, 18, 20),
        kernel_heights: Sequence[int] = (7, 7, 7, 7),
        pooling_sizes: Sequence[int] = (2, 2, 2, 2),
        recombined_channels: Sequence[int] = (3, 3, 3, 3),
        conv_activation: str = "tanh",
        conv_batch_norm: bool = True,
        dnn_hidden_units: Sequence[int] = (400, 400, 400),
        dnn_activations: str = "relu",
        dnn_batch_norm: bool = False,
        net_dropout: float = 0.0,
    ) -> None:
        super().__init__(feature_map)
        num_fields = feature_map.num_fields
        self.embedding = FeatureEmbedding(feature_map, embedding_dim)
        self.generation_embedding = (
            None if share_embedding else FeatureEmbedding(feature_map, embedding_dim)
        )
        self.generator = FeatureGenerationCNN(
            num_fields,
            embedding_dim,
            channels,
            kernel_heights,
            pooling_sizes,
            recombined_channels,
            conv_activation,
            conv_batch_norm,
        )
        total_fields = num_fields + self.generator.num_new_fields
        self.inner_product = InnerProductInteraction(total_fields)
        self.dnn = MLPBlock(
            total_fields * embedding_dim + self.inner_product.num_pairs,
            dnn_hidden_units,
            dnn_activations,
            dropout=net_dropout,
            batch_norm=dnn_batch_norm,
            output_dim=1,
        )

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embedding(features)  # (B, F, D)
        source = emb if self.generation_embedding is None else self.generation_embedding(features)
        combined = torch.cat([emb, self.generator(source)], dim=1)  # (B, F + N, D)
        dnn_in = torch.cat([combined.flatten(1), self.inner_product(combined)], dim=1)
        return self.dnn(dnn_in).squeeze(-1)
