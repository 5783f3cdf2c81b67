"""Shared layers: embeddings, MLP blocks, interactions, attention, gating, experts and task
towers. No training logic."""

from adrank.nn.dropout import Dropout
from adrank.nn.embedding import FeatureEmbedding
from adrank.nn.experts import CGCLayer, ExpertBank, SoftmaxGate
from adrank.nn.mlp import MLPBlock, activation
from adrank.nn.towers import TaskTowers

__all__ = [
    "CGCLayer",
    "Dropout",
    "ExpertBank",
    "FeatureEmbedding",
    "MLPBlock",
    "SoftmaxGate",
    "TaskTowers",
    "activation",
]
