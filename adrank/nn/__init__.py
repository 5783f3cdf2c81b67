"""Shared layers: embeddings, MLP blocks, interactions, attention, gating, experts, task
towers and behaviour-sequence layers. No training logic."""

from adrank.nn.augru import (
    AUGRU,
    InterestExtractor,
    interest_auxiliary_loss,
    sample_negative_positions,
)
from adrank.nn.behavior_transformer import BehaviorTransformer
from adrank.nn.dropout import Dropout
from adrank.nn.embedding import FeatureEmbedding, History, SequenceEmbedding
from adrank.nn.experts import CGCLayer, ExpertBank, SoftmaxGate
from adrank.nn.mlp import MLPBlock, activation
from adrank.nn.pooling import masked_softmax, pool_sequence, select_top_k
from adrank.nn.qin import AdaptiveSparseTargetAttention, QuadraticLayer, QuadraticNetwork
from adrank.nn.simhash import ETA, SDIM, SimHash
from adrank.nn.target_attention import Dice, DINAttention, MultiHeadTargetAttention
from adrank.nn.towers import TaskTowers
from adrank.nn.twin import TWINAttention

__all__ = [
    "AUGRU",
    "ETA",
    "SDIM",
    "AdaptiveSparseTargetAttention",
    "BehaviorTransformer",
    "CGCLayer",
    "DINAttention",
    "Dice",
    "Dropout",
    "ExpertBank",
    "FeatureEmbedding",
    "History",
    "InterestExtractor",
    "MLPBlock",
    "MultiHeadTargetAttention",
    "QuadraticLayer",
    "QuadraticNetwork",
    "SequenceEmbedding",
    "SimHash",
    "SoftmaxGate",
    "TWINAttention",
    "TaskTowers",
    "activation",
    "interest_auxiliary_loss",
    "masked_softmax",
    "pool_sequence",
    "sample_negative_positions",
    "select_top_k",
]
