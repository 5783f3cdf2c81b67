"""The model registry: models register by name; configs are validated against the typed
``__init__`` signature so a bad key fails early with the list of valid ones.

Every module in ``adrank.models`` is imported on first lookup, so adding a model is one file
with an ``@register("name")`` decorator.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any, TypeVar

from adrank.data.feature_map import FeatureMap
from adrank.models.base import CTRModel, initialize_weights

_REGISTRY: dict[str, type[CTRModel]] = {}
_LOADED = False
M = TypeVar("M", bound=type[CTRModel])


def register(name: str):
    """Class decorator: ``@register("deepfm")``. Names are case-insensitive."""

    def wrap(cls: M) -> M:
        key = name.lower()
        if key in _REGISTRY and _REGISTRY[key] is not cls:
            raise ValueError(f"model name {name!r} is already registered by {_REGISTRY[key]}")
        _REGISTRY[key] = cls
        cls.registry_name = key  # type: ignore[attr-defined]
        return cls

    return wrap


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    import adrank.models as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name not in {"base", "registry"}:
            importlib.import_module(f"adrank.models.{mod.name}")
    _LOADED = True


def available_models() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get_model_class(name: str) -> type[CTRModel]:
    _load_all()
    key = name.lower()
    if key not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key]


def model_params(name: str) -> dict[str, Any]:
    """Hyperparameter names and defaults of a model (``inspect.Parameter.empty`` if required)."""
    sig = inspect.signature(get_model_class(name).__init__)
    return {
        p.name: p.default
        for p in list(sig.parameters.values())[2:]
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def build_model(
    name: str, feature_map: FeatureMap, *, default_init: bool = True, **params: Any
) -> CTRModel:
    """Instantiate a registered model, rejecting unknown hyperparameters by name.

    With ``default_init`` the weights get :func:`initialize_weights` (FuxiCTR's scheme)."""
    cls = get_model_class(name)
    valid = model_params(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {unknown} for model {name!r}; valid: {sorted(valid)}"
        )
    model = cls(feature_map, **params)
    if default_init:
        initialize_weights(model)
    return model
