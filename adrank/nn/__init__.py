"""Shared layers: embeddings, MLP blocks, interactions, attention, gating. No training logic."""

from adrank.nn.dropout import Dropout
from adrank.nn.embedding import FeatureEmbedding
from adrank.nn.mlp import MLPBlock, activation

__all__ = ["Dropout", "FeatureEmbedding", "MLPBlock", "activation"]
