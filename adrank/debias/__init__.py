"""Learning from position-biased logs: position-aware training strategies
(:mod:`adrank.debias.position`) and semi-synthetic position-biased logs
(:mod:`adrank.debias.synthetic`). See ``docs/debiasing.md``."""

from adrank.debias.position import (
    POSITION_FIELD,
    POSITION_METHODS,
    PositionDataError,
    PositionFeatureModel,
    PositionMethod,
    build_position_method,
    build_position_model,
)

__all__ = [
    "POSITION_FIELD",
    "POSITION_METHODS",
    "PositionDataError",
    "PositionFeatureModel",
    "PositionMethod",
    "build_position_method",
    "build_position_model",
]
