"""Model zoo: one file per model, each a pure ``nn.Module`` registered by name."""

from adrank.models.base import CTRModel, ModelOutput
from adrank.models.registry import (
    available_models,
    build_model,
    get_model_class,
    model_params,
    register,
)

__all__ = [
    "CTRModel",
    "ModelOutput",
    "available_models",
    "build_model",
    "get_model_class",
    "model_params",
    "register",
]
