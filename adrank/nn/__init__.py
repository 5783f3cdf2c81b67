"""Shared layers: embeddings, MLP blocks, interactions, attention, gating. No training logic."""

from adrank.nn.embedding import FeatureEmbedding
from adrank.nn.mlp import MLPBlock, activation

__all__ = ["FeatureEmbedding", "MLPBlock", "activation"]
